//! One connection to the optional Redis server (`redis.url`), shared by the rate limits and
//! the result cache: every exchange is bounded by `redis.timeout_ms`, and a failed one drops
//! the connection so that the next, after a short pause, starts afresh (redis-rs' connection
//! manager stays broken once its own retries run out). Callers decide what a failure means;
//! none of them fails a request or a task because Redis is away.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// How long after a failed connect the next one is tried.
const RECONNECT_AFTER: Duration = Duration::from_secs(2);

pub struct RedisLink {
    client: redis::Client,
    /// host:port only (a URL may carry a password; it is never logged).
    shown: String,
    conn: Mutex<Conn>,
    timeout: Duration,
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

impl RedisLink {
    /// Check the URL (no connection is made yet).
    pub fn new(url: &str, timeout: Duration) -> Result<RedisLink, String> {
        let client =
            redis::Client::open(url).map_err(|e| format!("redis.url {}: {e}", redact(url)))?;
        Ok(RedisLink {
            client,
            shown: redact(url),
            conn: Mutex::new(Conn::default()),
            timeout,
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

    /// Run one exchange on the connection within the timeout.
    pub async fn exchange<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(redis::aio::ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let answer = async {
            let m = self.manager().await?;
            tokio::time::timeout(self.timeout, f(m))
                .await
                .map_err(|_| format!("no answer within {:?}", self.timeout))?
                .map_err(|e| e.to_string())
        }
        .await;
        if answer.is_err() {
            let mut c = self.conn.lock().await;
            if c.manager.take().is_some() {
                c.last_try = Some(Instant::now());
            }
        }
        answer
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
