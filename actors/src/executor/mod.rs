//! Executors: how an attempt's work runs on this node.
//!
//! ```text
//!  Worker ──run(Job)──▶ Executor ─┬─ Inproc:  a blocking thread in the node (benchmarks)
//!                                 ├─ Process: `edgerun kernel-exec` / `edgerun exec-shim`
//!                                 │           as a child in its own process group and
//!                                 │           cgroup, as an unprivileged user without
//!                                 │           capabilities, under seccomp, with rlimits, a
//!                                 │           wall-clock timeout and capped output
//!                                 ├─ Container: a youki container per attempt
//!                                 ├─ Wasm: wasm tasks, whatever the above ([`wasm::Routed`])
//!                                 └─ Http: http tasks, the node's HTTP client ([`http`])
//! ```
//!
//! Every outcome records the isolation used. `executor.isolation = auto` picks the strongest
//! mode the node can provide and says why at start. Failure policy: an executor never fails
//! the node; every problem becomes the attempt's outcome. Every executor refuses a kernel
//! result over `executor.max_result_mb` (`result_too_large`); containers and processes share
//! one seccomp profile ([`seccomp`]) and the cgroup helpers ([`cgroup`]).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use edgerun_model::{Isolation, Outcome, TaskError, Work};

pub mod cgroup;
pub mod container;
pub mod http;
pub mod inproc;
pub mod process;
pub mod seccomp;
pub mod wasm;

pub use container::{ContainerConfig, ContainerExecutor};
pub use inproc::InprocExecutor;
pub use process::{ProcessExecutor, ProcessLimits, ProcessSandbox};

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
    /// Disk the task may write, in MiB; `None` = the executor's default
    /// (`executor.default_disk_mb`).
    pub disk_mb: Option<u32>,
}

pub type RunFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

pub trait Executor: Send + Sync + 'static {
    fn isolation(&self) -> Isolation;
    /// The isolation this work gets here (an executor may route some work elsewhere).
    fn isolation_for(&self, _work: &Work) -> Isolation {
        self.isolation()
    }
    fn run(&self, job: Job) -> RunFuture<'_>;
}

/// A wasm or http task that reached an executor of another kind (the node routes them to
/// its wasm runtime and HTTP client: [`wasm::Routed`]); never retried here.
pub(crate) fn not_routed(work: &Work, executor: &str) -> Outcome {
    failed(
        "unsupported",
        format!(
            "a {} task reached the {executor} executor (this node has no runtime for it; see its log at start)",
            work.kind()
        ),
        false,
    )
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
    /// The helper itself could not run (bad arguments, I/O, the sandbox could not be set).
    pub const HELPER_ERROR: i32 = 5;
}

/// Fail a kernel result over the cap (`executor.max_result_mb`); `bytes` is its size, or
/// what was seen of it before reading stopped (`at_least`).
pub(crate) fn result_too_large(bytes: u64, at_least: bool, max: usize) -> Outcome {
    failed(
        "result_too_large",
        format!(
            "the kernel's result is {}{bytes} bytes, over the {} MiB this node accepts (executor.max_result_mb)",
            if at_least { "at least " } else { "" },
            max / (1024 * 1024)
        ),
        false,
    )
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
            // Signal everything now; waiting for the cgroup to empty and removing it can take
            // a moment, which a drop on the runtime's thread must not wait for.
            cgroup::kill_all(&cg);
            let rel = cg.clone();
            let spawned = std::thread::Builder::new()
                .name("cgroup-reaper".into())
                .spawn(move || {
                    cgroup::kill_and_remove(&rel);
                });
            if spawned.is_err() {
                cgroup::kill_and_remove(&cg);
            }
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
    /// Bytes the task wrote to stdout in all (kept or not), as far as it was counted.
    pub stdout_total: u64,
    pub stderr: Vec<u8>,
    pub stderr_truncated: bool,
}

/// The outcome of `kernel-exec` (exit codes in [`exit_codes`]); `oom` when the executor saw
/// the memory limit hit; a result over `max_result` bytes fails `result_too_large`.
pub(crate) fn kernel_outcome(f: Finished, oom: bool, memory_mb: u32, max_result: usize) -> Outcome {
    let stderr = String::from_utf8_lossy(&f.stderr).trim().to_string();
    match (f.code, f.signal) {
        (Some(0), _) if f.stdout_truncated || f.stdout.len() > max_result => {
            let seen = f.stdout_total.max(f.stdout.len() as u64);
            result_too_large(seen, f.stdout_truncated, max_result)
        }
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

/// An exec task the memory limit killed (cgroup OOM).
pub(crate) fn exec_oom_killed(memory_mb: u32) -> Outcome {
    failed(
        "oom_killed",
        format!("the task went over its {memory_mb} MiB memory limit and was killed"),
        false,
    )
}

/// The outcome of an exec task: its exit code and capped streams are the result; a non-zero
/// exit fails the attempt (retried by the task's policy, then dead-lettered) but keeps that
/// result. A command killed for writing past its file
/// size limit (SIGXFSZ), or failing on a full disk, fails `disk_limit`.
pub(crate) fn exec_outcome(f: Finished, disk_mb: u32) -> Outcome {
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
    let xfsz = f.signal == Some(nix::sys::signal::Signal::SIGXFSZ as i32)
        || exit_code == 128 + nix::sys::signal::Signal::SIGXFSZ as i32;
    let (code, message) = if xfsz || stderr.contains("No space left on device") {
        (
            "disk_limit",
            format!(
                "the task went over its disk limit of {disk_mb} MiB (resources.disk_mb) and exited with {exit_code}: {}",
                tail.trim()
            ),
        )
    } else {
        (
            "nonzero_exit",
            format!("exited with {exit_code}: {}", tail.trim()),
        )
    };
    Outcome::Failed {
        error: TaskError {
            code: code.into(),
            message,
        },
        // A failing command may well succeed next time (a service it needs was down, a
        // file was not there yet): its retry policy decides, then the DLQ (API.md).
        retryable: true,
        output: Some(result.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(stdout: &[u8], truncated: bool, total: u64) -> Finished {
        Finished {
            code: Some(0),
            signal: None,
            stdout: stdout.to_vec(),
            stdout_truncated: truncated,
            stdout_total: total,
            stderr: Vec::new(),
            stderr_truncated: false,
        }
    }

    fn code(o: &Outcome) -> &str {
        match o {
            Outcome::Failed { error, .. } => &error.code,
            Outcome::Succeeded { .. } => "succeeded",
            _ => "other",
        }
    }

    #[test]
    fn kernel_results_over_the_cap_fail_and_are_not_retried() {
        let ok = kernel_outcome(finished(b"[1,2,3]", false, 7), false, 64, 16);
        assert_eq!(code(&ok), "succeeded");
        let over = kernel_outcome(finished(b"[1,2,3,4,5,6,7,8,9]", false, 19), false, 64, 16);
        assert_eq!(code(&over), "result_too_large");
        let cut = kernel_outcome(
            finished(b"[1,2,3,4,5,6,7,8,", true, 70_000_000),
            false,
            64,
            16,
        );
        match cut {
            Outcome::Failed {
                error, retryable, ..
            } => {
                assert_eq!(error.code, "result_too_large");
                assert!(!retryable);
                assert!(
                    error.message.contains("70000000")
                        && error.message.contains("executor.max_result_mb"),
                    "{}",
                    error.message
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writing_past_the_file_size_limit_fails_disk_limit() {
        let mut f = finished(b"", false, 0);
        f.code = None;
        f.signal = Some(nix::sys::signal::Signal::SIGXFSZ as i32);
        let o = exec_outcome(f, 64);
        assert_eq!(code(&o), "disk_limit");
        let mut f = finished(b"", false, 0);
        f.code = Some(1);
        assert_eq!(code(&exec_outcome(f, 64)), "nonzero_exit");
    }
}
