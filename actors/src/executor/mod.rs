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
    /// The task asked for the network.
    pub network: bool,
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

/// Kills a workload when dropped while armed: its process group, and its cgroup tree (the
/// container's processes) when it has one. An attempt the Worker stops (cancel, preemption)
/// is stopped by dropping its future; this makes that drop take the processes with it.
pub(crate) struct KillOnDrop {
    pgid: Option<nix::unistd::Pid>,
    cgroup: Option<String>,
}

impl KillOnDrop {
    pub(crate) fn new(pgid: Option<nix::unistd::Pid>, cgroup: Option<String>) -> KillOnDrop {
        KillOnDrop { pgid, cgroup }
    }

    /// The workload ended by itself: nothing to kill.
    pub(crate) fn disarm(&mut self) {
        self.pgid = None;
        self.cgroup = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pg) = self.pgid.take() {
            let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
        }
        if let Some(cg) = self.cgroup.take() {
            container::remove_cgroup_tree(&cg);
        }
    }
}

/// Most bytes of stdout/stderr kept per stream; more is dropped and flagged `truncated`.
pub const OUTPUT_CAP: usize = 64 * 1024;

/// What a finished workload left behind, whichever executor ran it.
pub(crate) struct Finished {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr: Vec<u8>,
    pub stderr_truncated: bool,
}

/// The outcome of `kernel-exec` (exit codes in [`exit_codes`]); `oom` when the executor saw
/// the memory limit hit.
pub(crate) fn kernel_outcome(f: Finished, oom: bool, memory_mb: u32) -> Outcome {
    let stderr = String::from_utf8_lossy(&f.stderr).trim().to_string();
    match (f.code, f.signal) {
        (Some(0), _) => match String::from_utf8(f.stdout) {
            Ok(result)
                if !f.stdout_truncated
                    && serde_json::from_str::<&serde_json::value::RawValue>(&result).is_ok() =>
            {
                Outcome::Succeeded { result }
            }
            _ => failed("kernel_error", "the kernel's output is not JSON", false),
        },
        (Some(exit_codes::INVALID_INPUT), _) => failed("invalid_input", stderr, false),
        (Some(exit_codes::KERNEL_ERROR), _) => failed("kernel_error", stderr, false),
        _ if oom => failed(
            "oom_killed",
            format!("the kernel went over its {memory_mb} MiB memory limit"),
            false,
        ),
        (Some(code), _) => failed(
            "worker_crashed",
            format!("kernel-exec exited with {code}: {stderr}"),
            true,
        ),
        (None, sig) => failed(
            "worker_crashed",
            format!(
                "kernel-exec was killed by signal {}: {stderr}",
                sig.unwrap_or(0)
            ),
            true,
        ),
    }
}

/// The outcome of an exec task: its exit code and capped streams are the result; a non-zero
/// exit fails the task but keeps that result.
pub(crate) fn exec_outcome(f: Finished) -> Outcome {
    let exit_code = f.code.unwrap_or_else(|| 128 + f.signal.unwrap_or(0));
    let stderr = String::from_utf8_lossy(&f.stderr);
    let result = serde_json::json!({
        "exit_code": exit_code,
        "signal": f.signal,
        "stdout": String::from_utf8_lossy(&f.stdout),
        "stderr": stderr,
        "truncated": f.stdout_truncated || f.stderr_truncated,
    });
    if exit_code == 0 {
        return Outcome::Succeeded {
            result: result.to_string(),
        };
    }
    let tail: String = stderr
        .chars()
        .skip(stderr.chars().count().saturating_sub(300))
        .collect();
    Outcome::Failed {
        error: TaskError {
            code: "nonzero_exit".into(),
            message: format!("exited with {exit_code}: {}", tail.trim()),
        },
        retryable: false,
        output: Some(result.to_string()),
    }
}
