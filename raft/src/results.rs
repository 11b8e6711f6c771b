//! Results too big to replicate: kept in this node's sled (tree `results`), keyed by task and
//! attempt, and fetched by other nodes over the cluster RPC (`AppRequest::FetchResult`). The
//! Raft log records only where a result lives and how big it is.
//!
//! A result is flushed to disk before its completion is proposed, so a committed reference
//! never points at a result a crash lost. A node sweeps out the results of tasks that are
//! gone (retention) or ended with another attempt's result.

use edgerun_model::TaskId;

use crate::store_error::StoreError;

#[derive(Clone)]
pub struct ResultStore {
    tree: sled::Tree,
    flusher: crate::Flusher,
}

fn key(task: TaskId, attempt: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&task.to_be_bytes());
    k[8..].copy_from_slice(&attempt.to_be_bytes());
    k
}

impl ResultStore {
    pub fn open(db: &sled::Db, flusher: crate::Flusher) -> Result<ResultStore, StoreError> {
        db.open_tree("results")
            .map(|tree| ResultStore { tree, flusher })
            .map_err(StoreError::db("opening the results tree"))
    }

    /// Store and flush.
    pub async fn put(&self, task: TaskId, attempt: u32, result: &str) -> Result<(), StoreError> {
        self.tree
            .insert(key(task, attempt), result.as_bytes())
            .map_err(StoreError::db(format!("storing the result of task {task}")))?;
        self.flusher.flush().await.map_err(StoreError::db(format!(
            "flushing the result of task {task}"
        )))
    }

    pub fn get(&self, task: TaskId, attempt: u32) -> Result<Option<String>, StoreError> {
        match self.tree.get(key(task, attempt)) {
            Ok(Some(v)) => {
                String::from_utf8(v.to_vec())
                    .map(Some)
                    .map_err(|_| StoreError::Corrupt {
                        what: format!("the stored result of task {task}"),
                        detail: "is not UTF-8".into(),
                    })
            }
            Ok(None) => Ok(None),
            Err(e) => Err(StoreError::db(format!("reading the result of task {task}"))(e)),
        }
    }

    /// Every stored (task, attempt).
    pub fn keys(&self) -> Vec<(TaskId, u32)> {
        keys_of(&self.tree)
    }

    pub fn remove(&self, task: TaskId, attempt: u32) {
        let _ = self.tree.remove(key(task, attempt));
    }
}

fn keys_of(tree: &sled::Tree) -> Vec<(TaskId, u32)> {
    tree.iter()
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| k.len() == 12)
        .map(|k| {
            let mut t = [0u8; 8];
            let mut a = [0u8; 4];
            t.copy_from_slice(&k[..8]);
            a.copy_from_slice(&k[8..]);
            (TaskId::from_be_bytes(t), u32::from_be_bytes(a))
        })
        .collect()
}

/// Completions not yet committed, kept on disk (tree `outbox`) so that a node cut off from the
/// leader, or restarted while cut off, still delivers what it finished when the link returns
/// (edge autonomy). An entry is removed once the cluster has answered it, accepted or fenced.
#[derive(Clone)]
pub struct Outbox {
    tree: sled::Tree,
    flusher: crate::Flusher,
    /// Entries written since the last flush.
    dirty: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Outbox {
    pub fn open(db: &sled::Db, flusher: crate::Flusher) -> Result<Outbox, StoreError> {
        db.open_tree("outbox")
            .map(|tree| Outbox {
                tree,
                flusher,
                dirty: Default::default(),
            })
            .map_err(StoreError::db("opening the outbox tree"))
    }

    /// Keep `c` until it is delivered. Made durable by the next [`Outbox::flush_if_dirty`]
    /// (the Worker calls it every tick) or any Raft flush, whichever comes first: flushing
    /// per completion added an fsync per finished task and slowed Raft's own appends. A
    /// completion lost in a crash before that flush is not a lost result: the attempt is still
    /// this node's in the log, so the restarted Worker runs it again.
    pub fn put(&self, c: &edgerun_model::Completion) -> Result<(), StoreError> {
        let a = c.attempt;
        let bytes = edgerun_model::encode(c).map_err(|e| StoreError::Encode {
            what: "a completion",
            detail: e.to_string(),
        })?;
        self.tree
            .insert(key(a.task, a.attempt), bytes)
            .map_err(StoreError::db(format!(
                "keeping the completion of task {}",
                a.task
            )))?;
        self.dirty.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Flush when something was kept since the last flush.
    pub async fn flush_if_dirty(&self) -> Result<(), StoreError> {
        if !self.dirty.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        self.flusher.flush().await.map_err(|e| {
            self.dirty.store(true, std::sync::atomic::Ordering::SeqCst);
            StoreError::db("flushing the outbox")(e)
        })
    }

    pub fn remove(&self, task: TaskId, attempt: u32) {
        let _ = self.tree.remove(key(task, attempt));
    }

    /// Every kept completion; entries that do not decode are dropped with an error each.
    pub fn all(&self) -> (Vec<edgerun_model::Completion>, Vec<String>) {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for item in self.tree.iter() {
            match item {
                Ok((k, v)) => match edgerun_model::decode::<edgerun_model::Completion>(&v) {
                    Ok(c) => out.push(c),
                    Err(e) => {
                        errors.push(format!("an outbox entry does not decode ({e}); dropped"));
                        let _ = self.tree.remove(k);
                    }
                },
                Err(e) => errors.push(format!("reading the outbox: {e}")),
            }
        }
        (out, errors)
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Every kept (task, attempt).
    pub fn keys(&self) -> Vec<(TaskId, u32)> {
        keys_of(&self.tree)
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}
