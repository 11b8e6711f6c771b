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
//! Failure policy: Raft errors go back to each proposer through its reply port; the actor
//! only dies on injected failures. A restart loses queued proposals (their callers see
//! `Unavailable` and may retry); writes already handed to Raft complete regardless.

use edgerun_model::{Command, RaftRequest, Response};
use edgerun_raft::{ClientWriteError, Raft, RaftError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::child::Slot;
use crate::metrics_names as m;
use crate::InjectedFailure;

/// Writes handed to Raft at once. openraft pipelines them; more than a couple only makes
/// batches smaller.
const MAX_INFLIGHT: usize = 2;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProposeError {
    /// No leader is known yet (election in progress).
    #[error("no leader yet; retry shortly")]
    NoLeader,
    /// Another node leads; this build does not forward (single-node).
    #[error("node {leader} is the leader")]
    NotLeader { leader: u64, api: Option<String> },
    /// The StateShard is restarting or the node is stopping.
    #[error("the state shard is not running (restarting or shutting down)")]
    Unavailable,
    #[error("raft: {0}")]
    Raft(String),
}

pub enum ShardMsg {
    Propose {
        cmd: Command,
        reply: RpcReplyPort<Result<Response, ProposeError>>,
    },
    /// A write handed to Raft has finished.
    WriteDone,
    /// Fault injection.
    Fail,
}

pub struct StateShard;

pub struct ShardArgs {
    pub raft: Raft,
    pub max_batch: usize,
}

pub struct ShardState {
    raft: Raft,
    max_batch: usize,
    queue: Vec<(Command, RpcReplyPort<Result<Response, ProposeError>>)>,
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
        other => ProposeError::Raft(other.to_string()),
    }
}

impl ShardState {
    fn flush(&mut self, myself: &ActorRef<ShardMsg>) {
        while self.inflight < MAX_INFLIGHT && !self.queue.is_empty() {
            let n = self.queue.len().min(self.max_batch);
            let items: Vec<_> = self.queue.drain(..n).collect();
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
            let raft = self.raft.clone();
            let me = myself.clone();
            tokio::spawn(async move {
                let res = raft.client_write(RaftRequest::new(cmd)).await;
                match res {
                    Ok(w) => {
                        let data = w.data;
                        match (combined, data) {
                            (true, Response::Batch(rs)) if rs.len() == replies.len() => {
                                for (reply, r) in replies.into_iter().zip(rs) {
                                    let _ = reply.send(Ok(r));
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
                                    let _ = reply.send(Ok(r.clone()));
                                }
                            }
                        }
                    }
                    Err(e) => {
                        let err = map_write_error(e);
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
            raft: args.raft,
            max_batch: args.max_batch.max(1),
            queue: Vec::new(),
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
            ShardMsg::Propose { cmd, reply } => {
                state.queue.push((cmd, reply));
                state.flush(&myself);
            }
            ShardMsg::WriteDone => {
                state.inflight = state.inflight.saturating_sub(1);
                state.flush(&myself);
            }
            ShardMsg::Fail => return Err(Box::new(InjectedFailure)),
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

    /// Propose one command and wait until it is committed and applied.
    pub async fn propose(&self, cmd: Command) -> Result<Response, ProposeError> {
        let Some(shard) = self.shard.get() else {
            return Err(ProposeError::Unavailable);
        };
        match shard
            .call(|reply| ShardMsg::Propose { cmd, reply }, None)
            .await
        {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            _ => Err(ProposeError::Unavailable),
        }
    }
}
