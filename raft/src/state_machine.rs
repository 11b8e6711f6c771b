//! The state machine store: `model::ClusterState` in memory, snapshots in sled.
//!
//! `apply` runs the deterministic `ClusterState::apply` for each entry and publishes the
//! resulting task events; [`StateView`] is the read side the rest of the node holds (reads
//! take a short read lock; nothing is awaited under it).
//!
//! Snapshots are the bincode [`SnapshotFile`] (format version, last applied log id,
//! membership, state). The current one is kept in sled tree `snapshot` and flushed, so a
//! restart loads it and openraft re-applies the committed entries after it.

use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use edgerun_model::{ClusterState, Response, TaskEvent, FORMAT_VERSION};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorVerb, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::log_store::sm_error;
use crate::{
    Entry, LogId, NodeId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const CURRENT: &[u8] = b"current";

/// What changed, for subscribers (Scheduler, Worker, waiters).
#[derive(Debug, Clone)]
pub enum StateEvent {
    /// Tasks changed by one batch of applied entries.
    Tasks(Arc<Vec<TaskEvent>>),
    /// The whole state was replaced (snapshot installed): rescan.
    Reset,
}

/// The snapshot file format.
#[derive(Serialize, Deserialize)]
pub struct SnapshotFile {
    pub version: u16,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: ClusterState,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// [`SnapshotFile`] borrowing the state: encodes to the same bytes without a copy of the
/// state (which, at 100k tasks, is hundreds of megabytes at the snapshot's peak).
#[derive(Serialize)]
struct SnapshotFileRef<'a> {
    version: u16,
    last_applied: &'a Option<LogId>,
    membership: &'a StoredMembership,
    state: &'a ClusterState,
}

/// [`StoredSnapshot`] borrowing the data: the same bytes, one copy fewer.
#[derive(Serialize)]
struct StoredSnapshotRef<'a> {
    meta: &'a SnapshotMeta,
    data: &'a [u8],
}

struct SmData {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: ClusterState,
}

struct Shared {
    data: RwLock<SmData>,
    events: broadcast::Sender<StateEvent>,
    applied: watch::Sender<u64>,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, SmData> {
        // A panic while holding the lock cannot leave ClusterState half-changed in a way
        // later readers could misread worse than the panic itself; keep serving.
        self.data.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, SmData> {
        self.data.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Read access to the replicated state, for every part of the node.
#[derive(Clone)]
pub struct StateView {
    shared: Arc<Shared>,
}

impl StateView {
    /// Run `f` on the current state under a short read lock.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        f(&self.shared.read().state)
    }

    /// Events from every apply from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StateEvent> {
        self.shared.events.subscribe()
    }

    /// The index of the last applied entry, updated after each apply.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.shared.applied.subscribe()
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.shared.read().last_applied
    }

    /// The state encoded as a [`SnapshotFile`] (consistent: one read lock, no copy of the
    /// state), its last applied log id, and how many tasks it holds.
    pub fn encode_snapshot(&self) -> Result<(Vec<u8>, Option<LogId>, u64), String> {
        let d = self.shared.read();
        let bytes = edgerun_model::encode(&SnapshotFileRef {
            version: FORMAT_VERSION,
            last_applied: &d.last_applied,
            membership: &d.membership,
            state: &d.state,
        })
        .map_err(|e| e.to_string())?;
        Ok((bytes, d.last_applied, d.state.tasks.len() as u64))
    }
}

/// Make `data` (an encoded [`SnapshotFile`]) the current snapshot in `db` (restore).
pub(crate) fn write_current(db: &sled::Db, meta: &SnapshotMeta, data: &[u8]) -> Result<(), String> {
    let stored = StoredSnapshotRef { meta, data };
    let bytes = edgerun_model::encode(&stored).map_err(|e| e.to_string())?;
    db.open_tree("snapshot")
        .and_then(|t| t.insert(CURRENT, bytes))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// openraft's state machine, backed by memory and sled snapshots.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
    snapshots: sled::Tree,
    db: sled::Db,
}

fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotFile, String> {
    let f: SnapshotFile = edgerun_model::decode(bytes).map_err(|e| e.to_string())?;
    if f.version != FORMAT_VERSION {
        return Err(format!(
            "snapshot format {} is not {FORMAT_VERSION}, the one this build reads",
            f.version
        ));
    }
    Ok(f)
}

impl StateMachineStore {
    /// Open the store, loading the last snapshot if there is one.
    pub fn open(db: &sled::Db) -> Result<StateMachineStore, StorageError> {
        let snapshots = db
            .open_tree("snapshot")
            .map_err(|e| sm_error(ErrorVerb::Read, e))?;
        let mut data = SmData {
            last_applied: None,
            membership: StoredMembership::default(),
            state: ClusterState::new(),
        };
        if let Some(raw) = snapshots
            .get(CURRENT)
            .map_err(|e| sm_error(ErrorVerb::Read, e))?
        {
            let stored: StoredSnapshot =
                edgerun_model::decode(&raw).map_err(|e| sm_error(ErrorVerb::Read, e))?;
            let f = decode_snapshot(&stored.data).map_err(|e| {
                StorageError::from(StorageIOError::<NodeId>::read_snapshot(
                    Some(stored.meta.signature()),
                    &std::io::Error::other(e),
                ))
            })?;
            data.last_applied = f.last_applied;
            data.membership = f.membership;
            data.state = f.state;
            data.state.rebuild_indexes();
        }
        let applied = data.last_applied.map_or(0, |l| l.index);
        let (events, _) = broadcast::channel(4096);
        let (applied, _) = watch::channel(applied);
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                data: RwLock::new(data),
                events,
                applied,
            }),
            snapshots,
            db: db.clone(),
        })
    }

    pub fn view(&self) -> StateView {
        StateView {
            shared: self.shared.clone(),
        }
    }

    fn store_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let stored = StoredSnapshotRef { meta, data };
        let bytes = edgerun_model::encode(&stored).map_err(|e| {
            StorageError::from(StorageIOError::<NodeId>::write_snapshot(
                Some(meta.signature()),
                &e,
            ))
        })?;
        self.snapshots.insert(CURRENT, bytes).map_err(|e| {
            StorageError::from(StorageIOError::<NodeId>::write_snapshot(
                Some(meta.signature()),
                &e,
            ))
        })?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (bytes, meta) = {
            let d = self.shared.read();
            let file = SnapshotFileRef {
                version: FORMAT_VERSION,
                last_applied: &d.last_applied,
                membership: &d.membership,
                state: &d.state,
            };
            let bytes = edgerun_model::encode(&file).map_err(|e| sm_error(ErrorVerb::Write, e))?;
            let id = match d.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, bytes.len()),
                None => format!("0-0-{}", bytes.len()),
            };
            let meta = SnapshotMeta {
                last_log_id: d.last_applied,
                last_membership: d.membership.clone(),
                snapshot_id: id,
            };
            (bytes, meta)
        };
        self.store_snapshot(&meta, &bytes)?;
        self.db.flush_async().await.map_err(|e| {
            StorageError::from(StorageIOError::<NodeId>::write_snapshot(
                Some(meta.signature()),
                &e,
            ))
        })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let d = self.shared.read();
        Ok((d.last_applied, d.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        let mut events = Vec::new();
        let last = {
            let mut d = self.shared.write();
            for e in entries {
                d.last_applied = Some(e.log_id);
                match e.payload {
                    EntryPayload::Blank => out.push(Response::Empty),
                    EntryPayload::Normal(req) => out.push(d.state.apply(&req, &mut events)),
                    EntryPayload::Membership(m) => {
                        d.membership = StoredMembership::new(Some(e.log_id), m);
                        out.push(Response::Empty);
                    }
                }
            }
            d.last_applied.map_or(0, |l| l.index)
        };
        if !events.is_empty()
            && tracing::enabled!(target: edgerun_model::TRACE_TARGET, tracing::Level::DEBUG)
        {
            let d = self.shared.read();
            for ev in &events {
                if let Some(t) = d.state.task(ev.id) {
                    tracing::debug!(
                        target: edgerun_model::TRACE_TARGET,
                        trace_id = %t.spec.trace_id,
                        task = ev.id,
                        status = ev.status.as_str(),
                        node = ?ev.node,
                        attempt = ev.attempt,
                        index = last,
                        "applied"
                    );
                }
            }
        }
        if !events.is_empty() {
            // No receiver is fine: nobody is listening yet.
            let _ = self.shared.events.send(StateEvent::Tasks(Arc::new(events)));
        }
        self.shared.applied.send_replace(last);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let mut f = decode_snapshot(&bytes).map_err(|e| {
            StorageError::from(StorageIOError::<NodeId>::read_snapshot(
                Some(meta.signature()),
                &std::io::Error::other(e),
            ))
        })?;
        f.state.rebuild_indexes();
        self.store_snapshot(meta, &bytes)?;
        {
            let mut d = self.shared.write();
            d.last_applied = meta.last_log_id;
            d.membership = meta.last_membership.clone();
            d.state = f.state;
        }
        self.db.flush_async().await.map_err(|e| {
            StorageError::from(StorageIOError::<NodeId>::write_snapshot(
                Some(meta.signature()),
                &e,
            ))
        })?;
        let _ = self.shared.events.send(StateEvent::Reset);
        self.shared
            .applied
            .send_replace(meta.last_log_id.map_or(0, |l| l.index));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some(raw) = self
            .snapshots
            .get(CURRENT)
            .map_err(|e| sm_error(ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        let stored: StoredSnapshot =
            edgerun_model::decode(&raw).map_err(|e| sm_error(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
