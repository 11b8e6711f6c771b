//! `edgerun container-run`: drive one youki (libcontainer) container from a single-threaded
//! helper process, never from the node's tokio runtime (libcontainer forks with raw clone3;
//! with other threads running it deadlocks).
//!
//! The ContainerExecutor (actors crate) writes the bundle (`config.json`, an empty `rootfs/`,
//! a kernel's `input.json`) and runs this helper, which creates and starts the container with
//! its stdout/stderr on pipes, copies at most `stdout_cap` / `stderr_cap` bytes of them to
//! `bundle/stdout` and `bundle/stderr` (counting and dropping the rest: a task cannot fill
//! the node's disk through its output), waits for exactly its init pid (killing it at the
//! deadline), reads the OOM counter of its cgroup, deletes it, and prints one JSON line:
//! `{"exit_code", "signal", "timed_out", "oom_killed", "stdout_bytes", "stderr_bytes",
//! "error"}`.
//!
//! `edgerun container-run --clean-state DIR` deletes every container left in a state dir by a
//! crashed node.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::signal::Signal as NixSignal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use serde_json::json;

/// Runs `/edgerun kernel-exec ...` workloads without an exec: the container's init process
/// is a fork of this helper and already holds the kernels, so it calls them directly once
/// libcontainer has set up namespaces, mounts, limits and seccomp. Anything else is exec'd as
/// usual. Saves one start of the binary per kernel task (see `edgerun bench-sandbox`).
#[derive(Clone)]
struct KernelHook;

fn kernel_args(spec: &Spec) -> Option<(String, PathBuf)> {
    let args = spec.process().as_ref()?.args().as_ref()?;
    match args.as_slice() {
        [exe, cmd, kernel, flag, input]
            if exe == "/edgerun" && cmd == "kernel-exec" && flag == "--input" =>
        {
            Some((kernel.clone(), PathBuf::from(input)))
        }
        _ => None,
    }
}

impl Executor for KernelHook {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        match kernel_args(spec) {
            // libcontainer has confined this process already.
            Some((kernel, input)) => crate::sandbox::kernel_exec(
                &kernel,
                &crate::cli::SandboxArgs::default(),
                Some(&input),
            ),
            None => DefaultExecutor {}.exec(spec),
        }
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        match kernel_args(spec) {
            Some(_) => Ok(()),
            None => DefaultExecutor {}.validate(spec),
        }
    }
}

pub struct RunArgs {
    /// Exec `/edgerun kernel-exec` inside instead of calling the kernel from the init process.
    pub exec_kernel: bool,
    pub bundle: PathBuf,
    pub state_root: PathBuf,
    pub id: String,
    pub timeout: Duration,
    /// The container's cgroup, as in the spec's `cgroupsPath` (for the OOM counter).
    pub cgroup: String,
    /// Most bytes of the container's stdout / stderr kept in `bundle/stdout` / `stderr`.
    pub stdout_cap: u64,
    pub stderr_cap: u64,
}

/// Bytes kept by default per stream (the executors' output cap).
pub const DEFAULT_CAP: u64 = edgerun_actors::executor::OUTPUT_CAP as u64;

/// One of the container's output pipes, copied to a file up to a cap.
struct Capture {
    pipe: Option<File>,
    file: File,
    cap: u64,
    total: u64,
}

impl Capture {
    /// Read what the pipe holds now (it is non-blocking); `true` if anything came.
    fn pump(&mut self) -> bool {
        let mut buf = [0u8; 64 * 1024];
        let mut got = false;
        while let Some(pipe) = self.pipe.as_mut() {
            match pipe.read(&mut buf) {
                Ok(0) => self.pipe = None,
                Ok(n) => {
                    got = true;
                    let room = self.cap.saturating_sub(self.total).min(n as u64) as usize;
                    if room > 0 && self.file.write_all(&buf[..room]).is_err() {
                        // Nothing more is kept (the executor sees the count exceed the file).
                        self.cap = 0;
                    }
                    self.total += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        got
    }
}

/// A pipe for one of the container's streams: the read end (non-blocking, for us) and the
/// write end (for the container). Both close on exec; libcontainer dup2s the write end onto
/// the container's fd 1 or 2.
fn output_pipe() -> Result<(File, std::os::fd::OwnedFd), String> {
    use nix::fcntl::OFlag;
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .map_err(|e| format!("making a pipe: {e}"))?;
    // The container blocks when the pipe is full; the read end must not. pipe2 sets
    // O_NONBLOCK on both ends, so the container's end is made blocking again.
    use std::os::fd::AsRawFd;
    nix::fcntl::fcntl(w.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))
        .map_err(|e| format!("making the pipe's write end blocking: {e}"))?;
    Ok((File::from(r), w))
}

fn print(v: serde_json::Value) {
    println!("{v}");
}

fn fail(msg: String) -> ! {
    print(json!({ "error": msg }));
    std::process::exit(0)
}

/// The memory cgroup's OOM-kill count for `cgroup` (v1 or v2).
fn oom_kills(cgroup: &str) -> u64 {
    let rel = cgroup.trim_start_matches('/');
    let candidates = [
        (
            Path::new("/sys/fs/cgroup/memory")
                .join(rel)
                .join("memory.oom_control"),
            "oom_kill ",
        ),
        (
            Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
            "oom_kill ",
        ),
    ];
    for (path, key) in candidates {
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                if let Some(n) = line.strip_prefix(key) {
                    return n.trim().parse().unwrap_or(0);
                }
            }
        }
    }
    0
}

/// Wait for `pid` until `deadline`, copying its output meanwhile; `None` if it is still
/// running then.
fn wait_until(
    pid: nix::unistd::Pid,
    deadline: Instant,
    streams: &mut [Capture],
) -> Option<WaitStatus> {
    // Poll with a short, growing sleep: the helper stays single-threaded and a short task
    // is reaped within ~100 µs; output resets the sleep, so a busy writer is drained at once.
    let mut nap = Duration::from_micros(50);
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(st) => return Some(st),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => fail(format!("waiting for the container: {e}")),
        }
        let mut got = false;
        for s in streams.iter_mut() {
            got |= s.pump();
        }
        if Instant::now() >= deadline {
            return None;
        }
        if got {
            nap = Duration::from_micros(50);
            continue;
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(2));
    }
}

/// The orders a pre-started helper reads from stdin (one JSON line).
#[derive(serde::Deserialize)]
struct Order {
    bundle: PathBuf,
    id: String,
    timeout_ms: u64,
    cgroup: String,
    #[serde(default)]
    exec_kernel: bool,
    #[serde(default = "default_cap")]
    stdout_cap: u64,
    #[serde(default = "default_cap")]
    stderr_cap: u64,
}

fn default_cap() -> u64 {
    DEFAULT_CAP
}

/// Wait for one order on stdin, then run it. End of input (the node is gone) just exits.
pub fn run_from_stdin(state_root: PathBuf) -> ! {
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) => std::process::exit(0),
        Ok(_) => {}
        Err(e) => fail(format!("reading the order: {e}")),
    }
    let o: Order = serde_json::from_str(&line).unwrap_or_else(|e| fail(format!("bad order: {e}")));
    run(RunArgs {
        bundle: o.bundle,
        state_root,
        id: o.id,
        timeout: Duration::from_millis(o.timeout_ms),
        cgroup: o.cgroup,
        exec_kernel: o.exec_kernel,
        stdout_cap: o.stdout_cap,
        stderr_cap: o.stderr_cap,
    })
}

pub fn run(a: RunArgs) -> ! {
    let open = |name: &str| -> File {
        File::create(a.bundle.join(name)).unwrap_or_else(|e| fail(format!("creating {name}: {e}")))
    };
    let (out_r, out_w) = output_pipe().unwrap_or_else(|e| fail(e));
    let (err_r, err_w) = output_pipe().unwrap_or_else(|e| fail(e));
    let mut streams = [
        Capture {
            pipe: Some(out_r),
            file: open("stdout"),
            cap: a.stdout_cap,
            total: 0,
        },
        Capture {
            pipe: Some(err_r),
            file: open("stderr"),
            cap: a.stderr_cap,
            total: 0,
        },
    ];
    let t0 = Instant::now();
    let built = ContainerBuilder::new(a.id.clone(), SyscallType::Linux)
        .with_root_path(&a.state_root)
        .map(|b| b.with_stdout(out_w).with_stderr(err_w))
        .map(|b| {
            if a.exec_kernel {
                b
            } else {
                b.with_executor(KernelHook)
            }
        })
        .map(|b| {
            b.as_init(&a.bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
        });
    let mut container = match built {
        Ok(Ok(c)) => c,
        Ok(Err(e)) | Err(e) => fail(format!("creating the container: {e}")),
    };
    let deadline = Instant::now() + a.timeout;
    let t_created = Instant::now();
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        fail(format!("starting the container: {e}"));
    }
    let t_started = Instant::now();
    let Some(pid) = container.pid() else {
        let _ = container.delete(true);
        fail("the container has no pid".into());
    };
    let (status, timed_out) = match wait_until(pid, deadline, &mut streams) {
        Some(st) => (st, false),
        None => {
            let _ = container.kill(Signal::from(NixSignal::SIGKILL), true);
            let st = waitpid(pid, None).unwrap_or(WaitStatus::StillAlive);
            (st, true)
        }
    };
    // The init is gone and the kernel killed the rest of its pid namespace: what is in the
    // pipes now is all there is.
    for s in streams.iter_mut() {
        s.pump();
    }
    let t_exited = Instant::now();
    let oom = oom_kills(&a.cgroup) > 0;
    let (code, signal) = match status {
        WaitStatus::Exited(_, c) => (Some(c), None),
        WaitStatus::Signaled(_, s, _) => (None, Some(s as i32)),
        _ => (None, None),
    };
    let us = |from: Instant, to: Instant| to.duration_since(from).as_micros() as u64;
    // Report first (the executor answers as soon as it has this line), then clean up.
    print(json!({
        "exit_code": code,
        "signal": signal,
        "timed_out": timed_out,
        "oom_killed": oom,
        "stdout_bytes": streams[0].total,
        "stderr_bytes": streams[1].total,
        // Where the helper's time went, in microseconds.
        "timing_us": {
            "create": us(t0, t_created),
            "start": us(t_created, t_started),
            "run": us(t_created, t_exited),
        },
    }));
    if let Err(e) = container.delete(true) {
        // The node's start-up cleanup removes what is left.
        eprintln!("deleting container {}: {e}", a.id);
    }
    std::process::exit(0)
}

/// Delete every container in `state_root` (left by a crashed node); prints how many.
pub fn clean_state(state_root: &Path) -> ! {
    let mut removed = 0;
    if let Ok(entries) = std::fs::read_dir(state_root) {
        for e in entries.flatten() {
            if let Ok(mut c) = Container::load(e.path()) {
                let _ = c.kill(Signal::from(NixSignal::SIGKILL), true);
                if c.delete(true).is_ok() {
                    removed += 1;
                }
            }
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    print(json!({ "removed": removed }));
    std::process::exit(0)
}
