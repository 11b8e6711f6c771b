//! `process`: each attempt is a child process of the node, in its own process group.
//!
//! Kernel tasks run `edgerun kernel-exec <kernel> --memory-mb N` with the input on stdin and
//! the result on stdout; exec tasks run `edgerun exec-shim --memory-mb N -- argv...`, which
//! sets its limits and replaces itself with the command. On timeout the whole process group
//! is killed. Limits are rlimits (RLIMIT_DATA for memory; process counts are not enforced for
//! root): weaker than the container executor's cgroups, and said so at start.

use std::path::PathBuf;
use std::process::Stdio;

use edgerun_model::{Isolation, Outcome, Work};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{
    exec_outcome, exit_codes, failed, kernel_outcome, Executor, Finished, Job, RunFuture,
    OUTPUT_CAP,
};

/// What the process executor needs to know.
#[derive(Debug, Clone)]
pub struct ProcessLimits {
    /// The `edgerun` binary (the node's own).
    pub exe: PathBuf,
    /// Whether exec tasks may run without a container (they run as the node's user).
    pub allow_exec: bool,
}

pub struct ProcessExecutor {
    pub limits: ProcessLimits,
}

/// Read a stream to its end, keeping at most `cap` bytes.
async fn read_capped<R: AsyncRead + Unpin>(mut r: R, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, truncated),
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

struct Ran {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: Vec<u8>,
    stdout_truncated: bool,
    stderr: Vec<u8>,
    stderr_truncated: bool,
}

impl Ran {
    fn into_finished(self) -> Finished {
        Finished {
            code: self.code,
            signal: self.signal,
            stdout: self.stdout,
            stdout_truncated: self.stdout_truncated,
            stderr: self.stderr,
            stderr_truncated: self.stderr_truncated,
        }
    }
}

enum RunError {
    Spawn(String),
    TimedOut,
}

impl RunError {
    fn outcome(self, helper: &str, job: &Job) -> Outcome {
        match self {
            RunError::TimedOut => Outcome::TimedOut {
                after_ms: job.timeout.as_millis() as u64,
            },
            RunError::Spawn(e) => failed(
                "sandbox_error",
                format!("starting edgerun {helper}: {e}"),
                true,
            ),
        }
    }
}

async fn run_child(
    mut cmd: Command,
    stdin: Option<Vec<u8>>,
    job: &Job,
    stdout_cap: usize,
) -> Result<Ran, RunError> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| RunError::Spawn(e.to_string()))?;
    let pgid = child.id().map(|p| Pid::from_raw(p as i32));
    let mut guard = super::KillOnDrop::new(pgid, None);
    let input = stdin.and_then(|bytes| child.stdin.take().map(|s| (s, bytes)));
    let feed = async move {
        if let Some((mut s, bytes)) = input {
            // A child that exits early closes its stdin: not our error.
            let _ = s.write_all(&bytes).await;
        }
    };
    let out = child.stdout.take();
    let err = child.stderr.take();
    let work = async {
        let (_, (stdout, so_t), (stderr, se_t), status) = tokio::join!(
            feed,
            async {
                match out {
                    Some(o) => read_capped(o, stdout_cap).await,
                    None => (Vec::new(), false),
                }
            },
            async {
                match err {
                    Some(e) => read_capped(e, OUTPUT_CAP).await,
                    None => (Vec::new(), false),
                }
            },
            child.wait()
        );
        (stdout, so_t, stderr, se_t, status)
    };
    match tokio::time::timeout(job.timeout, work).await {
        Ok((stdout, stdout_truncated, stderr, stderr_truncated, status)) => {
            guard.disarm();
            let status = status.map_err(|e| RunError::Spawn(e.to_string()))?;
            use std::os::unix::process::ExitStatusExt;
            Ok(Ran {
                code: status.code(),
                signal: status.signal(),
                stdout,
                stdout_truncated,
                stderr,
                stderr_truncated,
            })
        }
        Err(_) => {
            if let Some(pg) = pgid {
                let _ = killpg(pg, Signal::SIGKILL);
            }
            Err(RunError::TimedOut)
        }
    }
}

fn oom_like(r: &Ran) -> bool {
    let e = String::from_utf8_lossy(&r.stderr);
    e.contains("memory allocation of")
        || e.contains("bad_alloc")
        || e.contains("Cannot allocate memory")
}

impl ProcessExecutor {
    async fn kernel(&self, kernel: String, input: String, job: &Job) -> Outcome {
        let mut cmd = Command::new(&self.limits.exe);
        cmd.arg("kernel-exec")
            .arg(&kernel)
            .arg("--memory-mb")
            .arg(job.memory_mb.to_string());
        // Results bigger than the cap would be cut: allow the largest result a kernel makes.
        let ran = match run_child(cmd, Some(input.into_bytes()), job, 256 * 1024 * 1024).await {
            Ok(r) => r,
            Err(e) => return e.outcome("kernel-exec", job),
        };
        let oom = oom_like(&ran);
        kernel_outcome(ran.into_finished(), oom, job.memory_mb)
    }

    async fn exec(
        &self,
        argv: Vec<String>,
        env: std::collections::BTreeMap<String, String>,
        job: &Job,
    ) -> Outcome {
        if !self.limits.allow_exec {
            return failed(
                "unsupported",
                "exec tasks need container isolation; this node runs process isolation and executor.allow_exec_without_container is false",
                false,
            );
        }
        let mut cmd = Command::new(&self.limits.exe);
        cmd.arg("exec-shim")
            .arg("--memory-mb")
            .arg(job.memory_mb.to_string())
            .arg("--")
            .args(&argv);
        cmd.env_clear();
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
        cmd.envs(env);
        let ran = match run_child(cmd, None, job, OUTPUT_CAP).await {
            Ok(r) => r,
            Err(e) => return e.outcome("exec-shim", job),
        };
        if ran.code == Some(exit_codes::HELPER_ERROR) {
            let stderr = String::from_utf8_lossy(&ran.stderr).trim().to_string();
            return failed("exec_failed", stderr, false);
        }
        exec_outcome(ran.into_finished())
    }
}

impl Executor for ProcessExecutor {
    fn isolation(&self) -> Isolation {
        Isolation::Process
    }

    fn run(&self, job: Job) -> RunFuture<'_> {
        Box::pin(async move {
            match job.work.clone() {
                Work::Kernel { kernel, input } => self.kernel(kernel, input, &job).await,
                Work::Exec { argv, env } => self.exec(argv, env, &job).await,
            }
        })
    }
}
