//! `process`: each attempt is a child process of the node, in its own process group and
//! cgroup, confined before it runs anything of the task.
//!
//! ```text
//!  ProcessExecutor ── makes <parent>/p-t<task>a<attempt>-<n> (pids.max, memory limit)
//!        └─ spawns, env cleared:
//!             edgerun kernel-exec <kernel> --memory-mb N --fsize-mb D  <sandbox flags>
//!             edgerun exec-shim --memory-mb N --fsize-mb D <sandbox flags> -- argv...
//!               sandbox flags: --cgroup DIR... --user UID:GID --seccomp
//!               └─ (node/src/sandbox.rs) joins the cgroup, sets rlimits, cd /, drops the
//!                  capability bounding set, setgroups([]) → setgid → setuid, no_new_privs,
//!                  the containers' seccomp profile; then runs the kernel / execs argv
//! ```
//!
//! When the child exits or times out (or the attempt is dropped: cancel, preemption) its
//! process group and everything in its cgroup are killed and the cgroup removed, so a
//! `setsid` grandchild never outlives its task. What confinement is used was decided at
//! start ([`ProcessSandbox`], from a probe of the shim): where the node cannot change uid
//! (not root) or load seccomp, exec tasks are refused unless
//! `executor.allow_unsandboxed_exec`; kernels run with what there is.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgerun_model::{Isolation, Outcome, Work};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::cgroup::{self, AttemptCgroup};
use super::{
    exec_outcome, exit_codes, failed, kernel_outcome, Executor, Finished, Job, RunFuture,
    OUTPUT_CAP,
};

/// How long the streams of an ended attempt are still read: a process that escaped the
/// kill (no cgroup here) and holds them open does not hold the attempt.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How process-isolated children are confined (decided at start).
#[derive(Debug, Clone, Default)]
pub struct ProcessSandbox {
    /// Run as this (uid, gid) without supplementary groups (needs a root node).
    pub ids: Option<(u32, u32)>,
    /// No capabilities (bounding set included), no_new_privs and the seccomp profile.
    pub seccomp: bool,
    /// Per-attempt cgroups go under this path (relative to each hierarchy); `None` = no
    /// cgroups (only the process group is killed).
    pub cgroup_parent: Option<String>,
}

impl ProcessSandbox {
    /// Both the uid change and seccomp: a task cannot read the node's files or administer
    /// the host.
    pub fn complete(&self) -> bool {
        self.ids.is_some() && self.seccomp
    }

    /// The shim's flags for this sandbox (the cgroup's dirs are added per attempt).
    pub fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some((u, g)) = self.ids {
            a.push("--user".into());
            a.push(format!("{u}:{g}"));
        }
        if self.seccomp {
            a.push("--seccomp".into());
        }
        a
    }
}

/// What the process executor needs to know.
#[derive(Debug, Clone)]
pub struct ProcessLimits {
    /// The `edgerun` binary (the node's own).
    pub exe: PathBuf,
    /// Whether exec tasks may run without a container (`executor.allow_exec_without_container`).
    pub allow_exec: bool,
    /// Whether exec tasks may run when the sandbox is not complete
    /// (`executor.allow_unsandboxed_exec`).
    pub allow_unsandboxed_exec: bool,
    pub sandbox: ProcessSandbox,
    /// Process limit of one attempt (its cgroup's `pids.max`).
    pub pids: u32,
    /// Disk (largest file) of a task that gives no `resources.disk_mb`.
    pub default_disk_mb: u32,
    /// Largest kernel result accepted, in bytes.
    pub max_result: usize,
}

impl ProcessLimits {
    /// Limits for tools and benchmarks: no sandbox flags, the configuration's defaults.
    pub fn plain(exe: PathBuf) -> ProcessLimits {
        ProcessLimits {
            exe,
            allow_exec: false,
            allow_unsandboxed_exec: false,
            sandbox: ProcessSandbox::default(),
            pids: 128,
            default_disk_mb: 256,
            max_result: 16 * 1024 * 1024,
        }
    }
}

pub struct ProcessExecutor {
    pub limits: ProcessLimits,
    seq: AtomicU64,
}

/// What a stream reader kept: at most `cap` bytes, and how many there were in all.
#[derive(Default)]
struct Capped {
    kept: Vec<u8>,
    total: u64,
    truncated: bool,
}

/// Read a stream to its end into `into`, keeping at most `cap` bytes (the rest is read and
/// dropped, so the writer never blocks).
async fn read_capped<R: AsyncRead + Unpin>(mut r: R, cap: usize, into: Arc<Mutex<Capped>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let Ok(mut c) = into.lock() else { return };
                c.total += n as u64;
                let room = cap.saturating_sub(c.kept.len());
                if n > room {
                    c.truncated = true;
                }
                c.kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

fn take(c: &Arc<Mutex<Capped>>) -> Capped {
    c.lock()
        .map(|mut c| std::mem::take(&mut *c))
        .unwrap_or_default()
}

struct Ran {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: Capped,
    stderr: Capped,
    /// The cgroup's OOM killer struck.
    oom: bool,
}

impl Ran {
    fn into_finished(self) -> Finished {
        Finished {
            code: self.code,
            signal: self.signal,
            stdout_total: self.stdout.total,
            stdout: self.stdout.kept,
            stdout_truncated: self.stdout.truncated,
            stderr: self.stderr.kept,
            stderr_truncated: self.stderr.truncated,
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

/// Kill and remove an attempt's cgroup off the runtime's threads.
async fn end_cgroup(rel: Option<String>) {
    if let Some(rel) = rel {
        let _ = tokio::task::spawn_blocking(move || cgroup::kill_and_remove(&rel)).await;
    }
}

fn oom_like(stderr: &[u8]) -> bool {
    let e = String::from_utf8_lossy(stderr);
    e.contains("memory allocation of")
        || e.contains("bad_alloc")
        || e.contains("Cannot allocate memory")
}

impl ProcessExecutor {
    pub fn new(limits: ProcessLimits) -> ProcessExecutor {
        ProcessExecutor {
            limits,
            seq: AtomicU64::new(0),
        }
    }

    /// Run the shim with this executor's sandbox and `--probe`: it confines itself as a task
    /// would be and exits 0 without running anything. `Err` says which step failed.
    pub async fn probe(&self) -> Result<(), String> {
        let mut cmd = Command::new(&self.limits.exe);
        cmd.arg("exec-shim")
            .arg("--probe")
            .args(self.limits.sandbox.args())
            .arg("--")
            .arg("true")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
            .await
            .map_err(|_| "the probe did not finish in 20 s".to_string())?
            .map_err(|e| format!("starting edgerun exec-shim: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn disk_mb(&self, job: &Job) -> u32 {
        job.disk_mb.unwrap_or(self.limits.default_disk_mb)
    }

    /// The shim's command line up to its own arguments: limits, sandbox, cgroup.
    fn command(&self, helper: &str, job: &Job, cg: Option<&AttemptCgroup>) -> Command {
        let mut cmd = Command::new(&self.limits.exe);
        cmd.arg(helper);
        if let Work::Kernel { kernel, .. } = &job.work {
            cmd.arg(kernel);
        }
        cmd.arg("--memory-mb")
            .arg(job.memory_mb.to_string())
            .arg("--fsize-mb")
            .arg(self.disk_mb(job).to_string())
            .args(self.limits.sandbox.args());
        for dir in cg.map(|c| c.dirs.as_slice()).unwrap_or_default() {
            cmd.arg("--cgroup").arg(dir);
        }
        // Nothing of the node's environment reaches a task.
        cmd.env_clear();
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
        cmd
    }

    /// The attempt's cgroup, when this node makes them (blocking cgroupfs writes off the
    /// runtime). Without one the attempt still runs: its process group is what gets killed.
    async fn cgroup(&self, job: &Job) -> Option<AttemptCgroup> {
        let parent = self.limits.sandbox.cgroup_parent.clone()?;
        let name = format!(
            "p-t{}a{}-{}",
            job.task,
            job.attempt,
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let memory = u64::from(job.memory_mb) * 1024 * 1024;
        let pids = self.limits.pids;
        let made = tokio::task::spawn_blocking(move || {
            AttemptCgroup::create(&parent, &name, memory, pids)
        })
        .await;
        match made {
            Ok(Ok(cg)) => Some(cg),
            Ok(Err(e)) => {
                tracing::warn!(
                    task = job.task,
                    attempt = job.attempt,
                    "no cgroup for this attempt: {e}"
                );
                None
            }
            Err(_) => None,
        }
    }

    async fn run_child(
        &self,
        mut cmd: Command,
        stdin: Option<Vec<u8>>,
        job: &Job,
        stdout_cap: usize,
        cg: Option<AttemptCgroup>,
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
        let rel = cg.as_ref().map(|c| c.rel.clone());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                end_cgroup(rel).await;
                return Err(RunError::Spawn(e.to_string()));
            }
        };
        let pgid = child.id().map(|p| Pid::from_raw(p as i32));
        // Armed until the attempt's processes are gone: a dropped attempt kills them.
        let mut guard = super::KillOnDrop::new(pgid, rel.clone());
        if let Some(bytes) = stdin {
            if let Some(mut s) = child.stdin.take() {
                tokio::spawn(async move {
                    // A child that exits early closes its stdin: not our error.
                    let _ = s.write_all(&bytes).await;
                });
            }
        }
        let out = Arc::new(Mutex::new(Capped::default()));
        let err = Arc::new(Mutex::new(Capped::default()));
        let mut readers = Vec::new();
        if let Some(o) = child.stdout.take() {
            readers.push(tokio::spawn(read_capped(o, stdout_cap, out.clone())));
        }
        if let Some(e) = child.stderr.take() {
            readers.push(tokio::spawn(read_capped(e, OUTPUT_CAP, err.clone())));
        }
        let waited = tokio::time::timeout(job.timeout, child.wait()).await;
        // The task's first process ended (or ran out of time): nothing it started may stay.
        if let Some(pg) = pgid {
            let _ = killpg(pg, Signal::SIGKILL);
        }
        let oom = cg.as_ref().is_some_and(|c| c.oom_kills() > 0);
        end_cgroup(rel).await;
        guard.disarm();
        let status = match waited {
            Ok(status) => status.map_err(|e| RunError::Spawn(e.to_string()))?,
            Err(_) => {
                for r in readers {
                    r.abort();
                }
                return Err(RunError::TimedOut);
            }
        };
        for r in readers {
            let abort = r.abort_handle();
            if tokio::time::timeout(DRAIN_GRACE, r).await.is_err() {
                abort.abort();
            }
        }
        use std::os::unix::process::ExitStatusExt;
        let stderr = take(&err);
        Ok(Ran {
            code: status.code(),
            signal: status.signal(),
            oom,
            stdout: take(&out),
            stderr,
        })
    }

    async fn kernel(&self, input: String, job: &Job) -> Outcome {
        let cg = self.cgroup(job).await;
        let cmd = self.command("kernel-exec", job, cg.as_ref());
        // One byte over the cap tells a result that is too large from one that fits.
        let cap = self.limits.max_result.saturating_add(1);
        let ran = match self
            .run_child(cmd, Some(input.into_bytes()), job, cap, cg)
            .await
        {
            Ok(r) => r,
            Err(e) => return e.outcome("kernel-exec", job),
        };
        let oom = ran.oom || oom_like(&ran.stderr.kept);
        kernel_outcome(
            ran.into_finished(),
            oom,
            job.memory_mb,
            self.limits.max_result,
        )
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
        if !self.limits.sandbox.complete() && !self.limits.allow_unsandboxed_exec {
            return failed(
                "unsupported",
                "this node cannot sandbox exec tasks under process isolation (it cannot change uid or load seccomp; see its start-up log) and executor.allow_unsandboxed_exec is false",
                false,
            );
        }
        let cg = self.cgroup(job).await;
        let mut cmd = self.command("exec-shim", job, cg.as_ref());
        cmd.arg("--").args(&argv);
        cmd.envs(env);
        let ran = match self.run_child(cmd, None, job, OUTPUT_CAP, cg).await {
            Ok(r) => r,
            Err(e) => return e.outcome("exec-shim", job),
        };
        if ran.code == Some(exit_codes::HELPER_ERROR) {
            let stderr = String::from_utf8_lossy(&ran.stderr.kept).trim().to_string();
            // The shim says `sandbox: ...` when it could not confine itself: the node's
            // problem, maybe passing; anything else is the command (not found, ...).
            if stderr.starts_with("sandbox:") {
                return failed("sandbox_error", stderr, true);
            }
            return failed("exec_failed", stderr, false);
        }
        if ran.oom && ran.code != Some(0) {
            return super::exec_oom_killed(job.memory_mb);
        }
        exec_outcome(ran.into_finished(), self.disk_mb(job))
    }
}

impl Executor for ProcessExecutor {
    fn isolation(&self) -> Isolation {
        Isolation::Process
    }

    fn run(&self, job: Job) -> RunFuture<'_> {
        Box::pin(async move {
            match job.work.clone() {
                Work::Kernel { input, .. } => self.kernel(input, &job).await,
                Work::Exec { argv, env } => self.exec(argv, env, &job).await,
                w @ (Work::Wasm { .. } | Work::Http(_)) => super::not_routed(&w, "process"),
            }
        })
    }
}
