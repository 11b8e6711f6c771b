//! Node configuration: defaults < TOML file < `EDGERUN_*` environment < command-line flags.
//!
//! # Layout
//! - [`NodeConfig`] and one plain-data section per component (each takes only its own), each
//!   in its own file with its own `validate`: `node`, `api`, `cluster` (membership, leases,
//!   the RPC circuit breaker), `auth`, `limits` (rate limits and the audit log), `scheduling`
//!   (scheduler and retention), `executor`, `raft`, `ops` (Redis, result cache, backups,
//!   supervisor, alerts, log, debug), `streams`. [`NodeConfig::validate`] runs them all, then the rules
//!   that span sections.
//! - [`Sources`]: where the layers come from. Tests pass their own environment instead of
//!   touching the process's.
//! - [`load`]: merges the layers with figment, rejects unknown keys and wrong types, then
//!   [`NodeConfig::validate`]s the values once.
//! - [`secret`]: secret files shared by a cluster's nodes (JWT key, API keys, cluster secret):
//!   made 0600 when missing, refused when too short or readable by others.
//! - `tests` (private): the layering, unknown keys, messages and every validation rule.
//!
//! Environment variables map to keys by splitting at the first `_` after the prefix:
//! `EDGERUN_API_LISTEN` is `api.listen`, `EDGERUN_NODE_DATA_DIR` is `node.data_dir`.
//! Flags are `--set key=value` (dotted keys) plus a few named shortcuts in the binary.
//! Values in env and flags are parsed like TOML values (`4`, `true`, `"x"`, `[1, 2]`).
//!
//! Every error names the key, the value and what would be accepted, and where it came from.

use std::path::{Path, PathBuf};

use edgerun_model::NodeId;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

pub mod allow;
mod api;
mod auth;
mod cluster;
mod executor;
mod limits;
mod node;
mod ops;
mod raft;
mod scheduling;
pub mod secret;
mod streams;

pub use api::ApiConfig;
pub use auth::{ApiKey, AuthConfig, AuthRole};
pub use cluster::{ClusterConfig, Peer, Role};
pub use executor::{ExecutorConfig, IsolationMode};
pub use limits::{AuditConfig, LimitsConfig};
pub use node::NodeSection;
pub use ops::{
    AlertsConfig, BackupConfig, CacheConfig, DebugConfig, LogConfig, LogFormat, RedisConfig,
    SupervisorConfig, DEFAULT_LOG_FILTER,
};
pub use raft::RaftConfig;
pub use scheduling::{RetentionConfig, SchedulerConfig};
pub use streams::StreamsConfig;

/// Prefix of the environment variables read as configuration.
pub const ENV_PREFIX: &str = "EDGERUN_";
/// Environment variables with the prefix that are not configuration keys.
const ENV_NOT_KEYS: &[&str] = &[
    "EDGERUN_LOG",
    "EDGERUN_URL",
    "EDGERUN_TOKEN",
    "EDGERUN_API_KEY",
    "EDGERUN_CA_CERT",
    "EDGERUN_OUTPUT",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub api: ApiConfig,
    pub cluster: ClusterConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub audit: AuditConfig,
    pub redis: RedisConfig,
    pub cache: CacheConfig,
    pub backup: BackupConfig,
    pub executor: ExecutorConfig,
    pub raft: RaftConfig,
    pub supervisor: SupervisorConfig,
    pub scheduler: SchedulerConfig,
    pub retention: RetentionConfig,
    pub alerts: AlertsConfig,
    pub streams: StreamsConfig,
    pub log: LogConfig,
    pub debug: DebugConfig,
}

/// Where the layers come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// A TOML file; it must exist if given.
    pub file: Option<PathBuf>,
    /// Environment variables (all of them; those without the prefix are ignored).
    pub env: Vec<(String, String)>,
    /// `key=value` overrides from flags, applied last, in order.
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    /// The process's real environment.
    pub fn process_env() -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Parse(String),
    #[error("bad flag {flag:?}: expected key=value, e.g. executor.slots=8")]
    Flag { flag: String },
    #[error("bad environment variable {var}: expected {ENV_PREFIX}<SECTION>_<KEY>, e.g. EDGERUN_API_LISTEN")]
    EnvName { var: String },
    #[error("invalid value for {key}: {value:?}; accepted: {accepted}")]
    Invalid {
        key: &'static str,
        value: String,
        accepted: String,
    },
}

/// One named layer of keys (an env var, a flag): errors name it.
struct Layer {
    name: String,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

fn layer(name: String, key: &str, raw: &str) -> Layer {
    // A TOML value (number, string, array, inline table), else the text as a plain string.
    // Not figment's own `Value::from_str`: it panics on some escapes in quoted strings
    // (found by the fuzz test raft/tests/t90_fuzz.rs with `"ে\ "`).
    let value: Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .and_then(|v| Value::serialize(v).ok())
            .unwrap_or_else(|| Value::from(raw.to_string())),
        Err(_) => Value::from(raw.to_string()),
    };
    Layer {
        name,
        dict: match figment::util::nest(key, value) {
            Value::Dict(_, d) => d,
            _ => Dict::new(),
        },
    }
}

/// Merge the layers, check types and unknown keys, then validate the values.
pub fn load(sources: &Sources) -> Result<NodeConfig, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(NodeConfig::default()));
    if let Some(path) = &sources.file {
        // Toml::file would silently treat a missing file as empty: check first.
        std::fs::metadata(path).map_err(|e| ConfigError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        fig = fig.merge(Toml::file_exact(path));
    }
    for (var, raw) in &sources.env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_NOT_KEYS.contains(&var.as_str()) {
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        let Some((section, key)) = rest.split_once('_') else {
            return Err(ConfigError::EnvName { var: var.clone() });
        };
        let dotted = format!("{section}.{key}");
        fig = fig.merge(layer(format!("environment variable {var}"), &dotted, raw));
    }
    for (key, raw) in &sources.overrides {
        fig = fig.merge(layer(format!("flag --set {key}={raw}"), key, raw));
    }
    let cfg: NodeConfig = fig.extract().map_err(|e| ConfigError::Parse(describe(e)))?;
    cfg.validate()?;
    Ok(cfg)
}

/// Parse one `key=value` flag.
pub fn parse_override(flag: &str) -> Result<(String, String), ConfigError> {
    match flag.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(ConfigError::Flag {
            flag: flag.to_string(),
        }),
    }
}

/// figment's errors, one per line, with the key and where the value came from.
fn describe(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let mut s = match &e.kind {
                // figment's own text quotes the list twice (``a` or `b``).
                figment::error::Kind::UnknownVariant(found, expected) => {
                    format!("unknown value `{found}`, accepted: {}", quoted(expected))
                }
                figment::error::Kind::UnknownField(found, expected) => {
                    format!("unknown key `{found}`, accepted: {}", quoted(expected))
                }
                other => other.to_string(),
            };
            if !e.path.is_empty() {
                s = format!("{s} for key {}", e.path.join("."));
            }
            if let Some(md) = &e.metadata {
                s = match &md.source {
                    Some(src) => format!("{s} (from {} {src})", md.name),
                    None => format!("{s} (from {})", md.name),
                };
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `a`, `b` or `c`.
fn quoted(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match q.split_last() {
        None => "none".into(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

fn invalid(key: &'static str, value: impl ToString, accepted: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        accepted: accepted.into(),
    }
}

fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

impl NodeConfig {
    /// Check values that types alone cannot (ranges, cross-field rules).
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Each section checks its own values (in its file); the rules that span sections
        // are here.
        self.node.validate()?;
        self.cluster.validate()?;
        self.backup.validate()?;
        self.cache.validate()?;
        self.executor.validate()?;
        self.scheduler.validate()?;
        self.auth.validate()?;
        self.retention.validate()?;
        self.api.validate()?;
        self.raft.validate()?;
        self.limits.validate()?;
        self.audit.validate()?;
        self.redis.validate()?;
        self.alerts.validate()?;
        self.supervisor.validate()?;
        self.streams.validate()?;
        let ids: std::collections::BTreeSet<NodeId> =
            self.cluster.peers.iter().map(|p| p.id).collect();
        if !self.cluster.peers.is_empty()
            && self.cluster.role == Role::Voter
            && !ids.contains(&self.node.id)
        {
            return Err(invalid(
                "cluster.peers",
                format!("ids {ids:?}"),
                format!(
                    "a list that includes this voter (node.id = {})",
                    self.node.id
                ),
            ));
        }
        Ok(())
    }

    /// The RPC address peers should use for this node.
    pub fn advertised_rpc(&self) -> String {
        self.cluster
            .advertise_rpc
            .clone()
            .unwrap_or_else(|| self.cluster.listen.to_string())
    }

    /// The REST address clients should use for this node.
    pub fn advertised_api(&self) -> String {
        self.cluster
            .advertise_api
            .clone()
            .unwrap_or_else(|| self.api.listen.to_string())
    }

    pub fn data_dir(&self) -> &Path {
        &self.node.data_dir
    }

    /// The cluster RPC secret's file.
    pub fn cluster_secret_file(&self) -> PathBuf {
        if self.cluster.secret_file.as_os_str().is_empty() {
            self.node.data_dir.join("cluster.secret")
        } else {
            self.cluster.secret_file.clone()
        }
    }
}

#[cfg(test)]
mod tests;
