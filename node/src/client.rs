//! A small blocking client of the REST API, for the CLI.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// A bearer token, given or obtained from the API key on first use.
    token: std::cell::RefCell<Option<String>>,
    api_key: Option<String>,
}

impl Client {
    /// A client that sends `token`, or trades `api_key` for one when it needs it.
    pub fn with_credentials(url: &str, token: Option<String>, api_key: Option<String>) -> Client {
        Client::with_agent(
            url,
            token,
            api_key,
            ureq::AgentBuilder::new().timeout(Duration::from_secs(330)),
        )
    }

    /// Like [`Client::with_credentials`], trusting the CA in `ca_file` (PEM) for https URLs
    /// (instead of the public web roots).
    pub fn with_ca(
        url: &str,
        token: Option<String>,
        api_key: Option<String>,
        ca_file: &std::path::Path,
    ) -> anyhow::Result<Client> {
        let tls = tls_trusting(ca_file)?;
        Ok(Client::with_agent(
            url,
            token,
            api_key,
            ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(330))
                .tls_config(std::sync::Arc::new(tls)),
        ))
    }

    fn with_agent(
        url: &str,
        token: Option<String>,
        api_key: Option<String>,
        agent: ureq::AgentBuilder,
    ) -> Client {
        Client {
            base: url.trim_end_matches('/').to_string(),
            agent: agent.build(),
            token: std::cell::RefCell::new(token.filter(|t| !t.is_empty())),
            api_key: api_key.filter(|k| !k.is_empty()),
        }
    }

    /// The request with the Authorization header, when there are credentials.
    fn authed(&self, r: ureq::Request) -> anyhow::Result<ureq::Request> {
        if self.token.borrow().is_none() {
            if let Some(key) = &self.api_key {
                let v = self.answer(
                    self.agent
                        .post(&format!("{}/v1/auth/token", self.base))
                        .send_json(serde_json::json!({ "api_key": key })),
                    "POST /v1/auth/token",
                )?;
                let t = v["token"]
                    .as_str()
                    .context("no token in the answer to POST /v1/auth/token")?;
                *self.token.borrow_mut() = Some(t.to_string());
            }
        }
        Ok(match self.token.borrow().as_deref() {
            Some(t) => r.set("Authorization", &format!("Bearer {t}")),
            None => r,
        })
    }

    fn answer(
        &self,
        res: Result<ureq::Response, ureq::Error>,
        what: &str,
    ) -> anyhow::Result<Value> {
        match res {
            Ok(r) => r
                .into_json()
                .with_context(|| format!("{what}: the answer is not JSON")),
            Err(ureq::Error::Status(code, r)) => {
                let body = r.into_string().unwrap_or_default();
                let msg = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v.pointer("/error/message")
                            .and_then(|m| m.as_str())
                            .map(String::from)
                    })
                    .unwrap_or(body);
                anyhow::bail!("{what}: HTTP {code}: {msg}")
            }
            Err(e) if e.to_string().contains("certificate") => Err(anyhow::anyhow!(
                "{what}: {e} (for a node with its own CA, pass its ca.pem with --ca-cert or EDGERUN_CA_CERT)"
            )),
            Err(e) => Err(anyhow::anyhow!(
                "{what}: {e} (is a node running at {}?)",
                self.base
            )),
        }
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let what = format!("GET {path}");
        self.answer(
            self.authed(self.agent.get(&format!("{}{path}", self.base)))?
                .call(),
            &what,
        )
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let what = format!("POST {path}");
        self.answer(
            self.authed(self.agent.post(&format!("{}{path}", self.base)))?
                .send_json(body),
            &what,
        )
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let what = format!("DELETE {path}");
        self.answer(
            self.authed(self.agent.delete(&format!("{}{path}", self.base)))?
                .call(),
            &what,
        )
    }

    pub fn print(v: &Value) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
    }

    pub fn print_get(&self, path: &str) -> anyhow::Result<()> {
        Client::print(&self.get(path)?)
    }
}

/// A TLS client configuration that trusts exactly the certificates in `ca_file`.
pub fn tls_trusting(ca_file: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("--ca-cert {}", ca_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("--ca-cert {}: not PEM certificates", ca_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "--ca-cert {}: no certificate in it",
        ca_file.display()
    );
    for c in certs {
        roots
            .add(c)
            .with_context(|| format!("--ca-cert {}: unusable certificate", ca_file.display()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
