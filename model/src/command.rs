//! The Raft log's payload: commands proposed by nodes and the responses `apply` returns.
//!
//! Every command carries the proposer's clock (`now_ms`) so that `apply` never reads one.
//! Commands are batched: one Raft entry carries many submissions, assignments or
//! completions, or a [`Command::Batch`] of unrelated commands gathered while an earlier write
//! was in flight (group commit).

use serde::{Deserialize, Serialize};

use crate::node::{NodeId, NodeInfo};
use crate::task::{Isolation, TaskError, TaskId, TaskSpec, TaskStatus};

/// One Raft entry's application data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RaftRequest {
    /// [`crate::FORMAT_VERSION`] of the proposer.
    pub version: u16,
    pub command: Command,
}

impl RaftRequest {
    pub fn new(command: Command) -> RaftRequest {
        RaftRequest {
            version: crate::FORMAT_VERSION,
            command,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Command {
    /// Create tasks (one REST call or many, batched).
    Submit { now_ms: u64, tasks: Vec<TaskSpec> },
    /// Place pending tasks on nodes (the leader's Scheduler).
    Assign {
        now_ms: u64,
        assignments: Vec<Assignment>,
    },
    /// A Worker began running these attempts.
    Start {
        now_ms: u64,
        starts: Vec<AttemptRef>,
    },
    /// A Worker finished these attempts.
    Complete {
        now_ms: u64,
        completions: Vec<Completion>,
    },
    /// Cancel tasks unless already ended.
    Cancel { now_ms: u64, ids: Vec<TaskId> },
    /// A node announces itself (on every start).
    RegisterNode { now_ms: u64, node: NodeInfo },
    /// The leader saw no heartbeat from `node` for its lease: mark it down and put its
    /// unfinished tasks back to pending (their next placement is a new attempt).
    NodeDown { now_ms: u64, node: NodeId },
    /// A node that was down is heard from again.
    NodeUp { now_ms: u64, node: NodeId },
    /// Several commands in one entry, applied in order.
    Batch(Vec<Command>),
}

/// Place `task` on `node` as attempt `attempt` (must be the task's attempt + 1).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Assignment {
    pub task: TaskId,
    pub node: NodeId,
    pub attempt: u32,
}

/// One attempt of one task on one node.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct AttemptRef {
    pub task: TaskId,
    pub node: NodeId,
    pub attempt: u32,
}

/// How an attempt ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Outcome {
    /// JSON text of the result.
    Succeeded {
        result: String,
    },
    /// `retryable` failures (a crash, a lost sandbox) go back to pending while attempts remain;
    /// deterministic ones (bad input) end the task at once. `output` is kept as the task's
    /// result when there is one (an exec task's exit code and streams).
    Failed {
        error: TaskError,
        retryable: bool,
        output: Option<String>,
    },
    TimedOut {
        after_ms: u64,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Completion {
    pub attempt: AttemptRef,
    pub outcome: Outcome,
    pub isolation: Isolation,
}

/// What `apply` answers for each command, in the same shape.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Response {
    /// One per submitted spec, in order; `created = false` when the idempotency key matched.
    Submitted(Vec<Submitted>),
    /// Per command item: whether the state machine took it (false = fenced or stale).
    Accepted(Vec<bool>),
    /// Per id: the status after the cancel, or `None` for an unknown id.
    Cancelled(Vec<Option<TaskStatus>>),
    NodeRegistered,
    /// NodeDown/NodeUp: whether the node's state changed, and the tasks put back to pending.
    NodeMarked {
        changed: bool,
        requeued: Vec<TaskId>,
    },
    Batch(Vec<Response>),
    /// Openraft's own entries (blank, membership) carry no command.
    Empty,
    /// The request's format version is not one this node knows.
    UnsupportedVersion(u16),
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Submitted {
    pub id: TaskId,
    pub created: bool,
}
