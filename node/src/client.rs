//! A small blocking client of the REST API, for the CLI.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(url: &str) -> Client {
        Client {
            base: url.trim_end_matches('/').to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(330))
                .build(),
        }
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
            Err(e) => Err(anyhow::anyhow!(
                "{what}: {e} (is a node running at {}?)",
                self.base
            )),
        }
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let what = format!("GET {path}");
        self.answer(
            self.agent.get(&format!("{}{path}", self.base)).call(),
            &what,
        )
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let what = format!("POST {path}");
        self.answer(
            self.agent
                .post(&format!("{}{path}", self.base))
                .send_json(body),
            &what,
        )
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let what = format!("DELETE {path}");
        self.answer(
            self.agent.delete(&format!("{}{path}", self.base)).call(),
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
