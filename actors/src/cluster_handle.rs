//! `ClusterHandle`: what the REST API (and anything else outside the actors) may see and do
//! of this node's Raft replica, in plain types.
//!
//! - Reads: [`ClusterHandle::read`] (the replicated `ClusterState`), [`ClusterHandle::changes`]
//!   (what each apply changed), [`ClusterHandle::read_barrier`] and
//!   [`ClusterHandle::wait_applied`] (linearizable and read-your-writes reads).
//! - Raft as this node sees it: [`Leadership`], [`Readiness`] and [`RaftStatus`] (a snapshot
//!   of the metrics and the membership).
//! - Acts: [`ClusterHandle::change_membership`], [`ClusterHandle::fetch_result`] (a result
//!   kept off-Raft, from whichever node holds it), [`ClusterHandle::take_backup`], and the
//!   faults injected into outgoing cluster RPC ([`set_net_faults`], [`net_faults`]).
//!
//! No openraft or `edgerun_raft` type crosses this boundary: the `api` crate depends on
//! `actors` and `model` only, and reaches Raft through here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

pub use edgerun_model::NetFaults;
use edgerun_model::{ClusterState, NodeId, ResultRef, TaskEvent, TaskId};
use edgerun_raft::{RaftNode, ResultStore, StateEvent};
use tokio::sync::{broadcast, watch};

use crate::ProposeError;

/// This node's Raft replica: its id, the read side of its state machine, its metrics, its
/// peers, and the results it keeps off-Raft. Cheap to clone.
#[derive(Clone)]
pub struct ClusterHandle {
    node: RaftNode,
    results: ResultStore,
    ingress: crate::streams::Ingress,
}

/// Who leads, as this node knows it, and in which term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    pub leader: Option<NodeId>,
    pub term: u64,
}

/// Whether this node can serve requests now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// A leader is known and this node's state machine has applied entries (up to `applied`).
    Ready { leader: NodeId, applied: u64 },
    /// No leader is known (an election is under way, or no quorum).
    NoLeader,
    /// A leader is known but this node has applied nothing yet.
    CatchingUp { leader: NodeId },
    /// Calls to the leader fail fast (the circuit to it is open, until a heartbeat's probe
    /// gets through): a forwarded write or read would be refused now.
    LeaderFailing { leader: NodeId },
}

/// Whether a member votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Voter,
    Learner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Voter => "voter",
            Role::Learner => "learner",
        }
    }
}

/// A member of the Raft membership and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: NodeId,
    pub role: Role,
    /// Cluster RPC, host:port.
    pub rpc: String,
    /// REST API, host:port.
    pub api: String,
}

/// A snapshot of this node's Raft metrics (log positions are indexes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_applied: Option<u64>,
    pub last_log: Option<u64>,
    /// The last entry in the current snapshot.
    pub snapshot: Option<u64>,
    /// The last entry purged from the log.
    pub purged: Option<u64>,
    /// Voters and learners, by id.
    pub members: Vec<MemberInfo>,
    /// On the leader only (empty elsewhere): the last index each member's log is known to
    /// match (`None`: nothing matched yet).
    pub replication: BTreeMap<NodeId, Option<u64>>,
}

impl RaftStatus {
    pub fn member(&self, id: NodeId) -> Option<&MemberInfo> {
        self.members.iter().find(|m| m.id == id)
    }

    /// On the leader: how many entries `peer`'s log trails this node's (all of it when it has
    /// matched nothing yet). `None` when this node does not replicate to `peer`.
    pub fn lag(&self, peer: NodeId) -> Option<u64> {
        let matched = self.replication.get(&peer)?;
        let last = self.last_log.unwrap_or(0);
        Some(last.saturating_sub(matched.unwrap_or(0)))
    }
}

/// A change to the Raft membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a node that replicates but does not vote.
    AddLearner {
        id: NodeId,
        rpc: String,
        api: String,
    },
    /// Make a learner a voter.
    Promote { id: NodeId },
    /// Remove a voter or learner.
    Remove { id: NodeId },
}

impl From<MemberChange> for edgerun_raft::MembershipChange {
    fn from(c: MemberChange) -> Self {
        match c {
            MemberChange::AddLearner { id, rpc, api } => {
                edgerun_raft::MembershipChange::AddLearner {
                    id,
                    member: edgerun_raft::Member { rpc, api },
                }
            }
            MemberChange::Promote { id } => edgerun_raft::MembershipChange::Promote { id },
            MemberChange::Remove { id } => edgerun_raft::MembershipChange::Remove { id },
        }
    }
}

/// What one batch of applied entries changed.
#[derive(Debug, Clone)]
pub enum StateChange {
    /// Tasks changed.
    Tasks(Arc<Vec<TaskEvent>>),
    /// The whole state was replaced (a snapshot was installed): re-read what you need.
    Reset,
}

/// The changes applied from the moment of [`ClusterHandle::changes`] on.
pub struct StateChanges(broadcast::Receiver<StateEvent>);

impl StateChanges {
    /// The next change. `Lagged(n)`: this receiver was too slow and missed `n` batches;
    /// `Closed`: the state machine is gone. Cancel-safe.
    pub async fn recv(&mut self) -> Result<StateChange, broadcast::error::RecvError> {
        loop {
            match self.0.recv().await? {
                StateEvent::Tasks(batch) => return Ok(StateChange::Tasks(batch)),
                StateEvent::Reset => return Ok(StateChange::Reset),
                // Not a change readers of task events follow.
                StateEvent::Streams => continue,
            }
        }
    }
}

/// Why a result kept off-Raft could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    /// The node that holds it is not a registered node of the cluster.
    #[error("that node is not in the cluster")]
    NotInCluster,
    /// Its store failed, it could not be reached, or it refused.
    #[error("{0}")]
    Unavailable(String),
    /// The committed reference points at a result the node does not hold.
    #[error("node {node} has no stored result for task {task}")]
    Missing { node: NodeId, task: TaskId },
}

/// A backup of the replicated state (the file `edgerun backup` writes and `edgerun restore`
/// reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// SHA-256 of the snapshot, hex.
    pub sha256: String,
    /// The last log entry the state includes.
    pub last_index: u64,
    pub created_ms: u64,
    pub tasks: u64,
    /// Length of the snapshot inside the file (after the header line).
    pub snapshot_bytes: u64,
    /// The whole file: header line, then the snapshot.
    pub file: Vec<u8>,
}

/// Taking a backup failed (encoding the state).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BackupError(pub String);

/// Replace the faults on this process's outgoing cluster RPC (an empty value heals all).
pub fn set_net_faults(f: NetFaults) {
    edgerun_raft::faults::set(f);
}

/// The faults in force.
pub fn net_faults() -> NetFaults {
    edgerun_raft::faults::current()
}

impl ClusterHandle {
    pub fn new(
        node: RaftNode,
        results: ResultStore,
        ingress: crate::streams::Ingress,
    ) -> ClusterHandle {
        ClusterHandle {
            node,
            results,
            ingress,
        }
    }

    /// Records for stream job `id`'s `http` source: handed to its runner here, or forwarded
    /// to the node that runs it; answered once they are in a committed checkpoint.
    pub async fn ingest(
        &self,
        id: edgerun_model::StreamId,
        body: Vec<u8>,
        batch_id: Option<String>,
    ) -> Result<u64, edgerun_raft::IngestRefusal> {
        use edgerun_raft::IngestRefusal;
        let wait = crate::streams::INGEST_WAIT;
        let node = self.read(|s| s.streams.get(id).map(|j| j.node));
        let node = match node {
            None => return Err(IngestRefusal::Failed(format!("no stream job {id}"))),
            Some(None) => return Err(IngestRefusal::NotHere(id)),
            Some(Some(n)) => n,
        };
        if node == self.node.id {
            return self.ingress.offer(id, body, batch_id, wait).await;
        }
        let rpc = self.read(|s| s.nodes.get(&node).map(|n| n.rpc.clone()));
        let Some(rpc) = rpc else {
            return Err(IngestRefusal::NotHere(id));
        };
        match self
            .node
            .peers
            .stream_records(&rpc, id, body, batch_id, wait + Duration::from_secs(5))
            .await
        {
            Ok(r) => r,
            Err(e) => Err(IngestRefusal::Failed(format!(
                "forwarding to node {node}, which runs stream job {id}: {e}"
            ))),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.node.id
    }

    /// Read the replicated state as this node has applied it (a local read: call
    /// [`ClusterHandle::read_barrier`] first for a linearizable one). Keep `f` short: it
    /// holds the state machine's read lock.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        self.node.view.read(f)
    }

    /// The index of the last applied entry, updated after each apply.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.node.view.applied()
    }

    /// What every apply from now on changes.
    pub fn changes(&self) -> StateChanges {
        StateChanges(self.node.view.subscribe())
    }

    pub fn leadership(&self) -> Leadership {
        let rx = self.node.raft.metrics();
        let m = rx.borrow();
        Leadership {
            leader: m.current_leader,
            term: m.current_term,
        }
    }

    /// Whether this node is the leader it knows of.
    pub fn is_leader(&self) -> bool {
        self.node.is_leader()
    }

    /// Ready when a leader is known, this node's state machine has applied entries and (on a
    /// follower) calls to the leader are not failing fast.
    pub fn readiness(&self) -> Readiness {
        let (leader, applied, leader_rpc) = {
            let rx = self.node.raft.metrics();
            let m = rx.borrow();
            let rpc = m.current_leader.and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| n.rpc.clone())
            });
            (m.current_leader, m.last_applied.map(|l| l.index), rpc)
        };
        let circuit_open = match (leader, leader_rpc) {
            (Some(l), Some(rpc)) if l != self.node.id => self.node.peers.pool(&rpc).circuit_open(),
            _ => false,
        };
        match (leader, applied) {
            (Some(leader), Some(_)) if circuit_open => Readiness::LeaderFailing { leader },
            (Some(leader), Some(applied)) => Readiness::Ready { leader, applied },
            (Some(leader), None) => Readiness::CatchingUp { leader },
            (None, _) => Readiness::NoLeader,
        }
    }

    /// This node's Raft metrics and membership, now.
    pub fn status(&self) -> RaftStatus {
        let rx = self.node.raft.metrics();
        let m = rx.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, n)| MemberInfo {
                id: *id,
                role: if voters.contains(id) {
                    Role::Voter
                } else {
                    Role::Learner
                },
                rpc: n.rpc.clone(),
                api: n.api.clone(),
            })
            .collect();
        let replication = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, matched)| (*id, matched.map(|l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        RaftStatus {
            term: m.current_term,
            leader: m.current_leader,
            last_applied: m.last_applied.map(|l| l.index),
            last_log: m.last_log_index,
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
            members,
            replication,
        }
    }

    /// Whether `id` is a voter or learner of the membership this node knows.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.node
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some()
    }

    /// Wait until this node's state reflects every write committed before the call (a
    /// linearizable read).
    pub async fn read_barrier(&self, timeout: Duration) -> Result<(), ProposeError> {
        crate::cluster::read_barrier(&self.node, timeout).await
    }

    /// Wait until this node has applied the log up to `index` (where a write it proposed
    /// was committed).
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ProposeError> {
        crate::cluster::wait_applied(&self.node, index, timeout).await
    }

    /// Run a membership change on the leader, wherever it is (checked there first: a change
    /// that would cost the cluster its quorum is refused).
    pub async fn change_membership(
        &self,
        change: MemberChange,
        timeout: Duration,
    ) -> Result<(), ProposeError> {
        crate::cluster::change_membership(&self.node, change.into(), timeout).await
    }

    /// The result of `task` stored off-Raft under `at`: from this node's store, or over
    /// cluster RPC from the node that holds it (within `timeout`).
    pub async fn fetch_result(
        &self,
        task: TaskId,
        at: ResultRef,
        timeout: Duration,
    ) -> Result<String, ResultError> {
        let got = if at.node == self.node.id {
            self.results
                .get(task, at.attempt)
                .map_err(|e| ResultError::Unavailable(e.to_string()))?
        } else {
            let rpc = self
                .node
                .view
                .read(|s| s.nodes.get(&at.node).map(|n| n.rpc.clone()));
            let Some(rpc) = rpc else {
                return Err(ResultError::NotInCluster);
            };
            match self
                .node
                .peers
                .fetch_result(&rpc, task, at.attempt, timeout)
                .await
            {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return Err(ResultError::Unavailable(e.to_string())),
                Err(e) => return Err(ResultError::Unavailable(e.to_string())),
            }
        };
        got.ok_or(ResultError::Missing {
            node: at.node,
            task,
        })
    }

    /// A backup of the replicated state as this node has applied it, stamped now. Encodes
    /// the whole state: call it on a blocking thread.
    pub fn take_backup(&self) -> Result<Backup, BackupError> {
        let (info, file) =
            edgerun_raft::backup::take(&self.node.view, self.node.id, crate::now_ms())
                .map_err(|e| BackupError(e.to_string()))?;
        Ok(Backup {
            sha256: info.sha256,
            last_index: info.last_index,
            created_ms: info.created_ms,
            tasks: info.tasks,
            snapshot_bytes: info.bytes,
            file,
        })
    }
}
