//! Tasks: what a user submits ([`TaskSpec`]) and what the cluster records ([`Task`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::node::{NodeId, Tier};

/// Tasks are numbered by the state machine in submission order, starting at 1.
pub type TaskId = u64;

/// Where a task is in its life. See DESIGN.md "Task life".
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    Scheduled,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 7] = [
        TaskStatus::Pending,
        TaskStatus::Scheduled,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::TimedOut,
        TaskStatus::Cancelled,
    ];

    /// A terminal task never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded
                | TaskStatus::Failed
                | TaskStatus::TimedOut
                | TaskStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Scheduled => "scheduled",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::TimedOut => "timed_out",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// How a task's work was isolated when it ran; recorded on every finished task.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    Container,
    Process,
    Inproc,
    /// A WebAssembly module on the node's wasm runtime (format 8).
    Wasm,
    /// An HTTP call made by the node's HTTP client (format 8).
    Http,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Container => "container",
            Isolation::Process => "process",
            Isolation::Inproc => "inproc",
            Isolation::Wasm => "wasm",
            Isolation::Http => "http",
        }
    }
}

/// The work itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Work {
    /// A named kernel from the built-in registry. `input` is the JSON text the user sent,
    /// already validated against the kernel's schema at submission.
    Kernel { kernel: String, input: String },
    /// A command, like Nomad's exec driver (run by the container executor).
    Exec {
        argv: Vec<String>,
        env: BTreeMap<String, String>,
    },
    // Format 8. New variants go last: entries of earlier formats keep their tags.
    /// A WebAssembly module (by id, resolved at submission) with its arguments; `input` (JSON
    /// text) is its stdin.
    Wasm {
        module: String,
        args: Vec<String>,
        input: String,
    },
    /// An HTTP call made by the node (only to `executor.http_allow`).
    Http(Box<HttpCall>),
}

impl Work {
    /// `kernel`, `exec`, `wasm` or `http`.
    pub fn kind(&self) -> &'static str {
        match self {
            Work::Kernel { .. } => "kernel",
            Work::Exec { .. } => "exec",
            Work::Wasm { .. } => "wasm",
            Work::Http(_) => "http",
        }
    }
}

/// What an HTTP task calls.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HttpCall {
    /// GET, POST, PUT, PATCH, DELETE or HEAD.
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    /// JSON text sent as the body (with `content-type: application/json` unless a header
    /// says otherwise); none for no body.
    pub body: Option<String>,
    /// The statuses that count as success, inclusive.
    pub expect_status: (u16, u16),
}

/// Placement constraints: a task only runs on a node that matches all of them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Constraints {
    pub tier: Option<Tier>,
    /// Label key → the values accepted: one value is equality, several are set membership.
    pub labels: BTreeMap<String, Vec<String>>,
}

/// How the scheduler scores the nodes a task fits on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Fill the busiest node that still fits (fewer nodes busy, room kept for big tasks).
    Binpack,
    /// Use the least busy node (load spread evenly).
    #[default]
    Spread,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Binpack => "binpack",
            Placement::Spread => "spread",
        }
    }
}

/// A soft preference: nodes whose label `label` is one of `values` score `weight` more
/// (a negative weight is an anti-affinity). Never stops a task from running.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Affinity {
    pub label: String,
    pub values: Vec<String>,
    /// -100..=100.
    pub weight: i32,
}

/// Resources a task asks for; limits for its sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Resources {
    pub cpu_millis: Option<u32>,
    pub memory_mb: Option<u32>,
    /// The task needs the network (containers get none otherwise; the node must allow it).
    pub network: bool,
    /// Disk the task may write, in MiB (its writable directory, and the largest file it may
    /// write); `None` = the node's `executor.default_disk_mb`.
    pub disk_mb: Option<u32>,
}

/// How often and how soon a failed or timed-out task is tried again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, the first included. 1 = never retry.
    pub max_attempts: u32,
    /// Delay before attempt n+1 is `backoff_ms * 2^(n-1)`, capped at `max_backoff_ms`.
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// 0..=100: up to this share of each delay is taken off at random (seeded by task and
    /// attempt, so every node computes the same delay), so that many tasks failing together
    /// do not come back together.
    pub jitter_pct: u8,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff_ms: 200,
            max_backoff_ms: 60_000,
            jitter_pct: 0,
        }
    }
}

/// splitmix64: a fixed, well-mixed hash for deterministic jitter.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl RetryPolicy {
    /// Delay before the attempt after `attempt` (1-based, counted since the last requeue) of
    /// task `task`: exponential, capped, less a deterministic jitter.
    pub fn delay_after(&self, task: TaskId, attempt: u32) -> u64 {
        let shift = attempt.saturating_sub(1).min(40);
        let base = self
            .backoff_ms
            .saturating_mul(1u64 << shift)
            .min(self.max_backoff_ms);
        let pct = u64::from(self.jitter_pct.min(100));
        if pct == 0 || base == 0 {
            return base;
        }
        let span = base.saturating_mul(pct) / 100;
        let r = mix(task.rotate_left(32) ^ u64::from(attempt)) % (span + 1);
        base - r
    }
}

/// What a user asks the cluster to run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TaskSpec {
    pub work: Work,
    /// Higher runs first. Default 0.
    pub priority: i32,
    pub constraints: Constraints,
    pub resources: Resources,
    /// Wall-clock limit for one attempt; `None` = the node's default.
    pub timeout_ms: Option<u64>,
    pub retry: RetryPolicy,
    /// A resubmission with the same key returns the first task.
    pub idempotency_key: Option<String>,
    /// `None` = the cluster's default (`scheduler.placement`).
    pub placement: Option<Placement>,
    pub affinities: Vec<Affinity>,
    /// Run only after all of these tasks succeeded; fail if one of them does not.
    pub after: Vec<TaskId>,
    /// Who submitted it (the token's subject, or the client's address without auth): the
    /// unit of `limits.max_pending_per_submitter`.
    pub submitter: String,
    /// W3C trace id (32 lowercase hex digits) of the request that submitted it, or of the
    /// job slot that made it: every node's log lines about this task carry it (target
    /// `edgerun::trace`). Empty when unknown.
    pub trace_id: String,
    /// A deterministic kernel's result may come from (and goes into) the result cache.
    pub cache: bool,
}

impl TaskSpec {
    /// A kernel task with default settings.
    pub fn kernel(kernel: impl Into<String>, input: impl Into<String>) -> TaskSpec {
        TaskSpec {
            work: Work::Kernel {
                kernel: kernel.into(),
                input: input.into(),
            },
            priority: 0,
            constraints: Constraints::default(),
            resources: Resources::default(),
            timeout_ms: None,
            retry: RetryPolicy::default(),
            idempotency_key: None,
            placement: None,
            affinities: Vec::new(),
            after: Vec::new(),
            submitter: String::new(),
            trace_id: String::new(),
            cache: true,
        }
    }

    /// The kernel name, or `exec`.
    pub fn kind_name(&self) -> &str {
        match &self.work {
            Work::Kernel { kernel, .. } => kernel,
            Work::Exec { .. } => "exec",
            Work::Wasm { .. } => "wasm",
            Work::Http(_) => "http",
        }
    }
}

/// Why a task failed, in words a user can act on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TaskError {
    /// snake_case, stable: `invalid_input`, `kernel_error`, `timed_out`, `worker_crashed`, ...
    pub code: String,
    pub message: String,
}

/// A task as the cluster records it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Task {
    pub id: TaskId,
    pub spec: TaskSpec,
    pub status: TaskStatus,
    /// The current (or last) attempt, 1-based; 0 while never placed.
    pub attempt: u32,
    /// The node of the current attempt.
    pub node: Option<NodeId>,
    /// The node of the last attempt, kept when `node` is cleared (retry, node lost).
    pub last_node: Option<NodeId>,
    pub created_at_ms: u64,
    pub scheduled_at_ms: Option<u64>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// After a retryable failure: how long the next attempt waits. The leader counts it on its
    /// own monotonic clock from when it first sees the task waiting, so no node's wall clock
    /// (which may be wrong by hours) decides when a retry runs.
    pub retry_delay_ms: Option<u64>,
    /// JSON text of the result, set when the task succeeded.
    pub result: Option<String>,
    pub error: Option<TaskError>,
    pub isolation: Option<Isolation>,
    /// Attempts that do not count against `retry.max_attempts`: preempted ones, and all
    /// those before a requeue from the dead-letter queue.
    pub attempts_uncounted: u32,
    /// Times this task was evicted by a higher-priority one.
    pub preemptions: u32,
    /// Ended `failed`/`timed_out` with its attempts used up: listed in the dead-letter queue.
    pub dead_letter: bool,
    /// `after` tasks that have not succeeded yet (the task waits while this is not empty).
    pub waiting_on: Vec<TaskId>,
    /// Set when a periodic job made this task.
    pub job: Option<JobFire>,
    /// Where a result too big for the log lives (then `result` is none).
    pub result_ref: Option<ResultRef>,
    /// How the last attempts ended (at most [`ATTEMPT_LOG`]), oldest first.
    pub attempts_log: Vec<AttemptLog>,
    /// The result came from the result cache: the kernel did not run.
    pub cached: bool,
}

/// A result stored off-Raft on the node that made it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResultRef {
    pub node: NodeId,
    pub attempt: u32,
    pub bytes: u64,
}

/// Most attempts kept in a task's log.
pub const ATTEMPT_LOG: usize = 20;

/// One ended attempt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AttemptLog {
    pub attempt: u32,
    pub node: NodeId,
    pub scheduled_at_ms: Option<u64>,
    pub started_at_ms: Option<u64>,
    pub ended_at_ms: u64,
    /// `succeeded`, `timed_out`, or the error code (`worker_crashed`, `node_lost`, `preempted`,
    /// `cancelled`, ...).
    pub outcome: String,
    /// The backoff the next attempt waits, when this one is retried.
    pub retry_delay_ms: Option<u64>,
}

/// Which job slot made a task.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobFire {
    pub job: JobId,
    /// The cron slot (ms since the epoch in UTC).
    pub slot_ms: u64,
}

pub type JobId = u64;

impl Task {
    /// Record how the current attempt ended (call after the task's fields are updated).
    pub fn log_attempt(&mut self, ended_at_ms: u64, outcome: &str) {
        let Some(node) = self.attempts_log_node() else {
            return;
        };
        self.attempts_log.push(AttemptLog {
            attempt: self.attempt,
            node,
            scheduled_at_ms: self.scheduled_at_ms,
            started_at_ms: self.started_at_ms,
            ended_at_ms,
            outcome: outcome.to_string(),
            retry_delay_ms: self.retry_delay_ms,
        });
        if self.attempts_log.len() > ATTEMPT_LOG {
            self.attempts_log.remove(0);
        }
    }

    fn attempts_log_node(&self) -> Option<NodeId> {
        self.node.or(self.last_node)
    }

    /// Attempts counted against the retry policy.
    pub fn counted_attempts(&self) -> u32 {
        self.attempt.saturating_sub(self.attempts_uncounted)
    }
}
