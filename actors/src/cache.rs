//! Result memoization: a deterministic kernel's result, keyed by (kernel, version, SHA-256 of
//! the input). With `redis.url` set the cache is Redis, shared by every node (entries expire
//! after `cache.ttl_secs`); without it, an in-process LRU of `cache.local_entries`. Results
//! over `cache.max_entry_bytes` are not kept. A cache that fails (Redis away, slow) is a miss,
//! logged once per outage: it never fails or delays a task beyond `redis.timeout_ms`.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::metrics_names as m;
use crate::redis_link::RedisLink;

enum Backend {
    Local(Mutex<lru::LruCache<String, (Instant, Arc<str>)>>),
    Redis(RedisLink),
}

pub struct ResultCache {
    backend: Backend,
    ttl: Duration,
    max_entry: usize,
    /// Redis failed last time (logged once each way).
    degraded: AtomicBool,
}

/// The cache key of one kernel run.
pub fn key(kernel: &str, version: u32, input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("edgerun:result:{kernel}:v{version}:{hex}")
}

/// The cache key of a run of `kernel` on `input`: none for a kernel that is not declared
/// deterministic (or not known).
pub fn kernel_key(kernel: &str, input: &str) -> Option<String> {
    static KERNELS: std::sync::OnceLock<std::collections::HashMap<&'static str, (u32, bool)>> =
        std::sync::OnceLock::new();
    let known = KERNELS.get_or_init(|| {
        edgerun_cpp::catalog()
            .into_iter()
            .map(|k| (k.name, (k.version, k.deterministic)))
            .collect()
    });
    match known.get(kernel) {
        Some((version, true)) => Some(key(kernel, *version, input)),
        _ => None,
    }
}

impl ResultCache {
    /// An in-process LRU of at most `entries` results.
    pub fn local(entries: usize, ttl: Duration, max_entry: usize) -> ResultCache {
        let cap = NonZeroUsize::new(entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        ResultCache {
            backend: Backend::Local(Mutex::new(lru::LruCache::new(cap))),
            ttl,
            max_entry,
            degraded: AtomicBool::new(false),
        }
    }

    /// Results kept in Redis, shared by every node that uses the same server.
    pub fn redis(link: RedisLink, ttl: Duration, max_entry: usize) -> ResultCache {
        ResultCache {
            backend: Backend::Redis(link),
            ttl,
            max_entry,
            degraded: AtomicBool::new(false),
        }
    }

    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(_) => "in-process LRU".into(),
            Backend::Redis(l) => format!("Redis at {}", l.shown()),
        }
    }

    fn redis_failed(&self, l: &RedisLink, e: &str) {
        metrics::counter!(m::CACHE_ERRORS).increment(1);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(redis = %l.shown(), error = %e, "the result cache is unavailable: tasks run without it until Redis answers");
        }
    }

    fn redis_ok(&self, l: &RedisLink) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!(redis = %l.shown(), "Redis answers again: the result cache is back");
        }
    }

    /// The cached result of `key`, if any.
    pub async fn get(&self, key: &str) -> Option<String> {
        let got = match &self.backend {
            Backend::Local(c) => {
                let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
                match c.get(key) {
                    Some((at, v)) if at.elapsed() < self.ttl => Some(v.to_string()),
                    Some(_) => {
                        c.pop(key);
                        None
                    }
                    None => None,
                }
            }
            Backend::Redis(l) => {
                let k = key.to_string();
                match l
                    .exchange(|mut c| async move {
                        redis::cmd("GET")
                            .arg(&k)
                            .query_async::<Option<String>>(&mut c)
                            .await
                    })
                    .await
                {
                    Ok(v) => {
                        self.redis_ok(l);
                        v
                    }
                    Err(e) => {
                        self.redis_failed(l, &e);
                        None
                    }
                }
            }
        };
        match &got {
            Some(_) => metrics::counter!(m::CACHE_HITS).increment(1),
            None => metrics::counter!(m::CACHE_MISSES).increment(1),
        }
        got
    }

    /// Keep `result` under `key` (unless it is over the size limit).
    pub async fn put(&self, key: &str, result: &str) {
        if result.len() > self.max_entry {
            return;
        }
        match &self.backend {
            Backend::Local(c) => {
                c.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .put(key.to_string(), (Instant::now(), Arc::from(result)));
            }
            Backend::Redis(l) => {
                let (k, v, ttl) = (
                    key.to_string(),
                    result.to_string(),
                    self.ttl.as_secs().max(1),
                );
                match l
                    .exchange(|mut c| async move {
                        redis::cmd("SET")
                            .arg(&k)
                            .arg(&v)
                            .arg("EX")
                            .arg(ttl)
                            .query_async::<()>(&mut c)
                            .await
                    })
                    .await
                {
                    Ok(()) => self.redis_ok(l),
                    Err(e) => self.redis_failed(l, &e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_kernel_version_and_input() {
        let a = key("stats", 1, "{\"values\":[1]}");
        assert!(a.starts_with("edgerun:result:stats:v1:"));
        assert_ne!(a, key("stats", 2, "{\"values\":[1]}"));
        assert_ne!(a, key("sort", 1, "{\"values\":[1]}"));
        assert_ne!(a, key("stats", 1, "{\"values\":[2]}"));
        assert_eq!(a, key("stats", 1, "{\"values\":[1]}"));
    }

    #[tokio::test]
    async fn the_local_cache_keeps_evicts_and_expires() {
        let c = ResultCache::local(2, Duration::from_secs(60), 10);
        c.put("a", "1").await;
        c.put("b", "2").await;
        c.put("big", "01234567890").await;
        assert_eq!(c.get("a").await.as_deref(), Some("1"));
        assert_eq!(c.get("big").await, None, "over max_entry: not kept");
        c.put("c", "3").await;
        assert_eq!(c.get("b").await, None, "least recently used went first");
        assert_eq!(c.get("c").await.as_deref(), Some("3"));
        let short = ResultCache::local(2, Duration::ZERO, 10);
        short.put("a", "1").await;
        assert_eq!(short.get("a").await, None, "expired");
    }
}
