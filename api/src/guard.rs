//! Rate limits and the audit log, as middleware around authentication.
//!
//! ```text
//!  request ─▶ limit_address ─▶ authenticate ─▶ guard ─▶ router ─▶ require(role) ─▶ handler
//!             (per client       (who calls;     (per subject       (the matched
//!              address, before   refuses        limit; audit        route's role)
//!              anything else)    nothing)       line after)
//! ```
//!
//! - Rate limits: a token bucket per client address first (`limits.address_*`), so that an
//!   unauthenticated flood is cut before a token is even looked at; then one per subject
//!   (the token's subject, or the client address without one), `limits.requests_per_second`
//!   refilled up to `limits.burst`; beyond either 429 `rate_limited` with Retry-After. With
//!   `redis.url` set the subject buckets live in Redis and are shared by every node (a client
//!   spreading its calls over the nodes is limited once); while Redis is unavailable each
//!   node falls back to its own buckets ([`crate::shared_limit`]). `/healthz`, `/readyz`
//!   and `/metrics` (exactly those paths) are not limited.
//! - Audit: every call of a write route (not GET, and not a viewer's route such as
//!   `POST /v1/tasks/wait`) and of an admin route (reads included: a snapshot download is
//!   audited) is one JSON line in `<data_dir>/audit.log`: time, node, subject,
//!   role, action (method + route pattern), path (at most [`PATH_CHARS`] characters), status
//!   and outcome. Refusals of unauthenticated clients (401, 429), and a valid token's calls
//!   over its rate limit, are written once per client address (or subject) and reason per
//!   `audit.refusal_window_secs`, then counted: the next line for that pair carries
//!   `repeated`. The file is rotated at `audit.max_bytes` and
//!   `audit.max_files` old ones are kept, so no client can fill the disk through it.
//!   Secrets are never written.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::{web, HttpMessage};
use edgerun_config::{AuditConfig, LimitsConfig};
use serde_json::json;

use crate::auth::{Principal, Role, RouteNeed};
use crate::error::{ApiError, ErrorCode};

/// Most characters of a request path kept in an audit line.
pub const PATH_CHARS: usize = 256;
/// Most (address, reason) pairs whose refusals are being counted at once; beyond it the
/// oldest windows are written out early.
const MAX_REFUSAL_KEYS: usize = 10_000;

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by who is calling, with limits changeable while serving.
struct Buckets {
    /// Tokens per second and bucket size, as f64 bits.
    rate: AtomicU64,
    burst: AtomicU64,
    map: Mutex<HashMap<String, Bucket>>,
}

/// Buckets idle this long are full again and are forgotten.
const IDLE_SECS: f64 = 120.0;

impl Buckets {
    fn new(rate: u32, burst: u32) -> Buckets {
        let b = Buckets {
            rate: AtomicU64::new(0),
            burst: AtomicU64::new(0),
            map: Mutex::new(HashMap::new()),
        };
        b.set(rate, burst);
        b
    }

    fn set(&self, rate: u32, burst: u32) {
        self.rate
            .store(f64::from(rate.max(1)).to_bits(), Ordering::Relaxed);
        self.burst
            .store(f64::from(burst.max(1)).to_bits(), Ordering::Relaxed);
    }

    fn rates(&self) -> (f64, f64) {
        (
            f64::from_bits(self.rate.load(Ordering::Relaxed)),
            f64::from_bits(self.burst.load(Ordering::Relaxed)),
        )
    }

    /// Take one token for `who`; the seconds to wait when there is none.
    fn take(&self, who: &str) -> Result<(), u64> {
        let now = Instant::now();
        let (rate, burst) = self.rates();
        let mut b = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() > 10_000 {
            b.retain(|_, x| now.duration_since(x.last).as_secs_f64() < IDLE_SECS);
        }
        let x = match b.get_mut(who) {
            Some(x) => x,
            None => b.entry(who.to_string()).or_insert(Bucket {
                tokens: burst,
                last: now,
            }),
        };
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
}

/// The audit file, rotated by size.
struct AuditFile {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    max_bytes: u64,
    max_files: u32,
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl AuditFile {
    fn write(&mut self, buf: &[u8]) {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            if let Err(e) = self.rotate() {
                tracing::error!(error = %e, path = %self.path.display(), "rotating the audit log failed");
            }
        }
        match self.file.write_all(buf) {
            Ok(()) => self.size += buf.len() as u64,
            Err(e) => tracing::error!(error = %e, "writing the audit log failed"),
        }
    }

    /// `audit.log.{n}` → `.{n+1}` (the oldest removed), `audit.log` → `.1`, a new file.
    fn rotate(&mut self) -> std::io::Result<()> {
        if self.max_files == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(rotated(&self.path, self.max_files));
            for n in (1..self.max_files).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Refusals of one (client address or subject, reason) counted inside a window.
struct Refusal {
    /// The token's role when the caller was authenticated (a rate-limited subject).
    role: Option<&'static str>,
    first_ms: u64,
    /// Refusals after the first in this window (not written yet).
    repeated: u64,
    action: String,
    status: u16,
}

pub struct Guard {
    subjects: Buckets,
    addresses: Buckets,
    node: u64,
    audit: Mutex<AuditFile>,
    audit_path: PathBuf,
    refusal_window_ms: u64,
    refusals: Mutex<HashMap<(String, &'static str), Refusal>>,
    shared: Option<crate::shared_limit::SharedLimit>,
}

/// The path as an audit line keeps it: at most [`PATH_CHARS`] characters.
pub fn capped_path(path: &str) -> String {
    match path.char_indices().nth(PATH_CHARS) {
        None => path.to_string(),
        Some((at, _)) => format!("{}…(+{} bytes)", &path[..at], path.len() - at),
    }
}

impl Guard {
    /// `audit_path`: where the audit log goes (opened for append, created 0600).
    pub fn new(
        limits: &LimitsConfig,
        audit: &AuditConfig,
        node: u64,
        audit_path: PathBuf,
    ) -> Result<Guard, String> {
        if let Some(dir) = audit_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("audit log {}: {e}", audit_path.display()))?;
        }
        let file = open_append(&audit_path)
            .map_err(|e| format!("audit log {}: {e}", audit_path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Guard {
            subjects: Buckets::new(limits.requests_per_second, limits.burst),
            addresses: Buckets::new(limits.address_requests_per_second, limits.address_burst),
            node,
            audit: Mutex::new(AuditFile {
                path: audit_path.clone(),
                file,
                size,
                max_bytes: audit.max_bytes.max(1),
                max_files: audit.max_files,
            }),
            audit_path,
            refusal_window_ms: audit.refusal_window_secs.saturating_mul(1000),
            refusals: Mutex::new(HashMap::new()),
            shared: None,
        })
    }

    /// Change the limits of every bucket from now on.
    pub fn set_rates(&self, limits: &LimitsConfig) {
        self.subjects.set(limits.requests_per_second, limits.burst);
        self.addresses
            .set(limits.address_requests_per_second, limits.address_burst);
    }

    /// (requests per second, burst) per subject in force.
    pub fn rates(&self) -> (f64, f64) {
        self.subjects.rates()
    }

    /// Share the buckets through Redis.
    pub fn with_shared(mut self, shared: crate::shared_limit::SharedLimit) -> Guard {
        self.shared = Some(shared);
        self
    }

    /// Take one token for `who` from the shared bucket, or the local one without Redis.
    async fn take_any(&self, who: &str) -> Result<(), u64> {
        if let Some(s) = &self.shared {
            let (rate, burst) = self.subjects.rates();
            match s.take(who, rate, burst).await {
                Ok(None) => return Ok(()),
                Ok(Some(wait)) => return Err(wait),
                Err(()) => {}
            }
        }
        self.subjects.take(who)
    }

    pub fn audit_path(&self) -> &PathBuf {
        &self.audit_path
    }

    fn write(&self, line: serde_json::Value) {
        // One write per line: `writeln!` on the file wrote each JSON token with its own
        // system call (dozens per line, on every write request).
        let mut buf = line.to_string().into_bytes();
        buf.push(b'\n');
        self.audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(&buf);
    }

    /// A refusal that may come in floods (an unauthenticated client's, or any rate-limited
    /// call): the first of a window is written, the rest are counted and written with the
    /// next one after the window (or by [`Guard::flush_refusals`]). `who` is the client
    /// address, or the subject when `role` says the caller was authenticated.
    fn refused(
        &self,
        who: String,
        role: Option<&'static str>,
        reason: &'static str,
        action: String,
        path: &str,
        status: u16,
    ) {
        let addr = who;
        let now = edgerun_actors::now_ms();
        let line = |repeated: u64, since: Option<u64>| {
            json!({
                "ts_ms": now,
                "node": self.node,
                "subject": addr,
                "role": role,
                "authenticated": role.is_some(),
                "action": action,
                "path": capped_path(path),
                "status": status,
                "outcome": "denied",
                "reason": reason,
                "repeated": repeated,
                "since_ms": since,
            })
        };
        if self.refusal_window_ms == 0 {
            self.write(line(0, None));
            return;
        }
        let mut map = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let key = (addr.clone(), reason);
        let earlier = match map.get_mut(&key) {
            Some(r) if now.saturating_sub(r.first_ms) < self.refusal_window_ms => {
                r.repeated += 1;
                r.action = action;
                r.status = status;
                return;
            }
            Some(r) => Some((r.repeated, r.first_ms)),
            None => None,
        };
        if map.len() >= MAX_REFUSAL_KEYS {
            let old = std::mem::take(&mut *map);
            drop(map);
            self.write_counts(old);
            map = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        }
        map.insert(
            key,
            Refusal {
                role,
                first_ms: now,
                repeated: 0,
                action: action.clone(),
                status,
            },
        );
        drop(map);
        // What the last window counted rides on this line.
        match earlier {
            Some((repeated, since)) if repeated > 0 => self.write(line(repeated, Some(since))),
            _ => self.write(line(0, None)),
        }
    }

    /// Lines for counted refusals whose window has ended (call now and then).
    pub fn flush_refusals(&self) {
        let now = edgerun_actors::now_ms();
        let mut map = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let ended: Vec<(String, &'static str)> = map
            .iter()
            .filter(|(_, r)| now.saturating_sub(r.first_ms) >= self.refusal_window_ms)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = HashMap::new();
        for k in ended {
            if let Some(r) = map.remove(&k) {
                out.insert(k, r);
            }
        }
        drop(map);
        self.write_counts(out);
    }

    fn write_counts(&self, counts: HashMap<(String, &'static str), Refusal>) {
        for ((addr, reason), r) in counts {
            if r.repeated == 0 {
                continue;
            }
            self.write(json!({
                "ts_ms": edgerun_actors::now_ms(),
                "node": self.node,
                "subject": addr,
                "role": r.role,
                "authenticated": r.role.is_some(),
                "action": r.action,
                "status": r.status,
                "outcome": "denied",
                "reason": reason,
                "repeated": r.repeated,
                "since_ms": r.first_ms,
            }));
        }
    }
}

/// Paths never limited: health and metrics, spelled exactly (any other spelling is limited
/// like every other call).
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

fn client_addr(req: &ServiceRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn too_many(who: &str, (rate, burst): (f64, f64), wait: u64) -> ApiError {
    metrics::counter!(edgerun_actors::metrics_names::HTTP_RATE_LIMITED).increment(1);
    ApiError::TooMany {
        code: ErrorCode::RateLimited,
        message: format!(
            "more than {rate} requests a second (burst {burst}) from {who}; slow down"
        ),
        retry_after_secs: wait,
    }
}

/// Middleware, outermost: the per-address limit, before the request is looked at further.
pub async fn limit_address<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: actix_web::middleware::Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    if let Some(g) = req.app_data::<web::Data<Guard>>().cloned() {
        if !exempt(req.path()) {
            let addr = client_addr(&req);
            if let Err(wait) = g.addresses.take(&addr) {
                let e = too_many(&addr, g.addresses.rates(), wait);
                let action = format!("{} {}", req.method(), "unmatched");
                g.refused(addr, None, "rate_limited_address", action, req.path(), 429);
                return Ok(req.error_response(e).map_into_right_body());
            }
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// Middleware, after authentication: the per-subject limit, then the call, then its audit
/// line.
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
    let addr = client_addr(&req);
    let who = principal
        .as_ref()
        .map(|p| p.subject.clone())
        .unwrap_or_else(|| addr.clone());
    let (method, path) = (req.method().clone(), req.path().to_string());
    if !exempt(&path) {
        if let Err(wait) = g.take_any(&who).await {
            let e = too_many(&who, g.rates(), wait);
            let res = req.error_response(e);
            // Counted per subject (or address) and window, authenticated or not: a flood of
            // refused calls must not push the rest of the audit history out.
            let role = principal
                .as_ref()
                .filter(|p| p.authenticated)
                .map(|p| p.role.as_str());
            g.refused(
                who,
                role,
                "rate_limited",
                format!("{method} unmatched"),
                &path,
                429,
            );
            return Ok(res.map_into_right_body());
        }
    }
    let res = next.call(req).await?;
    let need = res.request().extensions().get::<RouteNeed>().map(|n| n.0);
    // Unmatched paths ran nothing; reads are not audited, but for admin routes.
    let Some(need) = need else {
        return Ok(res.map_into_left_body());
    };
    // Writes: calls of operator and admin routes, and of open routes that change something
    // (token issues); a viewer's route is a read even when it is a POST (/v1/tasks/wait).
    let write = method != Method::GET && method != Method::HEAD && need != Some(Role::Viewer);
    if write || need == Some(Role::Admin) {
        audit_line(&g, &res, principal.as_ref(), &who, &method, &path, &addr);
    }
    Ok(res.map_into_left_body())
}

fn audit_line<B>(
    g: &Guard,
    res: &ServiceResponse<B>,
    principal: Option<&Principal>,
    who: &str,
    method: &Method,
    path: &str,
    addr: &str,
) {
    let status = res.status().as_u16();
    let pattern = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let action = format!("{method} {pattern}");
    let authenticated = principal.is_some_and(|p| p.authenticated);
    let reason = res
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
        .map(|e| e.code().as_str());
    // Refusals of clients we do not know are counted, not written one by one.
    if status == 401 || (status == 429 && !authenticated) {
        g.refused(
            addr.to_string(),
            None,
            reason.unwrap_or("unauthorized"),
            action,
            path,
            status,
        );
        return;
    }
    let outcome = match status {
        200..=299 => "ok",
        401 | 403 => "denied",
        429 => "rejected",
        400..=499 => "invalid",
        _ => "error",
    };
    let mut line = json!({
        "ts_ms": edgerun_actors::now_ms(),
        "node": g.node,
        "subject": who,
        "role": principal.map(|p| p.role.as_str()),
        "authenticated": authenticated,
        "action": action,
        "path": capped_path(path),
        "status": status,
        "outcome": outcome,
    });
    if let (Some(r), true) = (reason, status >= 400) {
        line["reason"] = json!(r);
    }
    g.write(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(dir: &Path, max_bytes: u64, max_files: u32, window: u64) -> Guard {
        Guard::new(
            &LimitsConfig::default(),
            &AuditConfig {
                max_bytes,
                max_files,
                refusal_window_secs: window,
            },
            1,
            dir.join("audit.log"),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        assert_eq!(capped_path("/v1/tasks"), "/v1/tasks");
        let long = format!("/v1/tasks/{}", "é".repeat(4000));
        let c = capped_path(&long);
        assert!(c.chars().count() < PATH_CHARS + 30, "{}", c.len());
        assert!(c.ends_with(&format!(
            "(+{} bytes)",
            long.len() - c.find('…').unwrap_or(0)
        )));
    }

    #[test]
    fn the_audit_log_rotates_and_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let g = guard(dir.path(), 4096, 2, 0);
        for i in 0..2000 {
            g.write(json!({ "i": i, "pad": "x".repeat(100) }));
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.log", "audit.log.1", "audit.log.2"]);
        let total: u64 = names
            .iter()
            .map(|n| std::fs::metadata(dir.path().join(n)).map_or(0, |m| m.len()))
            .sum();
        assert!(total <= 3 * 4096, "{total} bytes kept");
        // The newest line is in the current file, and every file is private.
        let cur = std::fs::read_to_string(dir.path().join("audit.log")).unwrap_or_default();
        assert!(cur.contains("\"i\":1999"), "{cur}");
        use std::os::unix::fs::PermissionsExt;
        for n in &names {
            let mode = std::fs::metadata(dir.path().join(n)).map_or(0, |m| m.permissions().mode());
            assert_eq!(mode & 0o077, 0, "{n} is {mode:o}");
        }
    }

    #[test]
    fn refusals_from_one_address_are_counted_not_written_each() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let g = guard(dir.path(), 1 << 20, 1, 3600);
        for _ in 0..1000 {
            g.refused(
                "10.0.0.9".into(),
                None,
                "missing_token",
                "POST /v1/tasks".into(),
                "/v1/tasks",
                401,
            );
        }
        g.refused(
            "10.0.0.8".into(),
            None,
            "missing_token",
            "POST /v1/tasks".into(),
            "/v1/tasks",
            401,
        );
        let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap_or_default();
        assert_eq!(text.lines().count(), 2, "{text}");
        // The window ended: the count is written.
        g.refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values_mut()
            .for_each(|r| r.first_ms = 0);
        g.flush_refusals();
        let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap_or_default();
        let last: serde_json::Value = text
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_default();
        assert_eq!(last["repeated"], 999, "{text}");
        assert_eq!(last["subject"], "10.0.0.9");
        assert_eq!(
            text.lines().count(),
            3,
            "nothing to write for 10.0.0.8: {text}"
        );
    }
}
