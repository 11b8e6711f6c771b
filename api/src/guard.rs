//! Rate limits and the audit log, as middleware after authentication.
//!
//! - Rate limit: a token bucket per subject (the token's subject, or the client address when
//!   auth is off), `limits.requests_per_second` refilled up to `limits.burst`; beyond it 429
//!   `rate_limited` with Retry-After. With `redis.url` set the buckets live in Redis and are
//!   shared by every node (a client spreading its calls over the nodes is limited once);
//!   while Redis is unavailable each node falls back to its own buckets
//!   ([`crate::shared_limit`]). `/healthz`, `/readyz` and `/metrics` are not limited.
//! - Audit: every write (any /v1 call that is not a GET, token issues included) is one JSON
//!   line in `<data_dir>/audit.log`: time, node, subject, role, action (method + route),
//!   path, status and outcome. Reads are not audited; secrets are never written.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::{web, HttpMessage};
use serde_json::json;

use crate::auth::Principal;
use crate::error::ApiError;

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct Guard {
    /// Tokens per second and bucket size, as f64 bits: changeable while serving
    /// ([`Guard::set_rates`], on SIGHUP).
    rate: AtomicU64,
    burst: AtomicU64,
    buckets: Mutex<HashMap<String, Bucket>>,
    node: u64,
    audit: Option<Mutex<std::fs::File>>,
    audit_path: PathBuf,
    shared: Option<crate::shared_limit::SharedLimit>,
}

/// Buckets idle this long are full again and are forgotten.
const IDLE_SECS: f64 = 120.0;

impl Guard {
    /// `audit_path`: where the audit log goes (opened for append, created 0600).
    pub fn new(rate: u32, burst: u32, node: u64, audit_path: PathBuf) -> Result<Guard, String> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = audit_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("audit log {}: {e}", audit_path.display()))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&audit_path)
            .map_err(|e| format!("audit log {}: {e}", audit_path.display()))?;
        Ok(Guard {
            rate: AtomicU64::new(f64::from(rate.max(1)).to_bits()),
            burst: AtomicU64::new(f64::from(burst.max(1)).to_bits()),
            buckets: Mutex::new(HashMap::new()),
            node,
            audit: Some(Mutex::new(f)),
            audit_path,
            shared: None,
        })
    }

    /// Change the limits of every bucket from now on.
    pub fn set_rates(&self, rate: u32, burst: u32) {
        self.rate
            .store(f64::from(rate.max(1)).to_bits(), Ordering::Relaxed);
        self.burst
            .store(f64::from(burst.max(1)).to_bits(), Ordering::Relaxed);
    }

    /// (requests per second, burst) in force.
    pub fn rates(&self) -> (f64, f64) {
        (
            f64::from_bits(self.rate.load(Ordering::Relaxed)),
            f64::from_bits(self.burst.load(Ordering::Relaxed)),
        )
    }

    /// Share the buckets through Redis.
    pub fn with_shared(mut self, shared: crate::shared_limit::SharedLimit) -> Guard {
        self.shared = Some(shared);
        self
    }

    /// Take one token for `who` from the shared bucket, or the local one without Redis.
    async fn take_any(&self, who: &str) -> Result<(), u64> {
        if let Some(s) = &self.shared {
            let (rate, burst) = self.rates();
            match s.take(who, rate, burst).await {
                Ok(None) => return Ok(()),
                Ok(Some(wait)) => return Err(wait),
                Err(()) => {}
            }
        }
        self.take(who)
    }

    pub fn audit_path(&self) -> &PathBuf {
        &self.audit_path
    }

    /// Take one token for `who`; the seconds to wait when there is none.
    fn take(&self, who: &str) -> Result<(), u64> {
        let now = Instant::now();
        let (rate, burst) = self.rates();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() > 10_000 {
            b.retain(|_, x| now.duration_since(x.last).as_secs_f64() < IDLE_SECS);
        }
        let x = b.entry(who.to_string()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let refill = now.duration_since(x.last).as_secs_f64() * rate;
        x.tokens = (x.tokens + refill).min(burst);
        x.last = now;
        if x.tokens >= 1.0 {
            x.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - x.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    fn audit(&self, line: serde_json::Value) {
        if let Some(f) = &self.audit {
            // One write per line: `writeln!` on the file wrote each JSON token with its own
            // system call (dozens per line, on every write request).
            let mut buf = line.to_string().into_bytes();
            buf.push(b'\n');
            let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = f.write_all(&buf) {
                tracing::error!(error = %e, "writing the audit log failed");
            }
        }
    }
}

impl Guard {
    /// An audit line for a write refused before it ran (no or bad credentials, weak role).
    pub fn audit_refused(&self, req: &ServiceRequest, code: &str, status: u16) {
        let (method, path) = (req.method().to_string(), req.path().to_string());
        let pattern = req.match_pattern().unwrap_or_else(|| path.clone());
        self.audit(json!({
            "ts_ms": edgerun_actors::now_ms(),
            "node": self.node,
            "subject": req.peer_addr().map(|a| a.ip().to_string()),
            "role": null,
            "authenticated": false,
            "action": format!("{method} {pattern}"),
            "path": path,
            "status": status,
            "outcome": "denied",
            "reason": code,
        }));
    }
}

fn limited(path: &str) -> bool {
    path.starts_with("/v1/")
}

/// Middleware: the rate limit, then the call, then its audit line.
pub async fn guard<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: actix_web::middleware::Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(g) = req.app_data::<web::Data<Guard>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let principal = req.extensions().get::<Principal>().cloned();
    let who = principal
        .as_ref()
        .map(|p| p.subject.clone())
        .or_else(|| req.peer_addr().map(|a| a.ip().to_string()))
        .unwrap_or_else(|| "unknown".into());
    if limited(req.path()) {
        if let Err(wait) = g.take_any(&who).await {
            metrics::counter!(edgerun_actors::metrics_names::HTTP_RATE_LIMITED).increment(1);
            let (rate, burst) = g.rates();
            let e = ApiError::TooMany {
                code: "rate_limited",
                message: format!(
                    "more than {rate} requests a second (burst {burst}) from {who}; slow down"
                ),
                retry_after_secs: wait,
            };
            return Ok(req.error_response(e).map_into_right_body());
        }
    }
    let write = req.method() != Method::GET && req.method() != Method::HEAD && limited(req.path());
    let (method, path) = (req.method().to_string(), req.path().to_string());
    let pattern = req.match_pattern().unwrap_or_else(|| path.clone());
    let res = next.call(req).await?;
    if write {
        let status = res.status().as_u16();
        let outcome = match status {
            200..=299 => "ok",
            401 | 403 => "denied",
            429 => "rejected",
            400..=499 => "invalid",
            _ => "error",
        };
        g.audit(json!({
            "ts_ms": edgerun_actors::now_ms(),
            "node": g.node,
            "subject": who,
            "role": principal.as_ref().map(|p| p.role.as_str()),
            "authenticated": principal.as_ref().is_some_and(|p| p.authenticated),
            "action": format!("{method} {pattern}"),
            "path": path,
            "status": status,
            "outcome": outcome,
        }));
    }
    Ok(res.map_into_left_body())
}
