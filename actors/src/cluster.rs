//! The cluster side of a node: the RPC server's application handler, linearizable reads,
//! membership changes, and the ClusterRpc actor that owns the listener.
//!
//! ```text
//!  peer ──frame──▶ ClusterRpc listener ─┬─ Raft messages ──▶ openraft
//!                                        └─ AppRequest ──▶ LeaderHandler
//!                                             Propose   ──▶ Proposer::propose_local
//!                                             ReadIndex ──▶ raft.ensure_linearizable
//!                                             Heartbeat ──▶ Scheduler
//!                                             Membership ─▶ raft.add_learner / change_membership
//! ```
//!
//! Failure policy: a request this node cannot serve (not the leader) is answered
//! `NotLeader`; the listener actor dies only if its socket fails, and is restarted.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use edgerun_model::FORMAT_VERSION;
use edgerun_raft::openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use edgerun_raft::openraft::ChangeMembers;
use edgerun_raft::server::AppHandler;
use edgerun_raft::{AppRequest, AppResponse, MembershipChange, RaftNode, RemoteError};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::child::Slot;
use crate::scheduler::SchedulerMsg;
use crate::{ProposeError, Proposer};

/// Answers application requests from other nodes.
pub struct LeaderHandler {
    pub node: RaftNode,
    pub proposer: Proposer,
    pub scheduler: Slot<SchedulerMsg>,
    pub results: edgerun_raft::ResultStore,
    /// Stream jobs running here that take POSTed records.
    pub ingress: crate::streams::Ingress,
    /// Stream checkpoints kept here by hash for other nodes' runners.
    pub checkpoints: edgerun_raft::CheckpointStore,
}

impl LeaderHandler {
    fn not_leader(&self) -> RemoteError {
        RemoteError::NotLeader {
            me: self.node.id,
            leader: self.node.leader().map(|(l, _)| l),
        }
    }

    /// How a failure on the leader travels back to the follower that asked.
    fn remote(&self, e: ProposeError) -> RemoteError {
        match e {
            ProposeError::NotLeader { .. } | ProposeError::NoLeader => self.not_leader(),
            ProposeError::NoQuorum(_)
            | ProposeError::Lagging { .. }
            | ProposeError::NotCommitted { .. }
            | ProposeError::Unavailable
            | ProposeError::RaftStopped(_)
            | ProposeError::LeaderUnreachable { .. }
            | ProposeError::LeaderUnavailable { .. } => RemoteError::Unavailable(e.to_string()),
            ProposeError::Rejected(_) | ProposeError::Raft(_) | ProposeError::Answer { .. } => {
                RemoteError::Failed(e.to_string())
            }
        }
    }

    async fn answer(&self, req: AppRequest) -> AppResponse {
        match req {
            AppRequest::Propose(r) => {
                if r.version != FORMAT_VERSION {
                    return AppResponse::Proposed(Err(RemoteError::Failed(format!(
                        "request format {} is not {FORMAT_VERSION}, the one this node speaks",
                        r.version
                    ))));
                }
                if tracing::enabled!(target: edgerun_model::TRACE_TARGET, tracing::Level::DEBUG) {
                    let traces = r.command.trace_ids();
                    if !traces.is_empty() {
                        tracing::debug!(target: edgerun_model::TRACE_TARGET, trace_id = %traces, "proposing a write forwarded by a follower");
                    }
                }
                AppResponse::Proposed(
                    self.proposer
                        .propose_local(r.command)
                        .await
                        .map_err(|e| self.remote(e)),
                )
            }
            AppRequest::ReadIndex => AppResponse::ReadIndex(
                leader_read_index(&self.node)
                    .await
                    .map_err(|e| self.remote(e)),
            ),
            AppRequest::Heartbeat(hb) => {
                if !self.node.is_leader() {
                    return AppResponse::Heartbeat(Err(self.not_leader()));
                }
                if let Some(s) = self.scheduler.get() {
                    let _ = s.cast(SchedulerMsg::Heartbeat(hb));
                }
                AppResponse::Heartbeat(Ok(()))
            }
            AppRequest::FetchResult { task, attempt } => AppResponse::Result(
                self.results
                    .get(task, attempt)
                    .map_err(|e| RemoteError::Failed(e.to_string())),
            ),
            AppRequest::StreamRecords {
                stream,
                body,
                batch_id,
            } => AppResponse::StreamRecords(
                self.ingress
                    .offer(stream, body, batch_id, crate::streams::INGEST_WAIT)
                    .await,
            ),
            AppRequest::PutCheckpoint {
                stream,
                seq,
                sha256,
                data,
            } => AppResponse::CheckpointStored(
                self.checkpoints
                    .put(stream, seq, &sha256, &data, crate::now_ms())
                    .await
                    .map_err(|e| RemoteError::Failed(e.to_string())),
            ),
            AppRequest::FetchCheckpoint { stream, sha256 } => AppResponse::Checkpoint(
                self.checkpoints
                    .get(stream, &sha256)
                    .map_err(|e| RemoteError::Failed(e.to_string())),
            ),
            AppRequest::Membership(change) => AppResponse::Membership(
                apply_membership(&self.node, change)
                    .await
                    .map_err(|e| self.remote(e)),
            ),
        }
    }
}

impl AppHandler for LeaderHandler {
    fn handle(&self, req: AppRequest) -> Pin<Box<dyn Future<Output = AppResponse> + Send + '_>> {
        Box::pin(self.answer(req))
    }
}

fn membership_error(
    e: RaftError<u64, ClientWriteError<u64, edgerun_raft::Member>>,
) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match f.leader_id {
            Some(leader) => ProposeError::NotLeader {
                leader,
                api: f.leader_node.map(|n| n.api),
            },
            None => ProposeError::NoLeader,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            ProposeError::Rejected(c.to_string())
        }
        RaftError::Fatal(f) => ProposeError::RaftStopped(f.to_string()),
    }
}

/// How far behind the leader's log a node may be and still count as caught up (it is
/// replicating; under load a healthy follower trails by a few hundred entries).
const CAUGHT_UP_LAG: u64 = 1000;

/// Refuse changes that would hurt the cluster: adding a voter (the leader included) again as
/// a learner, or a learner again under other addresses; promoting a learner that has not caught up
/// (with it a voter, a quorum may be out of reach), removing the last voter, removing the
/// leader itself (openraft keeps a removed leader running as a non-member for a while; stop
/// it instead and remove it through another node), or removing a voter when too few of the
/// rest are reachable to form a quorum.
fn check_membership(node: &RaftNode, change: &MembershipChange) -> Result<(), ProposeError> {
    let m = node.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let last = m.last_log_index.unwrap_or(0);
    let caught_up = |id: u64| -> Option<u64> {
        if id == node.id {
            return Some(last);
        }
        m.replication
            .as_ref()
            .and_then(|r| r.get(&id).copied().flatten())
            .map(|l| l.index)
            .filter(|i| i + CAUGHT_UP_LAG >= last)
    };
    match change {
        MembershipChange::AddLearner { id, member } => {
            if voters.contains(id) {
                return Err(ProposeError::Rejected(format!(
                    "node {id} is already a voter"
                )));
            }
            if let Some((other, _)) = membership
                .nodes()
                .find(|(other, n)| *other != id && (n.rpc == member.rpc || n.api == member.api))
            {
                return Err(ProposeError::Rejected(format!(
                    "node {other} already uses rpc {} or api {}: every member needs its own addresses",
                    member.rpc, member.api
                )));
            }
            match membership.get_node(id) {
                Some(known) if known != member => Err(ProposeError::Rejected(format!(
                    "node {id} is already a learner at rpc {} / api {}; remove it first to change its addresses",
                    known.rpc, known.api
                ))),
                _ => Ok(()),
            }
        }
        MembershipChange::Promote { id } => {
            if voters.contains(id) {
                return Ok(()); // already one: nothing to do
            }
            if !membership.learner_ids().any(|l| l == *id) {
                return Err(ProposeError::Rejected(format!(
                    "node {id} is not a learner of this cluster (add it with POST /v1/cluster/learners first)"
                )));
            }
            if caught_up(*id).is_none() {
                return Err(ProposeError::Rejected(format!(
                    "node {id} has not caught up with the log (leader at {last}); promoting it now could leave the cluster without a quorum: wait until it replicates"
                )));
            }
            Ok(())
        }
        MembershipChange::Remove { id } => {
            if *id == node.id {
                return Err(ProposeError::Rejected(format!(
                    "node {id} is the leader: stop it (another voter takes over) and remove it through another node"
                )));
            }
            if voters.contains(id) {
                let rest: Vec<u64> = voters.iter().copied().filter(|v| v != id).collect();
                if rest.is_empty() {
                    return Err(ProposeError::Rejected(format!(
                        "node {id} is the last voter"
                    )));
                }
                let reachable = rest.iter().filter(|v| caught_up(**v).is_some()).count();
                if reachable * 2 <= rest.len() {
                    return Err(ProposeError::Rejected(format!(
                        "without node {id}, only {reachable} of the {} remaining voters are caught up: no quorum",
                        rest.len()
                    )));
                }
            }
            Ok(())
        }
    }
}

/// Run a membership change on this node (it must lead).
async fn apply_membership(node: &RaftNode, change: MembershipChange) -> Result<(), ProposeError> {
    if node.raft.metrics().borrow().current_leader == Some(node.id) {
        check_membership(node, &change)?;
    }
    let raft = &node.raft;
    match change {
        MembershipChange::AddLearner { id, member } => {
            raft.add_learner(id, member, true)
                .await
                .map_err(membership_error)?;
        }
        MembershipChange::Promote { id } => {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(membership_error)?;
        }
        MembershipChange::Remove { id } => {
            let m = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .clone();
            if m.voter_ids().any(|v| v == id) {
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
                    .map_err(membership_error)?;
            }
            raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(membership_error)?;
        }
    }
    Ok(())
}

/// Run a membership change on the leader, wherever it is.
pub(crate) async fn change_membership(
    node: &RaftNode,
    change: MembershipChange,
    timeout: Duration,
) -> Result<(), ProposeError> {
    match node.leader() {
        None => Err(ProposeError::NoLeader),
        Some((l, _)) if l == node.id => apply_membership(node, change).await,
        Some((l, None)) => Err(ProposeError::LeaderUnreachable {
            leader: l,
            message: "its address is unknown".into(),
        }),
        Some((l, Some(member))) => {
            match node.peers.membership(&member.rpc, change, timeout).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(RemoteError::NotLeader { .. })) => Err(ProposeError::NoLeader),
                Ok(Err(RemoteError::Failed(m))) => Err(ProposeError::Rejected(m)),
                Ok(Err(RemoteError::Unavailable(message))) => {
                    Err(ProposeError::LeaderUnavailable { leader: l, message })
                }
                Err(e) => Err(ProposeError::LeaderUnreachable {
                    leader: l,
                    message: e.to_string(),
                }),
            }
        }
    }
}

/// On the leader: confirm leadership with a quorum and name the log index a linearizable
/// read must wait for.
///
/// openraft's read index is `max(committed, first log of this term)`. A leader that restarts
/// without losing its term keeps the old term's first log and reloads `committed` from disk,
/// where it may lag (it is not flushed on every change), so that index can be too low. The
/// leader's last log index is never too low: every acknowledged write is in it. Waiting for it
/// costs at most one replication round.
async fn leader_read_index(node: &RaftNode) -> Result<u64, ProposeError> {
    let read = match node.raft.ensure_linearizable().await {
        Ok(id) => id.map_or(0, |l| l.index),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
            return Err(ProposeError::NoLeader)
        }
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q))) => {
            return Err(ProposeError::NoQuorum(q.to_string()))
        }
        Err(RaftError::Fatal(f)) => return Err(ProposeError::RaftStopped(f.to_string())),
    };
    let last = node.raft.metrics().borrow().last_log_index.unwrap_or(0);
    Ok(read.max(last))
}

/// Wait until this node has applied the log up to `index` (a write it proposed was committed
/// there): then it reads what it wrote, without asking the leader.
pub(crate) async fn wait_applied(
    node: &RaftNode,
    index: u64,
    timeout: Duration,
) -> Result<(), ProposeError> {
    let mut applied = node.view.applied();
    let reached = tokio::time::timeout(timeout, applied.wait_for(|a| *a >= index)).await;
    match reached {
        Ok(Ok(_)) => Ok(()),
        _ => Err(ProposeError::Lagging {
            index,
            after: timeout,
        }),
    }
}

/// Wait until this node's state machine reflects every write committed before the call
/// (a linearizable read): the leader confirms its leadership with a quorum and names the
/// index; a follower asks the leader for it and waits to apply up to it.
pub(crate) async fn read_barrier(node: &RaftNode, timeout: Duration) -> Result<(), ProposeError> {
    let index = match node.leader() {
        None => return Err(ProposeError::NoLeader),
        Some((l, _)) if l == node.id => leader_read_index(node).await?,
        Some((l, None)) => {
            return Err(ProposeError::LeaderUnreachable {
                leader: l,
                message: "its address is unknown".into(),
            })
        }
        Some((l, Some(member))) => match node.peers.read_index(&member.rpc, timeout).await {
            Ok(Ok(i)) => i,
            Ok(Err(RemoteError::NotLeader { .. })) => return Err(ProposeError::NoLeader),
            Ok(Err(RemoteError::Failed(m))) => return Err(ProposeError::Raft(m)),
            Ok(Err(RemoteError::Unavailable(message))) => {
                return Err(ProposeError::LeaderUnavailable { leader: l, message })
            }
            Err(e) => {
                return Err(ProposeError::LeaderUnreachable {
                    leader: l,
                    message: e.to_string(),
                })
            }
        },
    };
    wait_applied(node, index, timeout).await
}

/// The listener takes no messages: it serves until it is stopped (node shutdown, or an
/// injected failure).
pub enum ClusterRpcMsg {}

/// Owns the cluster RPC listener.
pub struct ClusterRpc;

pub struct ClusterRpcArgs {
    pub listen: SocketAddr,
    pub handler: Arc<LeaderHandler>,
}

pub struct ClusterRpcState {
    server: tokio::task::JoinHandle<()>,
}

impl Actor for ClusterRpc {
    type Msg = ClusterRpcMsg;
    type State = ClusterRpcState;
    type Arguments = ClusterRpcArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ClusterRpcMsg>,
        args: ClusterRpcArgs,
    ) -> Result<ClusterRpcState, ActorProcessingErr> {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("binding cluster.listen {}: {e}", args.listen))?;
        tracing::info!(listen = %args.listen, "cluster RPC listening");
        let raft = args.handler.node.raft.clone();
        let key = args.handler.node.peers.key().clone();
        let server = edgerun_raft::server::serve(listener, raft, args.handler, key);
        Ok(ClusterRpcState { server })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ClusterRpcMsg>,
        state: &mut ClusterRpcState,
    ) -> Result<(), ActorProcessingErr> {
        state.server.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<ClusterRpcMsg>,
        msg: ClusterRpcMsg,
        _state: &mut ClusterRpcState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {}
    }
}
