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
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Container => "container",
            Isolation::Process => "process",
            Isolation::Inproc => "inproc",
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
}

/// Placement constraints: a task only runs on a node that matches all of them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Constraints {
    pub tier: Option<Tier>,
    pub labels: BTreeMap<String, String>,
}

/// Resources a task asks for; limits for its sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Resources {
    pub cpu_millis: Option<u32>,
    pub memory_mb: Option<u32>,
    /// The task needs the network (containers get none otherwise; the node must allow it).
    pub network: bool,
}

/// How often and how soon a failed or timed-out task is tried again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, the first included. 1 = never retry.
    pub max_attempts: u32,
    /// Delay before attempt n+1 is `backoff_ms * 2^(n-1)`, capped at one minute.
    pub backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff_ms: 200,
        }
    }
}

impl RetryPolicy {
    /// Delay before the attempt after `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> u64 {
        let shift = attempt.saturating_sub(1).min(16);
        self.backoff_ms.saturating_mul(1u64 << shift).min(60_000)
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
        }
    }

    /// The kernel name, or `exec`.
    pub fn kind_name(&self) -> &str {
        match &self.work {
            Work::Kernel { kernel, .. } => kernel,
            Work::Exec { .. } => "exec",
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
}
