//! Executors: how an attempt's work runs on this node.
//!
//! ```text
//!  Worker ──run(Job)──▶ Executor ─┬─ Inproc:  a blocking thread in the node (benchmarks)
//!                                 └─ Process: `edgerun kernel-exec` / `edgerun exec-shim`
//!                                             as a child in its own process group, with
//!                                             rlimits, a wall-clock timeout and capped output
//! ```
//!
//! Every outcome records the isolation used. `executor.isolation = auto` picks the strongest
//! mode the node can provide and says why at start. Failure policy: an executor never fails
//! the node; every problem becomes the attempt's outcome.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use edgerun_model::{Isolation, Outcome, TaskError, Work};

pub mod container;
pub mod inproc;
pub mod process;

pub use container::{ContainerConfig, ContainerExecutor};
pub use inproc::InprocExecutor;
pub use process::{ProcessExecutor, ProcessLimits};

/// One attempt to run.
#[derive(Debug, Clone)]
pub struct Job {
    pub task: u64,
    pub attempt: u32,
    pub work: Work,
    pub timeout: Duration,
    /// Memory limit in MiB.
    pub memory_mb: u32,
    /// CPU share in millicores (advisory outside containers).
    pub cpu_millis: Option<u32>,
}

pub type RunFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

pub trait Executor: Send + Sync + 'static {
    fn isolation(&self) -> Isolation;
    fn run(&self, job: Job) -> RunFuture<'_>;
}

pub(crate) fn failed(code: &str, message: impl Into<String>, retryable: bool) -> Outcome {
    Outcome::Failed {
        error: TaskError {
            code: code.into(),
            message: message.into(),
        },
        retryable,
        output: None,
    }
}

/// Exit codes of `edgerun kernel-exec`, shared by both sides.
pub mod exit_codes {
    /// Input rejected by the kernel's checks (deterministic: not retried).
    pub const INVALID_INPUT: i32 = 3;
    /// The kernel reported an error (deterministic: not retried).
    pub const KERNEL_ERROR: i32 = 4;
    /// The helper itself could not run (bad arguments, I/O).
    pub const HELPER_ERROR: i32 = 5;
}

/// Most bytes of stdout/stderr kept per stream; more is dropped and flagged `truncated`.
pub const OUTPUT_CAP: usize = 64 * 1024;
