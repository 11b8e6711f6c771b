//! The Raft log and vote in sled.
//!
//! Trees: `raft_log` (big-endian index → bincode `Entry`) and `raft_meta` (`vote`,
//! `committed`, `last_purged`). `append` writes a batch and reports it flushed only after
//! `flush_async` returns: an entry openraft counts toward a quorum is on disk. Votes are
//! flushed before `save_vote` returns. Failure policy: any sled or decoding error is a
//! `StorageError`, which openraft treats as fatal for this node.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader, StorageIOError, Vote};

use crate::{Entry, LogId, NodeId, StorageError, TypeConfig};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    flusher: crate::Flusher,
    log: sled::Tree,
    meta: sled::Tree,
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
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

impl LogStore {
    pub fn new(db: &sled::Db, flusher: crate::Flusher) -> Result<LogStore, sled::Error> {
        Ok(LogStore {
            flusher,
            log: db.open_tree("raft_log")?,
            meta: db.open_tree("raft_meta")?,
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

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        match self.log.last().map_err(read_err)? {
            None => Ok(None),
            Some((_, v)) => {
                let e: Entry = edgerun_model::decode(&v).map_err(read_err)?;
                Ok(Some(e.log_id))
            }
        }
    }

    /// Remove every entry with index in `from..=to`.
    fn remove_range(&self, from: Bound<[u8; 8]>, to: Bound<[u8; 8]>) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for kv in self.log.range::<[u8; 8], _>((from, to)) {
            let (k, _) = kv.map_err(write_err)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(key(*i)),
            Bound::Excluded(i) => Bound::Excluded(key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(key(*i)),
            Bound::Excluded(i) => Bound::Excluded(key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for kv in self.log.range::<[u8; 8], _>((start, end)) {
            let (_, v) = kv.map_err(read_err)?;
            out.push(edgerun_model::decode(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last = self.last_entry_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
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
        let mut batch = sled::Batch::default();
        for e in entries {
            let bytes = edgerun_model::encode(&e).map_err(|err| {
                StorageError::from(StorageIOError::<NodeId>::write_log_entry(e.log_id, &err))
            })?;
            batch.insert(&key(e.log_id.index), bytes);
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        // openraft counts the entries toward a quorum once the callback fires: flush first.
        // Completions must arrive in order, so the flush is awaited here rather than spawned.
        let res = self.flusher.flush().await.map_err(std::io::Error::other);
        callback.log_io_completed(res);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(Bound::Included(key(log_id.index)), Bound::Unbounded)?;
        self.flusher.flush().await.map_err(write_err)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.put_meta(LAST_PURGED, &log_id)?;
        self.remove_range(Bound::Unbounded, Bound::Included(key(log_id.index)))
    }
}

/// Seed an empty log (restore): everything up to `last` is purged (it is in the snapshot),
/// committed, and the vote is `vote`.
pub(crate) fn seed(db: &sled::Db, last: LogId, vote: Vote<NodeId>) -> Result<(), String> {
    let meta = db.open_tree("raft_meta").map_err(|e| e.to_string())?;
    for (k, v) in [
        (LAST_PURGED, edgerun_model::encode(&last)),
        (COMMITTED, edgerun_model::encode(&Some(last))),
        (VOTE, edgerun_model::encode(&vote)),
    ] {
        let v = v.map_err(|e| e.to_string())?;
        meta.insert(k, v).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Give openraft's subject/verb pair a short name in our own errors.
pub(crate) fn sm_error(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::<NodeId>::new(ErrorSubject::StateMachine, verb, &e).into()
}
