//! Rate-limit buckets shared by every node through Redis (`redis.url`).
//!
//! One Lua script takes a token atomically on the Redis server, with the server's own clock
//! (`TIME`), so nodes with skewed clocks still share one bucket per subject. When Redis does
//! not answer within `redis.timeout_ms` the caller falls back to its node-local bucket: a
//! Redis outage loosens the limit to per-node, it never refuses or fails a request. The
//! change is logged once each way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

const TAKE: &str = r#"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) / 1000 * rate)
end
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait_ms = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait_ms
"#;

/// How long after a failed connect the next one is tried.
const RECONNECT_AFTER: Duration = Duration::from_secs(2);

pub struct SharedLimit {
    client: redis::Client,
    /// host:port only (a URL may carry a password; it is never logged).
    shown: String,
    conn: Mutex<Conn>,
    script: redis::Script,
    timeout: Duration,
    degraded: AtomicBool,
}

#[derive(Default)]
struct Conn {
    manager: Option<redis::aio::ConnectionManager>,
    last_try: Option<Instant>,
}

/// `redis://user:pass@host:port/db` → `host:port/db`.
pub fn redact(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_string()
}

impl SharedLimit {
    /// Check the URL (no connection is made yet).
    pub fn new(url: &str, timeout: Duration) -> Result<SharedLimit, String> {
        let client =
            redis::Client::open(url).map_err(|e| format!("redis.url {}: {e}", redact(url)))?;
        Ok(SharedLimit {
            client,
            shown: redact(url),
            conn: Mutex::new(Conn::default()),
            script: redis::Script::new(TAKE),
            timeout,
            degraded: AtomicBool::new(false),
        })
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    async fn manager(&self) -> Result<redis::aio::ConnectionManager, String> {
        let mut c = self.conn.lock().await;
        if let Some(m) = &c.manager {
            return Ok(m.clone());
        }
        if c.last_try.is_some_and(|t| t.elapsed() < RECONNECT_AFTER) {
            return Err("not connected (retrying shortly)".into());
        }
        c.last_try = Some(Instant::now());
        let m = tokio::time::timeout(self.timeout, self.client.get_connection_manager())
            .await
            .map_err(|_| format!("no connection within {:?}", self.timeout))?
            .map_err(|e| e.to_string())?;
        c.manager = Some(m.clone());
        Ok(m)
    }

    /// Take one token from `who`'s shared bucket: `Ok(None)` = allowed, `Ok(Some(secs))` =
    /// wait that long; `Err` = Redis is unavailable (the caller uses its local bucket).
    pub async fn take(&self, who: &str, rate: f64, burst: f64) -> Result<Option<u64>, ()> {
        let answer = async {
            let mut m = self.manager().await?;
            let mut inv = self.script.key(format!("edgerun:ratelimit:{who}"));
            inv.arg(rate).arg(burst);
            tokio::time::timeout(self.timeout, inv.invoke_async::<i64>(&mut m))
                .await
                .map_err(|_| format!("no answer within {:?}", self.timeout))?
                .map_err(|e| e.to_string())
        }
        .await;
        match answer {
            Ok(wait_ms) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!(redis = %self.shown, "Redis answers again: rate limits are shared by all nodes again");
                }
                Ok((wait_ms > 0).then(|| (wait_ms as u64).div_ceil(1000).max(1)))
            }
            Err(e) => {
                // Start over with a fresh connection (after RECONNECT_AFTER): a connection
                // manager whose own reconnects ran out stays broken otherwise.
                {
                    let mut c = self.conn.lock().await;
                    if c.manager.take().is_some() {
                        c.last_try = Some(Instant::now());
                    }
                }
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(redis = %self.shown, error = %e, "Redis unavailable: rate limits fall back to this node's own buckets until it answers");
                }
                Err(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("redis://:hunter2@10.0.0.5:6379/0"),
            "10.0.0.5:6379/0"
        );
        assert_eq!(redact("redis://user:pw@h:1"), "h:1");
        assert_eq!(redact("redis://h:1"), "h:1");
    }
}
