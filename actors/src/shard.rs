//! StateShard: the one writer to Raft on this node.
//!
//! Proposals from every part of the node arrive as `Propose` messages. While a write is in
//! flight, new proposals queue; when it finishes, everything queued (up to
//! `raft.max_batch`) goes into one Raft entry as a `Command::Batch` (group commit). Under
//! load this turns thousands of small writes into a few large, flushed appends.
//!
//! ```text
//!  Proposer ──Propose(cmd, reply)──▶ StateShard ──client_write(Batch)──▶ openraft
//!                                      ▲   queue                             │
//!                                      └──────────── WriteDone ◀─────────────┘
//! ```
//!
//! On a follower the batch goes to the leader over cluster RPC (`AppRequest::Propose`); the
//! leader proposes it without forwarding again, so a write never bounces between nodes.
//!
//! Failure policy: Raft errors go back to each proposer through its reply port; the actor
//! only dies on injected failures. A restart loses queued proposals (their callers see
//! `Unavailable` and may retry); writes already handed to Raft complete regardless.

use std::time::Duration;

use edgerun_model::{Command, RaftRequest, Response};
use edgerun_raft::{ClientWriteError, RaftError, RaftNode, RemoteError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::child::Slot;
use crate::metrics_names as m;

/// Writes handed to Raft at once. openraft pipelines them; more than a couple only makes
/// batches smaller.
const MAX_INFLIGHT: usize = 2;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProposeError {
    /// No leader is known yet (election in progress).
    #[error("no leader yet; retry shortly")]
    NoLeader,
    /// Another node leads and this request may not be forwarded (it already was).
    #[error("node {leader} is the leader")]
    NotLeader { leader: u64, api: Option<String> },
    /// The leader could not be reached to forward the write.
    #[error("forwarding to the leader (node {leader}) failed: {message}")]
    LeaderUnreachable { leader: u64, message: String },
    /// The write was not committed in time (no quorum?); it may still be.
    #[error("the write was not committed within {after:?} (is a majority of voters up?)")]
    NotCommitted { after: std::time::Duration },
    /// The StateShard is restarting or the node is stopping.
    #[error("the state shard is not running (restarting or shutting down)")]
    Unavailable,
    /// The leader answered that it cannot serve the request now.
    #[error("the leader (node {leader}) cannot serve this now: {message}")]
    LeaderUnavailable { leader: u64, message: String },
    /// Raft stopped on this node (a storage error); the node is going down.
    #[error("raft stopped on this node: {0}")]
    RaftStopped(String),
    /// This node leads but cannot reach a majority of voters to confirm it.
    #[error("this node cannot reach a majority of voters: {0}")]
    NoQuorum(String),
    /// This node did not apply the log up to what a linearizable read needs in time.
    #[error("this node did not catch up to index {index} within {after:?}")]
    Lagging {
        index: u64,
        after: std::time::Duration,
    },
    /// The request was understood and refused (e.g. an invalid membership change).
    #[error("{0}")]
    Rejected(String),
    #[error("raft: {0}")]
    Raft(String),
    /// The state machine answered a command in another shape than that command's (a bug).
    #[error("{command} was answered {got}")]
    Answer { command: &'static str, got: String },
}

pub enum ShardMsg {
    Propose {
        cmd: Command,
        /// Whether a follower may forward this to the leader (false for writes that were
        /// forwarded here already, so they never bounce between nodes).
        forward: bool,
        reply: Reply,
    },
    /// A write handed to Raft has finished.
    WriteDone,
}

pub struct StateShard;

pub struct ShardArgs {
    pub node: RaftNode,
    pub max_batch: usize,
    pub forward_timeout: Duration,
}

/// The answer to a proposal and the log index of the entry that carried it.
type Reply = RpcReplyPort<Result<(Response, u64), ProposeError>>;

pub struct ShardState {
    node: RaftNode,
    max_batch: usize,
    forward_timeout: Duration,
    /// Proposals that may be forwarded, and those that may not, batch separately.
    queue: Vec<(Command, Reply)>,
    local_queue: Vec<(Command, Reply)>,
    inflight: usize,
}

fn map_write_error(e: RaftError<ClientWriteError>) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match f.leader_id {
            Some(leader) => ProposeError::NotLeader {
                leader,
                api: f.leader_node.map(|n| n.api),
            },
            None => ProposeError::NoLeader,
        },
        RaftError::Fatal(f) => ProposeError::RaftStopped(f.to_string()),
        other => ProposeError::Raft(other.to_string()),
    }
}

/// Write `req` through Raft: locally when this node leads, else (if allowed) through the
/// leader over cluster RPC.
async fn write(
    node: &RaftNode,
    req: RaftRequest,
    forward: bool,
    timeout: Duration,
) -> Result<(Response, u64), ProposeError> {
    let leader = node.leader();
    if let (true, Some((l, Some(member)))) = (forward, &leader) {
        if *l != node.id {
            return forward_to(node, *l, &member.rpc, req, timeout).await;
        }
    }
    // A leader that lost its quorum would wait forever: bound the wait. The write may still
    // commit later; the caller sees a retryable error (use idempotency keys to retry safely).
    // The request is kept for a forward only where one may follow: this node may forward and
    // does not believe it leads. As leader (or answering a forwarded write) it is handed to
    // Raft as is: a copy of every batch, strings and all, cost the leader ~5% of its CPU.
    let keep = (forward && leader.as_ref().is_none_or(|(l, _)| *l != node.id)).then(|| req.clone());
    let written = match tokio::time::timeout(timeout, node.raft.client_write(req)).await {
        Ok(w) => w,
        Err(_) => return Err(ProposeError::NotCommitted { after: timeout }),
    };
    match written {
        Ok(w) => Ok((w.data, w.log_id.index)),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            match (keep, f.leader_id, f.leader_node) {
                (Some(req), Some(l), Some(member)) if l != node.id => {
                    forward_to(node, l, &member.rpc, req, timeout).await
                }
                (_, Some(leader), member) => Err(ProposeError::NotLeader {
                    leader,
                    api: member.map(|m| m.api),
                }),
                (_, None, _) => Err(ProposeError::NoLeader),
            }
        }
        Err(e) => Err(map_write_error(e)),
    }
}

async fn forward_to(
    node: &RaftNode,
    leader: u64,
    rpc: &str,
    req: RaftRequest,
    timeout: Duration,
) -> Result<(Response, u64), ProposeError> {
    // A forwarded write waits for the leader's answer; when another node becomes leader
    // meanwhile (the old one is cut off or dead), waiting out the timeout would hold this
    // node's writes back long after the cluster recovered. Give up then: the write may or may
    // not have been committed, as with any timeout, and callers retry (idempotently).
    let moved = async {
        let mut m = node.raft.metrics();
        if m.wait_for(|m| m.current_leader.is_some_and(|x| x != leader))
            .await
            .is_err()
        {
            std::future::pending::<()>().await;
        }
    };
    if tracing::enabled!(target: edgerun_model::TRACE_TARGET, tracing::Level::DEBUG) {
        let traces = req.command.trace_ids();
        if !traces.is_empty() {
            tracing::debug!(target: edgerun_model::TRACE_TARGET, trace_id = %traces, leader, "forwarding to the leader");
        }
    }
    let answer = tokio::select! {
        a = node.peers.propose(rpc, req, timeout) => a,
        () = moved => {
            return Err(ProposeError::LeaderUnreachable {
                leader,
                message: "another node became leader while the write was forwarded; it may or may not have been committed".into(),
            })
        }
    };
    match answer {
        Ok(Ok(r)) => Ok(r),
        // Leadership moved while the request travelled: the caller retries after Retry-After.
        Ok(Err(RemoteError::NotLeader { .. })) => Err(ProposeError::NoLeader),
        Ok(Err(RemoteError::Failed(m))) => Err(ProposeError::Raft(m)),
        Ok(Err(RemoteError::Unavailable(message))) => {
            Err(ProposeError::LeaderUnavailable { leader, message })
        }
        Err(e) => Err(ProposeError::LeaderUnreachable {
            leader,
            message: e.to_string(),
        }),
    }
}

impl ShardState {
    fn flush(&mut self, myself: &ActorRef<ShardMsg>) {
        while self.inflight < MAX_INFLIGHT
            && !(self.queue.is_empty() && self.local_queue.is_empty())
        {
            let (forward, queue) = if self.queue.is_empty() {
                (false, &mut self.local_queue)
            } else {
                (true, &mut self.queue)
            };
            let n = queue.len().min(self.max_batch);
            let items: Vec<_> = queue.drain(..n).collect();
            let (cmds, replies): (Vec<_>, Vec<_>) = items.into_iter().unzip();
            let combined = cmds.len() > 1;
            let cmd = if combined {
                Command::Batch(cmds)
            } else {
                cmds.into_iter()
                    .next()
                    .unwrap_or(Command::Batch(Vec::new()))
            };
            metrics::counter!(m::RAFT_PROPOSALS).increment(replies.len() as u64);
            metrics::histogram!(m::RAFT_BATCH_SIZE).record(replies.len() as f64);
            self.inflight += 1;
            let node = self.node.clone();
            let timeout = self.forward_timeout;
            let me = myself.clone();
            tokio::spawn(async move {
                match write(&node, RaftRequest::new(cmd), forward, timeout).await {
                    Ok((data, index)) => match (combined, data) {
                        (true, Response::Batch(rs)) if rs.len() == replies.len() => {
                            for (reply, r) in replies.into_iter().zip(rs) {
                                let _ = reply.send(Ok((r, index)));
                            }
                        }
                        (true, other) => {
                            let msg = format!("batch answered with {other:?}");
                            for reply in replies {
                                let _ = reply.send(Err(ProposeError::Raft(msg.clone())));
                            }
                        }
                        (false, r) => {
                            for reply in replies {
                                let _ = reply.send(Ok((r.clone(), index)));
                            }
                        }
                    },
                    Err(err) => {
                        for reply in replies {
                            let _ = reply.send(Err(err.clone()));
                        }
                    }
                }
                // The shard may have been restarted meanwhile; then nobody needs this.
                let _ = me.cast(ShardMsg::WriteDone);
            });
        }
    }
}

impl Actor for StateShard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ShardMsg>,
        args: ShardArgs,
    ) -> Result<ShardState, ActorProcessingErr> {
        Ok(ShardState {
            node: args.node,
            max_batch: args.max_batch.max(1),
            forward_timeout: args.forward_timeout,
            queue: Vec::new(),
            local_queue: Vec::new(),
            inflight: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Propose {
                cmd,
                forward,
                reply,
            } => {
                if forward {
                    state.queue.push((cmd, reply));
                } else {
                    state.local_queue.push((cmd, reply));
                }
                state.flush(&myself);
            }
            ShardMsg::WriteDone => {
                state.inflight = state.inflight.saturating_sub(1);
                state.flush(&myself);
            }
        }
        Ok(())
    }
}

/// The handle every part of the node proposes through.
#[derive(Clone)]
pub struct Proposer {
    shard: Slot<ShardMsg>,
}

impl Proposer {
    pub fn new(shard: Slot<ShardMsg>) -> Proposer {
        Proposer { shard }
    }

    /// Propose one command and wait until it is committed and applied (on the leader, which
    /// this node forwards to when it is a follower).
    pub async fn propose(&self, cmd: Command) -> Result<Response, ProposeError> {
        self.send(cmd, true).await.map(|(r, _)| r)
    }

    /// Like [`Proposer::propose`], with the log index of the entry that carried the write:
    /// a node that waits until it has applied that index reads what it wrote.
    pub async fn propose_indexed(&self, cmd: Command) -> Result<(Response, u64), ProposeError> {
        self.send(cmd, true).await
    }

    /// Propose only if this node is the leader (for writes forwarded here by a follower).
    pub async fn propose_local(&self, cmd: Command) -> Result<(Response, u64), ProposeError> {
        self.send(cmd, false).await
    }

    async fn send(&self, cmd: Command, forward: bool) -> Result<(Response, u64), ProposeError> {
        let Some(shard) = self.shard.get() else {
            return Err(ProposeError::Unavailable);
        };
        match shard
            .call(
                |reply| ShardMsg::Propose {
                    cmd,
                    forward,
                    reply,
                },
                None,
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            _ => Err(ProposeError::Unavailable),
        }
    }
}
