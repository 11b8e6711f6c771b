//! Rate-limit buckets shared by every node through Redis (`redis.url`).
//!
//! One Lua script takes a token atomically on the Redis server, with the server's own clock
//! (`TIME`), so nodes with skewed clocks still share one bucket per subject. When Redis does
//! not answer within `redis.timeout_ms` the caller falls back to its node-local bucket: a
//! Redis outage loosens the limit to per-node, it never refuses or fails a request. The
//! change is logged once each way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edgerun_actors::redis_link::RedisLink;

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

pub struct SharedLimit {
    link: RedisLink,
    script: redis::Script,
    degraded: AtomicBool,
}

pub use edgerun_actors::redis_link::redact;

impl SharedLimit {
    /// Check the URL (no connection is made yet).
    pub fn new(url: &str, timeout: Duration) -> Result<SharedLimit, String> {
        Ok(SharedLimit {
            link: RedisLink::new(url, timeout)?,
            script: redis::Script::new(TAKE),
            degraded: AtomicBool::new(false),
        })
    }

    pub fn shown(&self) -> &str {
        self.link.shown()
    }

    /// Take one token from `who`'s shared bucket: `Ok(None)` = allowed, `Ok(Some(secs))` =
    /// wait that long; `Err` = Redis is unavailable (the caller uses its local bucket).
    pub async fn take(&self, who: &str, rate: f64, burst: f64) -> Result<Option<u64>, ()> {
        let answer = self
            .link
            .exchange(|mut m| async move {
                let mut inv = self.script.key(format!("edgerun:ratelimit:{who}"));
                inv.arg(rate).arg(burst);
                inv.invoke_async::<i64>(&mut m).await
            })
            .await;
        match answer {
            Ok(wait_ms) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!(redis = %self.shown(), "Redis answers again: rate limits are shared by all nodes again");
                }
                Ok((wait_ms > 0).then(|| (wait_ms as u64).div_ceil(1000).max(1)))
            }
            Err(e) => {
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(redis = %self.shown(), error = %e, "Redis unavailable: rate limits fall back to this node's own buckets until it answers");
                }
                Err(())
            }
        }
    }
}
