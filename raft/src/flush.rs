//! One flusher per database: every durable write (Raft appends and votes, kept completions,
//! stored results) asks it to flush, and it runs at most one `flush_async` at a time,
//! coalescing waiters (a flush that starts after a caller's write covers it).
//!
//! Why: with many concurrent `flush_async` calls (one per finishing attempt, plus Raft's),
//! sled's flushes could stall for good under load — seen in the chaos suite as a node whose
//! Raft core stopped answering after the outbox began flushing per completion. One flush at a
//! time also turns many fsyncs into one (group commit).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Clone)]
pub struct Flusher {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// Tickets handed out: each caller takes one after its write.
    requested: AtomicU64,
    /// Every ticket up to this is covered by a finished flush.
    covered: AtomicU64,
    lock: tokio::sync::Mutex<()>,
}

impl Flusher {
    pub fn new(db: sled::Db) -> Flusher {
        Flusher {
            inner: Arc::new(Inner {
                db,
                requested: AtomicU64::new(0),
                covered: AtomicU64::new(0),
                lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Return once everything written before this call is on disk.
    pub async fn flush(&self) -> Result<(), sled::Error> {
        let i = &self.inner;
        let ticket = i.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _one_at_a_time = i.lock.lock().await;
        if i.covered.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Every ticket taken so far belongs to a write made before now.
        let upto = i.requested.load(Ordering::SeqCst);
        i.db.flush_async().await?;
        i.covered.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_flushes_all_return_and_coalesce() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = sled::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let f = Flusher::new(db.clone());
        let mut tasks = Vec::new();
        for i in 0..64u64 {
            let (f, db) = (f.clone(), db.clone());
            tasks.push(tokio::spawn(async move {
                db.insert(i.to_be_bytes(), &b"x"[..])
                    .map_err(|e| e.to_string())?;
                f.flush().await.map_err(|e| e.to_string())
            }));
        }
        for t in tasks {
            let r = t.await.unwrap_or_else(|e| panic!("{e}"));
            assert!(r.is_ok(), "{r:?}");
        }
        assert_eq!(
            f.inner.covered.load(Ordering::SeqCst),
            f.inner.requested.load(Ordering::SeqCst)
        );
    }
}
