//! `[auth]`: bearer tokens (JWT) and the API keys traded for them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{invalid, ConfigError};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthRole {
    /// Everything, membership and debug switches included.
    Admin,
    /// Submit, cancel, requeue, jobs; and read.
    #[serde(alias = "submitter")]
    Operator,
    /// Read only.
    #[serde(alias = "reader")]
    Viewer,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub key_file: PathBuf,
    pub role: AuthRole,
}

/// JWT authentication (enforced by the security issue; the keys are accepted now).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// On by default: every /v1 call needs a bearer token.
    pub enabled: bool,
    /// HS256 key; created (random, mode 0600) if missing. Empty = `<data_dir>/jwt.secret`.
    /// Every node of a cluster must use the same secret (a token from one node is checked by
    /// any other), so point them at one shared file.
    pub jwt_secret_file: PathBuf,
    /// Each key file holds one API key (created with a random key, mode 0600, if missing).
    /// Empty = one admin key in `<data_dir>/admin.key`.
    pub api_keys: Vec<ApiKey>,
    /// Lifetime of an issued token, in seconds.
    pub token_ttl_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            jwt_secret_file: PathBuf::new(),
            api_keys: Vec::new(),
            token_ttl_secs: 3600,
        }
    }
}

impl AuthConfig {
    /// Check what types alone cannot (ranges, cross-field rules).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=30 * 86_400).contains(&self.token_ttl_secs) {
            return Err(invalid(
                "auth.token_ttl_secs",
                self.token_ttl_secs,
                "1 to 2592000 (30 days)",
            ));
        }
        Ok(())
    }
}
