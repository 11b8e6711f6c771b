//! What may change while a node runs: the log filter, the request rate limits and the API
//! keys (a removed key's tokens are refused from then on). A reload
//! (SIGHUP, or `POST /v1/admin/reload`) re-reads the configuration from the same file,
//! environment and flags the node started with, checks all of it, and applies those keys;
//! other keys that changed are reported as needing a restart. A bad file changes nothing.

use std::sync::{Arc, Mutex};

use edgerun_api::handlers::admin::{Control, ReloadReport};
use edgerun_api::Guard;
use edgerun_config::{NodeConfig, Sources};

use crate::logging;

/// Keys a reload applies at once.
const LIVE_KEYS: &[&str] = &[
    "log.filter",
    "limits.requests_per_second",
    "limits.burst",
    "limits.address_requests_per_second",
    "limits.address_burst",
    "auth.api_keys",
];

pub struct NodeControl {
    /// Where the configuration came from; none for `edgerun dev`'s in-process node.
    sources: Option<Sources>,
    /// The configuration in force (the last one loaded).
    current: Mutex<NodeConfig>,
    guard: Arc<Guard>,
    auth: Arc<edgerun_api::Auth>,
}

impl NodeControl {
    pub fn new(
        cfg: NodeConfig,
        sources: Option<Sources>,
        guard: Arc<Guard>,
        auth: Arc<edgerun_api::Auth>,
    ) -> NodeControl {
        NodeControl {
            sources,
            current: Mutex::new(cfg),
            guard,
            auth,
        }
    }
}

/// Dotted keys whose values differ between `a` and `b`.
fn changed_keys(a: &serde_json::Value, b: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => changed_keys(va, vb, &p, out),
                    _ => out.push(p),
                }
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

impl Control for NodeControl {
    fn log_filter(&self) -> String {
        logging::get().map(|l| l.current()).unwrap_or_default()
    }

    fn log_format(&self) -> &'static str {
        match logging::get().map(|l| l.format()) {
            Some(edgerun_config::LogFormat::Json) => "json",
            _ => "text",
        }
    }

    fn set_log_filter(&self, filter: &str) -> Result<(), String> {
        logging::get()
            .ok_or_else(|| "logging is not set up in this process".to_string())?
            .set(filter)
    }

    fn reload(&self) -> Result<ReloadReport, String> {
        let Some(sources) = &self.sources else {
            return Err(
                "this node was started without a configuration to re-read (edgerun dev's single in-process node); restart it to change settings".into(),
            );
        };
        let new = edgerun_config::load(sources).map_err(|e| e.to_string())?;
        // Check everything before changing anything.
        let env_wins = logging::env_filter().is_some();
        if !env_wins {
            logging::parse(&new.log.filter).map_err(|e| format!("log.filter: {e}"))?;
        }
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        // The API keys are read again on every reload (a key file may have been replaced
        // without the configuration changing); tokens of keys no longer there are refused.
        let keys_changed = self
            .auth
            .reload_keys(&new.auth, &cur.node.data_dir)
            .map_err(|e| format!("auth.api_keys: {e}"))?;
        let (a, b) = (
            serde_json::to_value(&*cur).map_err(|e| e.to_string())?,
            serde_json::to_value(&new).map_err(|e| e.to_string())?,
        );
        let mut changed = Vec::new();
        changed_keys(&a, &b, "", &mut changed);
        let mut report = ReloadReport::default();
        for key in changed {
            match key.as_str() {
                "log.filter" if env_wins => {
                    tracing::warn!(
                        "log.filter changed but EDGERUN_LOG is set and wins; use PUT /v1/admin/log"
                    );
                }
                "log.filter" => {
                    self.set_log_filter(&new.log.filter)?;
                    report.applied.push(key);
                }
                k if LIVE_KEYS.contains(&k) || k.starts_with("auth.api_keys") => {
                    report.applied.push(key)
                }
                _ => report.needs_restart.push(key),
            }
        }
        if keys_changed
            && !report
                .applied
                .iter()
                .any(|k| k.starts_with("auth.api_keys"))
        {
            report.applied.push("auth.api_keys (key files)".into());
        }
        self.guard.set_rates(&new.limits);
        // What needs a restart stays as it was in force, so it is reported again next time.
        cur.log.filter = new.log.filter.clone();
        cur.limits.requests_per_second = new.limits.requests_per_second;
        cur.limits.burst = new.limits.burst;
        cur.limits.address_requests_per_second = new.limits.address_requests_per_second;
        cur.limits.address_burst = new.limits.address_burst;
        cur.auth.api_keys = new.auth.api_keys.clone();
        tracing::info!(
            applied = ?report.applied,
            needs_restart = ?report.needs_restart,
            rate = new.limits.requests_per_second,
            burst = new.limits.burst,
            "configuration re-read"
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_dotted_leaves() {
        let a = serde_json::json!({"log": {"filter": "info", "format": "text"}, "limits": {"burst": 1}});
        let b = serde_json::json!({"log": {"filter": "debug", "format": "text"}, "limits": {"burst": 2}, "x": 1});
        let mut out = Vec::new();
        changed_keys(&a, &b, "", &mut out);
        assert_eq!(out, vec!["limits.burst", "log.filter", "x"]);
    }
}
