//! The state machine store: `model::ClusterState` in memory, snapshots in files.
//!
//! `apply` runs the deterministic `ClusterState::apply` for each entry and publishes the
//! resulting task events; [`StateView`] is the read side the rest of the node holds (reads
//! take a short read lock; nothing is awaited under it).
//!
//! Snapshots are the bincode [`SnapshotFile`] (format version, last applied log id,
//! membership, state), written straight to a file in the data directory's `snapshot/`
//! ([`crate::snapshot_files`]) and synced, so a restart loads it and openraft re-applies the
//! committed entries after it.

use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use edgerun_model::{ClusterState, Response, TaskEvent, FORMAT_VERSION};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorVerb, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::log_store::sm_error;
use crate::snapshot_files::SnapshotDir;
use crate::store_error::StoreError;
use crate::{
    Entry, LogId, NodeId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// What changed, for subscribers (Scheduler, Worker, waiters).
#[derive(Debug, Clone)]
pub enum StateEvent {
    /// Tasks changed by one batch of applied entries.
    Tasks(Arc<Vec<TaskEvent>>),
    /// The whole state was replaced (snapshot installed): rescan.
    Reset,
    /// Stream jobs changed (created, placed, paused, moved, reported).
    Streams,
}

/// The snapshot file format.
#[derive(Serialize, Deserialize)]
pub struct SnapshotFile {
    pub version: u16,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: ClusterState,
}

impl SnapshotFile {
    /// Read a snapshot of this build's format, or of the format before it (migrated: see
    /// `edgerun_model::migrate`). The version is read first, then the rest in its layout.
    pub fn read(mut r: impl std::io::Read) -> Result<SnapshotFile, String> {
        let version: u16 = edgerun_model::decode_from(&mut r)
            .map_err(|e| format!("the snapshot does not decode: {e}"))?;
        let bad = |e: edgerun_model::CodecError| format!("the snapshot does not decode: {e}");
        match version {
            FORMAT_VERSION => {
                let (last_applied, membership, state): (
                    Option<LogId>,
                    StoredMembership,
                    ClusterState,
                ) = edgerun_model::decode_from(r).map_err(bad)?;
                Ok(SnapshotFile {
                    version,
                    last_applied,
                    membership,
                    state,
                })
            }
            6 | 7 => {
                let (last_applied, membership, state): (
                    Option<LogId>,
                    StoredMembership,
                    ClusterState,
                ) = if version == 6 {
                    let (a, m, old): (_, _, edgerun_model::migrate::ClusterStateV6) =
                        edgerun_model::decode_from(r).map_err(bad)?;
                    (a, m, old.into())
                } else {
                    let (a, m, old): (_, _, edgerun_model::migrate::ClusterStateV7) =
                        edgerun_model::decode_from(r).map_err(bad)?;
                    (a, m, old.into())
                };
                tracing::info!(
                    from = version,
                    to = FORMAT_VERSION,
                    "migrating a snapshot of an earlier data format"
                );
                Ok(SnapshotFile {
                    version: FORMAT_VERSION,
                    last_applied,
                    membership,
                    state,
                })
            }
            v => Err(format!(
                "snapshot format {v} is not {FORMAT_VERSION}, the one this build reads (or {:?}, which it migrates)",
                edgerun_model::migrate::FROM
            )),
        }
    }
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

/// Make `data` (an encoded [`SnapshotFile`]) the current snapshot in `dir` (restore).
pub(crate) fn write_current(dir: &Path, meta: &SnapshotMeta, data: &[u8]) -> Result<(), String> {
    let snaps = SnapshotDir::open(dir)?;
    let w = snaps.write_data(|f| {
        std::io::Write::write_all(f, data).map_err(|source| StoreError::Stream {
            what: "writing the snapshot",
            source,
        })
    })?;
    snaps.commit(meta, w)?;
    Ok(())
}

/// openraft's state machine, backed by memory and snapshot files.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
    snaps: SnapshotDir,
}

fn decode_snapshot(f: &std::fs::File) -> Result<SnapshotFile, String> {
    SnapshotFile::read(std::io::BufReader::with_capacity(256 * 1024, f))
}

impl StateMachineStore {
    /// Open the store on `db` with its snapshots in `snapshot_dir`, loading the last
    /// snapshot if there is one (one kept in sled by an earlier edgerun is moved out first).
    pub fn open(db: &sled::Db, snapshot_dir: &Path) -> Result<StateMachineStore, StorageError> {
        let read_err = |e: StoreError| sm_error(ErrorVerb::Read, std::io::Error::other(e));
        let snaps = SnapshotDir::open(snapshot_dir).map_err(read_err)?;
        snaps.adopt_sled(db).map_err(read_err)?;
        let mut data = SmData {
            last_applied: None,
            membership: StoredMembership::default(),
            state: ClusterState::new(),
        };
        if let Some((meta, file, _)) = snaps.open_current().map_err(read_err)? {
            let f = decode_snapshot(&file).map_err(|e| {
                StorageError::from(StorageIOError::<NodeId>::read_snapshot(
                    Some(meta.signature()),
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
            snaps,
        })
    }

    pub fn view(&self) -> StateView {
        StateView {
            shared: self.shared.clone(),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let write_err = |sig: Option<openraft::storage::SnapshotSignature<NodeId>>, e: String| {
            StorageError::from(StorageIOError::<NodeId>::write_snapshot(
                sig,
                &std::io::Error::other(e),
            ))
        };
        // Encoded under the read lock (a consistent state, no copy of it), straight into a
        // buffered file; the lock is released before the last buffer is written and the file
        // is synced, so applying entries waits for the encoding only, not for the disk.
        let shared = self.shared.clone();
        let mut taken = None;
        let written = self
            .snaps
            .write_data(|f| {
                let d = shared.read();
                let file = SnapshotFileRef {
                    version: FORMAT_VERSION,
                    last_applied: &d.last_applied,
                    membership: &d.membership,
                    state: &d.state,
                };
                edgerun_model::encode_into(f, &file).map_err(|e| StoreError::Encode {
                    what: "the snapshot",
                    detail: e.to_string(),
                })?;
                taken = Some((d.last_applied, d.membership.clone()));
                Ok(())
            })
            .map_err(|e| write_err(None, e.to_string()))?;
        let Some((last_applied, membership)) = taken else {
            return Err(write_err(None, "the snapshot was not encoded".into()));
        };
        let id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, written.bytes),
            None => format!("0-0-{}", written.bytes),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id: id,
        };
        let path = self
            .snaps
            .commit(&meta, written)
            .map_err(|e| write_err(Some(meta.signature()), e.to_string()))?;
        let f = std::fs::File::open(&path)
            .map_err(|e| write_err(Some(meta.signature()), format!("{}: {e}", path.display())))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(f)),
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
        let streams_changed;
        let last = {
            let mut d = self.shared.write();
            let streams_before = d.state.streams.changes();
            for e in entries {
                d.last_applied = Some(e.log_id);
                match e.payload {
                    EntryPayload::Blank => out.push(Response::Empty),
                    EntryPayload::Normal(req) => out.push(d.state.apply_owned(req, &mut events)),
                    EntryPayload::Membership(m) => {
                        d.membership = StoredMembership::new(Some(e.log_id), m);
                        out.push(Response::Empty);
                    }
                }
            }
            streams_changed = d.state.streams.changes() != streams_before;
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
        if streams_changed {
            let _ = self.shared.events.send(StateEvent::Streams);
        }
        self.shared.applied.send_replace(last);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let f = self
            .snaps
            .receiving_file()
            .map_err(|e| sm_error(ErrorVerb::Write, std::io::Error::other(e)))?;
        Ok(Box::new(tokio::fs::File::from_std(f)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let err = |e: String| {
            StorageError::from(StorageIOError::<NodeId>::read_snapshot(
                Some(meta.signature()),
                &std::io::Error::other(e),
            ))
        };
        // Everything openraft wrote lands first; then the received bytes are copied into a
        // snapshot file of ours, decoded from it, and only a snapshot that decodes becomes
        // current.
        let mut received = snapshot.into_std().await;
        received
            .seek(SeekFrom::Start(0))
            .map_err(|e| err(e.to_string()))?;
        let written = self
            .snaps
            .write_data(|w| crate::snapshot_files::copy_into(&mut received, w).map(|_| ()))
            .map_err(|e| err(e.to_string()))?;
        let decoded = written
            .open()
            .map_err(String::from)
            .and_then(|file| decode_snapshot(&file));
        let mut f = match decoded {
            Ok(f) => f,
            Err(e) => {
                // Not current, so nothing refers to it.
                written.discard();
                return Err(err(e));
            }
        };
        f.state.rebuild_indexes();
        self.snaps
            .commit(meta, written)
            .map_err(|e| err(e.to_string()))?;
        {
            let mut d = self.shared.write();
            d.last_applied = meta.last_log_id;
            d.membership = meta.last_membership.clone();
            d.state = f.state;
        }
        let _ = self.shared.events.send(StateEvent::Reset);
        self.shared
            .applied
            .send_replace(meta.last_log_id.map_or(0, |l| l.index));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some((meta, file, _)) = self
            .snaps
            .open_current()
            .map_err(|e| sm_error(ErrorVerb::Read, std::io::Error::other(e)))?
        else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}
