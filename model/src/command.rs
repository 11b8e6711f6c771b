//! The Raft log's payload: commands proposed by nodes and the responses `apply` returns.
//!
//! Every command carries the proposer's clock (`now_ms`) so that `apply` never reads one.
//! Commands are batched: one Raft entry carries many submissions, assignments or
//! completions, or a [`Command::Batch`] of unrelated commands gathered while an earlier write
//! was in flight (group commit).

use serde::{Deserialize, Serialize};

use crate::job::{JobSpec, SlotDecision};
use crate::node::{NodeId, NodeInfo};
use crate::stream::{StreamAction, StreamId, StreamReport, StreamSpec, StreamStatus};
use crate::task::{Isolation, JobId, TaskError, TaskId, TaskSpec, TaskStatus};

/// One Raft entry's application data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RaftRequest {
    /// [`crate::FORMAT_VERSION`] of the proposer.
    pub version: u16,
    pub command: Command,
}

impl Command {
    /// The trace ids of the tasks this command submits (none for other commands), joined with
    /// commas, for log lines.
    pub fn trace_ids(&self) -> String {
        fn walk<'a>(c: &'a Command, out: &mut Vec<&'a str>) {
            match c {
                Command::Submit { tasks, .. } => {
                    for t in tasks {
                        if !t.trace_id.is_empty() && !out.contains(&t.trace_id.as_str()) {
                            out.push(&t.trace_id);
                        }
                    }
                }
                Command::Batch(cs) => cs.iter().for_each(|c| walk(c, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out.join(",")
    }
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
    /// Create tasks (one REST call or many, batched). All or none: a submission over an
    /// admission limit stores nothing.
    Submit {
        now_ms: u64,
        tasks: Vec<TaskSpec>,
        admission: Admission,
    },
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
    Cancel {
        now_ms: u64,
        ids: Vec<TaskId>,
    },
    /// A node announces itself (on every start).
    RegisterNode {
        now_ms: u64,
        node: NodeInfo,
    },
    /// The leader saw no heartbeat from `node` for its lease: mark it down and put its
    /// unfinished tasks back to pending (their next placement is a new attempt).
    NodeDown {
        now_ms: u64,
        node: NodeId,
    },
    /// A node that was down is heard from again.
    NodeUp {
        now_ms: u64,
        node: NodeId,
    },
    /// Evict these running attempts so that a higher-priority task fits: they go back to
    /// pending and the attempt does not count against their retries.
    Preempt {
        now_ms: u64,
        victims: Vec<AttemptRef>,
    },
    /// Put dead-lettered tasks back to pending with a fresh set of attempts.
    Requeue {
        now_ms: u64,
        ids: Vec<TaskId>,
    },
    /// Forget finished tasks (retention). Unfinished ones are never collected.
    Collect {
        now_ms: u64,
        ids: Vec<TaskId>,
    },
    CreateJob {
        now_ms: u64,
        spec: Box<JobSpec>,
    },
    DeleteJob {
        now_ms: u64,
        id: JobId,
    },
    /// Decide slots of a periodic job, in increasing order; slots at or before the job's last
    /// decided slot are refused.
    Fire {
        now_ms: u64,
        job: JobId,
        slots: Vec<SlotDecision>,
    },
    /// Several commands in one entry, applied in order.
    Batch(Vec<Command>),
    // Format 7 (stream jobs). New variants go last: the ones above keep their tags, so
    // entries written by format 6 still decode and apply.
    CreateStream {
        now_ms: u64,
        spec: Box<StreamSpec>,
    },
    /// Pause, resume or delete a stream job.
    StreamControl {
        now_ms: u64,
        id: StreamId,
        action: StreamAction,
    },
    /// The leader's Scheduler places a waiting stream job (`epoch` = the job's + 1).
    PlaceStream {
        now_ms: u64,
        id: StreamId,
        node: NodeId,
        epoch: u64,
    },
    /// A runner's state, checkpoint and results (fenced by node and epoch).
    StreamReport {
        now_ms: u64,
        report: Box<StreamReport>,
    },
    // Format 8 (WebAssembly modules).
    /// Store an uploaded module (validated by the proposer's wasm runtime).
    PutModule {
        module: Box<crate::module::WasmModule>,
    },
    /// Remove a module, unless a task that has not ended or a job's template uses it.
    DeleteModule {
        id: String,
    },
}

/// Limits a submission is checked against when applied (from the proposer's config, so every
/// node decides the same). Zero = no limit.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default)]
pub struct Admission {
    /// Most pending tasks in the cluster.
    pub max_pending: u64,
    /// Most pending tasks of one submitter.
    pub max_pending_per_submitter: u64,
    /// How long an idempotency key is remembered.
    pub idempotency_window_ms: u64,
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
    /// Succeeded with a result too big for the log: it is stored on `node` (see
    /// `ResultRef`).
    Stored {
        node: NodeId,
        bytes: u64,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Completion {
    pub attempt: AttemptRef,
    pub outcome: Outcome,
    pub isolation: Isolation,
    /// The result was found in the result cache; the kernel did not run.
    pub cached: bool,
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
    /// A submission over an admission limit: nothing was stored.
    Rejected {
        code: String,
        message: String,
        retry_after_ms: u64,
    },
    /// Per requeued id: whether it went back to pending; `None` for an unknown id.
    Requeued(Vec<Option<bool>>),
    Collected(u64),
    JobCreated(JobId),
    JobDeleted(bool),
    /// Tasks made by a Fire, and how many slots were refused as already decided.
    Fired {
        tasks: Vec<TaskId>,
        refused: u32,
    },
    StreamCreated(StreamId),
    /// The job's status after a pause/resume/delete; `None` for an unknown job.
    StreamChanged(Option<StreamStatus>),
    /// Openraft's own entries (blank, membership) carry no command.
    Empty,
    /// The request's format version is not one this node knows.
    UnsupportedVersion(u16),
    // Format 8.
    /// PutModule: whether the module is new (false: the same bytes were there).
    ModulePut {
        created: bool,
    },
    /// DeleteModule: removed, unknown, or what uses it.
    ModuleDeleted(Result<bool, String>),
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Submitted {
    pub id: TaskId,
    pub created: bool,
}
