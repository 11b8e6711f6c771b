//! A small blocking client of the REST API, for the CLI.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// Exit codes of the client commands (`edgerun --help` lists them).
pub mod exit {
    /// A task ended without succeeding, or did not end within the wait.
    pub const TASK_FAILED: i32 = 1;
    /// Bad usage, or the request was refused as invalid (HTTP 400, 409, 413, 422).
    pub const INVALID: i32 = 2;
    /// No such task, job or member (HTTP 404).
    pub const NOT_FOUND: i32 = 3;
    /// No or bad credentials, or too weak a role (HTTP 401, 403).
    pub const DENIED: i32 = 4;
    /// The node cannot be reached or cannot serve now (connection refused, HTTP 429, 5xx).
    pub const UNAVAILABLE: i32 = 5;
}

/// An error that sets the process's exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Fail with `code`.
pub fn fail(code: i32, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        code,
        message: message.into(),
    })
}

/// The exit code for `e`: its [`Failure`]'s, else 1.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    e.chain()
        .find_map(|c| c.downcast_ref::<Failure>())
        .map_or(1, |f| f.code)
}

/// A client command's error with an exit code: a [`Failure`] keeps its own; anything else
/// (an unreadable file, bad JSON in an argument) is bad input.
pub fn with_exit_code(e: anyhow::Error) -> anyhow::Error {
    if e.chain().any(|c| c.downcast_ref::<Failure>().is_some()) {
        e
    } else {
        fail(exit::INVALID, format!("{e:#}"))
    }
}

fn http_exit(code: u16) -> i32 {
    match code {
        401 | 403 => exit::DENIED,
        404 => exit::NOT_FOUND,
        429 | 500..=599 => exit::UNAVAILABLE,
        _ => exit::INVALID,
    }
}

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
        Client::with_agent(url, token, api_key, agent_builder())
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
            agent_builder().tls_config(std::sync::Arc::new(tls)),
        ))
    }

    /// Follow a Server-Sent Events stream: `on(kind, data)` for each event until it returns
    /// false or the stream ends.
    pub fn events(&self, path: &str, on: impl FnMut(&str, &Value) -> bool) -> anyhow::Result<()> {
        self.events_opened(path, || Ok(true), on)
    }

    /// Like [`Client::events`], calling `opened()` once the stream is open (before any event
    /// is read); it returns false to stop at once.
    pub fn events_opened(
        &self,
        path: &str,
        opened: impl FnOnce() -> anyhow::Result<bool>,
        mut on: impl FnMut(&str, &Value) -> bool,
    ) -> anyhow::Result<()> {
        use std::io::BufRead;
        let what = format!("GET {path}");
        let req = self.authed(self.agent.get(&format!("{}{path}", self.base)))?;
        let resp = match req.call() {
            Ok(r) => r,
            Err(e) => {
                self.answer(Err(e), &what)?;
                anyhow::bail!("{what}: no stream")
            }
        };
        if !opened()? {
            return Ok(());
        }
        let mut kind = String::from("message");
        for line in std::io::BufReader::new(resp.into_reader()).lines() {
            let line = line.with_context(|| format!("{what}: the stream broke"))?;
            if let Some(k) = line.strip_prefix("event: ") {
                kind = k.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(d).unwrap_or(Value::String(d.to_string()));
                if !on(&kind, &v) {
                    return Ok(());
                }
                kind = String::from("message");
            }
        }
        Ok(())
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
        self.checked(res, what)?
            .into_json()
            .with_context(|| format!("{what}: the answer is not JSON"))
    }

    /// A successful answer, or the error it stands for (with its exit code).
    fn checked(
        &self,
        res: Result<ureq::Response, ureq::Error>,
        what: &str,
    ) -> anyhow::Result<ureq::Response> {
        match res {
            Ok(r) => Ok(r),
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
                let hint = if code == 401 {
                    " (give an API key with --api-key or EDGERUN_API_KEY, or a token with --token or EDGERUN_TOKEN)"
                } else {
                    ""
                };
                Err(fail(
                    http_exit(code),
                    format!("{what}: HTTP {code}: {msg}{hint}"),
                ))
            }
            Err(e) if e.to_string().contains("certificate") => Err(fail(
                exit::UNAVAILABLE,
                format!("{what}: {e} (for a node with its own CA, pass its ca.pem with --ca-cert or EDGERUN_CA_CERT)"),
            )),
            Err(e) => Err(fail(
                exit::UNAVAILABLE,
                format!("{what}: {e} (is a node running at {}?)", self.base),
            )),
        }
    }

    /// Send a request built by `make`; once more with a fresh token when the one used is
    /// refused (401) and an API key is at hand; again while the node answers "not now": 429 (the
    /// call was refused before anything was done: always safe to repeat) and, for `read`s,
    /// 503 (no leader yet). It waits what Retry-After says (1 s without one, at most 30 s
    /// each time), for at most 2 minutes in all; then the last answer stands.
    fn send(
        &self,
        read: bool,
        make: impl Fn() -> anyhow::Result<Result<ureq::Response, ureq::Error>>,
    ) -> anyhow::Result<Result<ureq::Response, ureq::Error>> {
        let give_up = std::time::Instant::now() + Duration::from_secs(120);
        let mut fresh_token = false;
        loop {
            let res = make()?;
            // A token that no longer works (expired, revoked) while an API key is at hand:
            // trade the key for a new token, once.
            if let Err(ureq::Error::Status(401, _)) = &res {
                if self.api_key.is_some() && self.token.borrow().is_some() && !fresh_token {
                    fresh_token = true;
                    *self.token.borrow_mut() = None;
                    continue;
                }
            }
            let wait = match &res {
                Err(ureq::Error::Status(code, r)) if *code == 429 || (read && *code == 503) => r
                    .header("retry-after")
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(1)
                    .clamp(1, 30),
                _ => return Ok(res),
            };
            let wait = Duration::from_secs(wait);
            if std::time::Instant::now() + wait > give_up {
                return Ok(res);
            }
            std::thread::sleep(wait);
        }
    }

    /// GET `path` and copy the body into `out`; the bytes copied.
    pub fn download(&self, path: &str, out: &mut impl std::io::Write) -> anyhow::Result<u64> {
        let what = format!("GET {path}");
        let url = format!("{}{path}", self.base);
        let r = self.checked(
            self.send(true, || Ok(self.authed(self.agent.get(&url))?.call()))?,
            &what,
        )?;
        std::io::copy(&mut r.into_reader(), out).map_err(|e| {
            fail(
                exit::UNAVAILABLE,
                format!("{what}: the download broke: {e}"),
            )
        })
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let what = format!("GET {path}");
        let url = format!("{}{path}", self.base);
        self.answer(
            self.send(true, || Ok(self.authed(self.agent.get(&url))?.call()))?,
            &what,
        )
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.post_as(path, body, false)
    }

    /// POST a read (`POST /v1/tasks/wait`): repeated on 503 too.
    pub fn post_read(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.post_as(path, body, true)
    }

    fn post_as(&self, path: &str, body: &Value, read: bool) -> anyhow::Result<Value> {
        let what = format!("POST {path}");
        let url = format!("{}{path}", self.base);
        self.answer(
            self.send(read, || {
                Ok(self.authed(self.agent.post(&url))?.send_json(body))
            })?,
            &what,
        )
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let what = format!("DELETE {path}");
        let url = format!("{}{path}", self.base);
        self.answer(
            self.send(false, || Ok(self.authed(self.agent.delete(&url))?.call()))?,
            &what,
        )
    }

    pub fn print(v: &Value) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
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

/// Connect within 10 s; each read may wait 330 s (a `wait` of up to 300 s, or an event
/// stream's 15 s keep-alives); no bound on a whole exchange, so streams can run for hours.
fn agent_builder() -> ureq::AgentBuilder {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(330))
        .timeout_write(Duration::from_secs(60))
}
