//! `[limits]` (admission and rate limits) and `[audit]` (the audit log).

use serde::{Deserialize, Serialize};

use crate::{invalid, ConfigError};

/// Request rate limits per client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Per token subject (per client address when auth is off), after authentication.
    pub requests_per_second: u32,
    pub burst: u32,
    /// Per client address, before anything else is looked at (a token is not even
    /// checked beyond it): what keeps unauthenticated floods off the audit log and the CPU.
    pub address_requests_per_second: u32,
    pub address_burst: u32,
    /// Most pending tasks in the cluster; a submission beyond it is answered 429 and nothing
    /// of it is stored. 0 = no limit.
    pub max_pending: u64,
    /// Most pending tasks of one submitter (token subject, or client address without auth).
    /// 0 = no limit.
    pub max_pending_per_submitter: u64,
    /// How long an idempotency key is remembered (seconds). 0 = as long as its task is kept.
    pub idempotency_window_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            requests_per_second: 200,
            burst: 400,
            address_requests_per_second: 1000,
            address_burst: 2000,
            max_pending: 100_000,
            max_pending_per_submitter: 0,
            idempotency_window_secs: 86_400,
        }
    }
}

/// The audit log (`<data_dir>/audit.log`): rotated by size, a bounded number kept, so that
/// it can never fill the disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The file is rotated (`audit.log` → `audit.log.1` → ...) once it holds this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept beside the current one; older ones are removed.
    pub max_files: u32,
    /// Refusals of unauthenticated clients (no or bad token, bad API key, over the
    /// per-address limit) are written once per client address and reason in this many
    /// seconds, with a count, instead of one line each.
    pub refusal_window_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            max_bytes: 16 * 1024 * 1024,
            max_files: 4,
            refusal_window_secs: 60,
        }
    }
}

impl LimitsConfig {
    /// Check what types alone cannot (ranges, cross-field rules).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.requests_per_second == 0 {
            return Err(invalid(
                "limits.requests_per_second",
                0,
                "a positive number",
            ));
        }
        if self.burst < self.requests_per_second.min(1) {
            return Err(invalid("limits.burst", self.burst, "a positive number"));
        }
        if self.address_requests_per_second == 0 {
            return Err(invalid(
                "limits.address_requests_per_second",
                0,
                "a positive number",
            ));
        }
        if self.address_burst == 0 {
            return Err(invalid("limits.address_burst", 0, "a positive number"));
        }
        Ok(())
    }
}

impl AuditConfig {
    /// Check what types alone cannot (ranges, cross-field rules).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_bytes < 4096 {
            return Err(invalid("audit.max_bytes", self.max_bytes, "at least 4096"));
        }
        if self.max_files > 1000 {
            return Err(invalid("audit.max_files", self.max_files, "0 to 1000"));
        }
        if self.refusal_window_secs > 86_400 {
            return Err(invalid(
                "audit.refusal_window_secs",
                self.refusal_window_secs,
                "0 (a line per refusal) to 86400",
            ));
        }
        Ok(())
    }
}
