//! The operational sections: `[redis]`, `[cache]`, `[backup]`, `[supervisor]`, `[alerts]`,
//! `[log]`, `[debug]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{invalid, ConfigError};

/// Optional Redis for the shared result cache and rate limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// e.g. `redis://127.0.0.1:6379`; empty = in-process cache and limits.
    pub url: String,
    /// A Redis call not answered within this falls back to the node-local way.
    pub timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            timeout_ms: 250,
        }
    }
}

/// Restart policy of the node supervisor (Erlang's max restart intensity).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// More restarts of one actor than this within `window_secs` shut the node down.
    pub max_restarts: u32,
    pub window_secs: u64,
    /// First restart delay; doubles with each restart in the window up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_restarts: 5,
            window_secs: 30,
            backoff_initial_ms: 50,
            backoff_max_ms: 2_000,
        }
    }
}

/// Alert thresholds (checked every second by each node's Monitor); 0 turns a rule off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Alert while a node is marked down.
    pub node_down: bool,
    /// Alert while more than this many tasks are pending.
    pub pending_over: u64,
    /// Alert while more than this share of recently ended tasks failed or timed out...
    pub failure_rate_percent: f64,
    /// ... over this window ...
    pub failure_window_secs: u64,
    /// ... once at least this many ended in it.
    pub failure_min_finished: u64,
    /// Alert while the data dir's file system is fuller than this.
    pub disk_percent: f64,
    /// POST each change (firing, resolved) as JSON here; empty = no webhook.
    pub webhook_url: String,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            node_down: true,
            pending_over: 10_000,
            failure_rate_percent: 50.0,
            failure_window_secs: 300,
            failure_min_finished: 20,
            disk_percent: 90.0,
            webhook_url: String::new(),
        }
    }
}

/// Result memoization of deterministic kernels: in Redis when `redis.url` is set (shared by
/// every node), else in this process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// How long a result is kept.
    pub ttl_secs: u64,
    /// Results longer than this (bytes of JSON) are not kept.
    pub max_entry_bytes: usize,
    /// Most results kept in the in-process cache (without Redis).
    pub local_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            ttl_secs: 3600,
            max_entry_bytes: 1024 * 1024,
            local_entries: 10_000,
        }
    }
}

/// Scheduled backups of the replicated state, written by this node into its own directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Cron with seconds (`0 0 3 * * *`: 03:00 every day); empty = no scheduled backups.
    pub schedule: String,
    /// IANA time zone the schedule is read in.
    pub timezone: String,
    /// Where they go; empty = `<data_dir>/backups`.
    pub dir: PathBuf,
    /// Newest backups kept; older ones are removed.
    pub keep: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            schedule: String::new(),
            timezone: "UTC".into(),
            dir: PathBuf::new(),
            keep: 7,
        }
    }
}

/// The node's log (stderr).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Which lines to show, in tracing's filter syntax (`info`, `warn,edgerun_actors=debug`).
    /// `info,edgerun::trace=debug` adds one line per step of every task, each with the
    /// task's trace id. `EDGERUN_LOG` (or `RUST_LOG`) replaces it when set. Changeable while
    /// the node runs: `PUT /v1/admin/log`, or edit the file and send SIGHUP.
    pub filter: String,
    /// `text` (one readable line per event) or `json` (one JSON object per line).
    pub format: LogFormat,
}

/// The filter a node logs with unless told otherwise.
pub const DEFAULT_LOG_FILTER: &str =
    "info,openraft=warn,sled=warn,actix_server=warn,actix_web=warn";

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: DEFAULT_LOG_FILTER.into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Switches for tests. Off by default; never turn them on in production.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// Enables `POST /v1/debug/fail/{actor}`, which makes that actor fail (supervision tests).
    pub fault_injection: bool,
    /// Every attempt waits this long before its kernel runs, so failure tests can catch tasks
    /// mid-run. 0 (the default) = no delay.
    pub kernel_delay_ms: u64,
}

impl BackupConfig {
    /// Check what types alone cannot (ranges, cross-field rules).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !self.schedule.is_empty() && self.keep == 0 {
            return Err(invalid("backup.keep", 0, "at least 1"));
        }
        Ok(())
    }
}

impl CacheConfig {
    /// Check what types alone cannot (ranges, cross-field rules).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled && self.ttl_secs == 0 {
            return Err(invalid("cache.ttl_secs", 0, "seconds, at least 1"));
        }
        if self.enabled && self.local_entries == 0 {
            return Err(invalid(
                "cache.local_entries",
                0,
                "at least 1 (or cache.enabled = false)",
            ));
        }
        Ok(())
    }
}

impl RedisConfig {
    /// Check what types alone cannot (ranges, cross-field rules).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.url;
        if !(url.is_empty() || url.starts_with("redis://")) {
            // Never echo the URL: it may carry a password.
            return Err(invalid(
                "redis.url",
                "(not shown: it may hold a password)",
                "empty, or redis://[:password@]host:port[/db]",
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            return Err(invalid("redis.timeout_ms", self.timeout_ms, "1 to 60000"));
        }
        Ok(())
    }
}

impl AlertsConfig {
    /// Check what types alone cannot (ranges, cross-field rules).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let a = self;
        if !(0.0..=100.0).contains(&a.failure_rate_percent) {
            return Err(invalid(
                "alerts.failure_rate_percent",
                a.failure_rate_percent,
                "0 (off) to 100",
            ));
        }
        if !(0.0..=100.0).contains(&a.disk_percent) {
            return Err(invalid(
                "alerts.disk_percent",
                a.disk_percent,
                "0 (off) to 100",
            ));
        }
        if a.failure_window_secs == 0 {
            return Err(invalid(
                "alerts.failure_window_secs",
                a.failure_window_secs,
                "a positive number of seconds",
            ));
        }
        if !(a.webhook_url.is_empty()
            || a.webhook_url.starts_with("http://")
            || a.webhook_url.starts_with("https://"))
        {
            return Err(invalid(
                "alerts.webhook_url",
                &a.webhook_url,
                "empty, or an http:// or https:// URL",
            ));
        }
        Ok(())
    }
}

impl SupervisorConfig {
    /// Check what types alone cannot (ranges, cross-field rules).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let s = self;
        if s.max_restarts == 0 || s.window_secs == 0 {
            return Err(invalid(
                "supervisor.max_restarts",
                s.max_restarts,
                "positive, with a positive supervisor.window_secs",
            ));
        }
        if s.backoff_max_ms < s.backoff_initial_ms {
            return Err(invalid(
                "supervisor.backoff_max_ms",
                s.backoff_max_ms,
                "at least supervisor.backoff_initial_ms",
            ));
        }
        Ok(())
    }
}
