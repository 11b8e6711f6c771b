//! The Raft log in segment files ([`crate::log_files`]), the vote and markers in sled.
//!
//! sled's `raft_meta` tree holds `vote`, `committed` and `last_purged`. `append` writes the
//! entries to the last segment and reports them flushed only after the sync thread's
//! `fdatasync` covered them: an entry openraft counts toward a quorum is on disk. Votes are
//! flushed (sled) before `save_vote` returns; a purge makes its new `last_purged` durable
//! before removing files. Failure policy: any I/O or decoding error is a `StorageError`,
//! which openraft treats as fatal for this node.
//!
//! A data directory written by an earlier edgerun keeps its log in sled's `raft_log` tree
//! (big-endian index → bincode `Entry`): [`LogStore::open`] moves it into a segment file
//! (written whole, synced, renamed into place) and only then empties the tree.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader, StorageIOError, Vote};

use crate::log_files::{LogError, LogFiles};
use crate::{Entry, LogId, NodeId, StorageError, TypeConfig};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
/// The tree an earlier edgerun kept the log in.
pub(crate) const LEGACY_LOG_TREE: &str = "raft_log";

#[derive(Clone)]
pub struct LogStore {
    flusher: crate::Flusher,
    meta: sled::Tree,
    files: Arc<LogFiles>,
    /// The store openraft's core holds reads entries to apply them, the last read of an
    /// entry: it takes them out of the cache. Readers (replication) get copies.
    takes: bool,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::<NodeId>::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::<NodeId>::write_logs(&e).into()
}

fn vote_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::<NodeId>::write_vote(&e).into()
}

/// Why the log store cannot be opened (or seeded).
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error(transparent)]
    Files(#[from] LogError),
    #[error("{what}: {source}")]
    Db {
        what: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("{what} does not decode: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("encoding {what}: {detail}")]
    Encode { what: &'static str, detail: String },
}

impl LogStoreError {
    /// The log's files are damaged (the node must not start on them).
    pub fn is_damaged(&self) -> bool {
        matches!(self, LogStoreError::Files(LogError::Damaged(_)))
    }

    fn db(what: &'static str) -> impl FnOnce(sled::Error) -> LogStoreError {
        move |source| LogStoreError::Db { what, source }
    }
}

/// For the callers that still carry errors as text (`backup`).
impl From<LogStoreError> for String {
    fn from(e: LogStoreError) -> String {
        e.to_string()
    }
}

impl LogStore {
    /// Open the log in `log_dir` and the markers in `db`, moving a log an earlier edgerun
    /// kept in sled into the files first.
    pub fn open(
        db: &sled::Db,
        flusher: crate::Flusher,
        log_dir: &Path,
    ) -> Result<LogStore, LogStoreError> {
        let meta = db
            .open_tree("raft_meta")
            .map_err(LogStoreError::db("opening the tree raft_meta"))?;
        move_out_of_sled(db, log_dir)?;
        let purged = match meta
            .get(LAST_PURGED)
            .map_err(LogStoreError::db("reading the purged index"))?
        {
            None => None,
            Some(v) => Some(
                edgerun_model::decode::<LogId>(&v)
                    .map_err(|e| LogStoreError::Corrupt {
                        what: "the purged index",
                        detail: e.to_string(),
                    })?
                    .index,
            ),
        };
        let (files, notes) = LogFiles::open(log_dir, purged)?;
        for n in notes {
            tracing::warn!("{n}");
        }
        Ok(LogStore {
            flusher,
            meta,
            files: Arc::new(files),
            takes: true,
        })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        k: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self.meta.get(k).map_err(read_err)? {
            None => Ok(None),
            Some(v) => edgerun_model::decode(&v).map(Some).map_err(read_err),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, k: &[u8], v: &T) -> Result<(), StorageError> {
        let bytes = edgerun_model::encode(v).map_err(write_err)?;
        self.meta.insert(k, bytes).map_err(write_err)?;
        Ok(())
    }
}

/// Move a log kept in sled (an earlier edgerun) into `dir`. The segment is complete and
/// durable before the tree is emptied; a crash in between leaves both, and the next open
/// keeps the files (the tree is emptied again).
fn move_out_of_sled(db: &sled::Db, dir: &Path) -> Result<(), LogStoreError> {
    let names = db.tree_names();
    if !names
        .iter()
        .any(|n| n.as_ref() == LEGACY_LOG_TREE.as_bytes())
    {
        return Ok(());
    }
    let tree = db
        .open_tree(LEGACY_LOG_TREE)
        .map_err(LogStoreError::db("opening the Raft log kept in sled"))?;
    if tree.is_empty() {
        return Ok(());
    }
    let have_files = !crate::log_files::scan(dir, crate::log_files::Depth::Headers)
        .segments
        .is_empty();
    if !have_files {
        let mut entries = Vec::new();
        for kv in tree.iter() {
            let (_, v) = kv.map_err(LogStoreError::db("reading the Raft log kept in sled"))?;
            let e: Entry = edgerun_model::decode(&v).map_err(|e| LogStoreError::Corrupt {
                what: "the Raft log kept in sled",
                detail: e.to_string(),
            })?;
            entries.push(e);
        }
        let n = crate::log_files::write_fresh(dir, entries)?;
        tracing::info!(entries = n, dir = %dir.display(), "moved the Raft log out of sled into segment files");
    }
    tree.clear()
        .map_err(LogStoreError::db("clearing the Raft log kept in sled"))?;
    db.flush()
        .map_err(LogStoreError::db("flushing the database"))?;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let from = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        self.files
            .read(from, to, self.takes)
            .map_err(|e| read_err(std::io::Error::other(e)))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last = self.files.last().or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogStore {
            takes: false,
            ..self.clone()
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = edgerun_model::encode(vote).map_err(vote_err)?;
        self.meta.insert(VOTE, bytes).map_err(vote_err)?;
        self.flusher.flush().await.map_err(vote_err)?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        match self
            .meta
            .get(VOTE)
            .map_err(|e| StorageIOError::<NodeId>::read_vote(&e))?
        {
            None => Ok(None),
            Some(v) => edgerun_model::decode(&v)
                .map(Some)
                .map_err(|e| StorageIOError::<NodeId>::read_vote(&e).into()),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed on purpose: a lost `committed` only means fewer entries are re-applied
        // at start; the leader commits them again.
        self.put_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // openraft counts the entries toward a quorum once the callback fires: after the sync
        // thread's fdatasync covered them (it runs completions in order).
        match self.files.append(entries).map_err(write_err)? {
            Some(file) => self.files.when_durable(
                file,
                Box::new(move |res: std::io::Result<()>| callback.log_io_completed(res)),
            ),
            // Nothing written and no segment: nothing waits to be made durable.
            None => callback.log_io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.files.truncate(log_id.index).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The new purge point is durable before any file goes: a crash in between leaves
        // files whose entries the next open skips and removes.
        self.put_meta(LAST_PURGED, &log_id)?;
        self.flusher.flush().await.map_err(write_err)?;
        self.files.purge(log_id.index).map_err(write_err)
    }
}

/// Seed an empty log (restore): everything up to `last` is purged (it is in the snapshot),
/// committed, and the vote is `vote`.
pub(crate) fn seed(db: &sled::Db, last: LogId, vote: Vote<NodeId>) -> Result<(), LogStoreError> {
    let meta = db
        .open_tree("raft_meta")
        .map_err(LogStoreError::db("opening the tree raft_meta"))?;
    for (k, v) in [
        (LAST_PURGED, edgerun_model::encode(&last)),
        (COMMITTED, edgerun_model::encode(&Some(last))),
        (VOTE, edgerun_model::encode(&vote)),
    ] {
        let v = v.map_err(|e| LogStoreError::Encode {
            what: "a log marker",
            detail: e.to_string(),
        })?;
        meta.insert(k, v)
            .map_err(LogStoreError::db("writing a log marker"))?;
    }
    Ok(())
}

/// Give openraft's subject/verb pair a short name in our own errors.
pub(crate) fn sm_error(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::<NodeId>::new(ErrorSubject::StateMachine, verb, &e).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test]
    async fn a_log_kept_in_sled_moves_into_files_once() {
        let d = tempfile::tempdir().unwrap();
        let db = sled::open(d.path().join("db")).unwrap();
        let tree = db.open_tree(LEGACY_LOG_TREE).unwrap();
        for i in 1..=5u64 {
            tree.insert(i.to_be_bytes(), edgerun_model::encode(&entry(i)).unwrap())
                .unwrap();
        }
        let meta = db.open_tree("raft_meta").unwrap();
        meta.insert(
            LAST_PURGED,
            edgerun_model::encode(&LogId::new(CommittedLeaderId::new(1, 1), 0)).unwrap(),
        )
        .unwrap();
        let dir = d.path().join("log");
        let mut s = LogStore::open(&db, crate::Flusher::new(db.clone()), &dir).unwrap();
        assert!(tree.is_empty());
        let got = s.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id.map(|l| l.index), Some(5));
        drop(s);
        // A crash after the files were written but before the tree was emptied: the files win.
        tree.insert(
            9u64.to_be_bytes(),
            edgerun_model::encode(&entry(9)).unwrap(),
        )
        .unwrap();
        let mut s = LogStore::open(&db, crate::Flusher::new(db.clone()), &dir).unwrap();
        assert!(tree.is_empty());
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id.map(|l| l.index), Some(5));
    }
}
