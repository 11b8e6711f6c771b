//! `[api]`: the REST listener, its body limits and TLS.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{invalid, ConfigError};

/// The REST server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// actix-web worker threads (0 = one per core).
    pub workers: usize,
    /// A request body not received in full within this long is answered 408 and its
    /// connection closed (a client trickling bytes does not hold a connection).
    pub body_timeout_ms: u64,
    /// PEM certificate chain: with `tls_key_file`, the API speaks HTTPS only.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7101)),
            max_body_bytes: 16 * 1024 * 1024,
            workers: 0,
            body_timeout_ms: 10_000,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl ApiConfig {
    /// Check what types alone cannot (ranges, cross-field rules).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes < 1024 {
            return Err(invalid(
                "api.max_body_bytes",
                self.max_body_bytes,
                "at least 1024",
            ));
        }
        if self.workers > 256 {
            return Err(invalid(
                "api.workers",
                self.workers,
                "0 (one per core) to 256",
            ));
        }
        if !(100..=600_000).contains(&self.body_timeout_ms) {
            return Err(invalid(
                "api.body_timeout_ms",
                self.body_timeout_ms,
                "100 to 600000",
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(invalid(
                "api.tls_cert_file",
                "(only one of the pair is set)",
                "both api.tls_cert_file and api.tls_key_file, or neither",
            ));
        }
        Ok(())
    }
}
