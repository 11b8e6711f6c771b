//! `container`: each attempt runs in its own youki (libcontainer) container.
//!
//! ```text
//!  ContainerExecutor ── writes bundle ──▶ <data_dir>/sandbox/bundles/<id>/{config.json, rootfs/, input.json}
//!        │
//!        └─ spawns `edgerun container-run` (single-threaded helper: create, start, wait, delete)
//!               └─ container: pid, mount, ipc, uts, net namespaces; read-only root with the
//!                  host's /usr and libraries bound read-only; /work a tmpfs of
//!                  `resources.disk_mb` (default `executor.default_disk_mb`); RLIMIT_FSIZE;
//!                  no capabilities; no_new_privileges; the seccomp profile of [`super::seccomp`];
//!                  cgroup memory, pids and cpu limits under this node's own cgroup
//!                  └─ `/edgerun kernel-exec <kernel> --input /input.json`  (or the exec argv)
//! ```
//!
//! Kernel results come back on the container's stdout, a pipe the helper reads and writes to
//! `bundle/stdout` up to a cap (the result cap for kernels, the output cap for exec tasks),
//! counting the rest; nothing a task writes lands on the node's disk beyond those caps.
//! Exec tasks get exit code and capped streams. A timeout kills the container (all of its
//! processes); an OOM kill is read from the cgroup and reported as `oom_killed`. At start the
//! node removes containers, cgroups and bundles left by a crashed run ([`ContainerExecutor::clean`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use edgerun_model::{Isolation, Outcome, Work};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

pub use super::cgroup::own_cgroup;
use super::cgroup::{kill_all, kill_and_remove};
use super::{exec_outcome, failed, kernel_outcome, Executor, Finished, Job, RunFuture, OUTPUT_CAP};

/// Time the helper gets beyond the task's own timeout to set up and tear down.
const HELPER_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// The `edgerun` binary: the helper, and the program kernel tasks run inside.
    pub exe: PathBuf,
    /// `<data_dir>/sandbox`: bundles and libcontainer state.
    pub root: PathBuf,
    /// Cgroup path (relative to each controller's mount) under which task cgroups are made.
    pub cgroup_parent: String,
    /// Process limit of one task.
    pub pids: u32,
    /// Tag in container ids (the node id), so nodes sharing a host do not collide.
    pub node: u64,
    /// Exec `/edgerun kernel-exec` inside the container instead of calling the kernel from
    /// the container's init process (libcontainer's executor hook). Slower; for comparison.
    pub exec_kernel: bool,
    /// Helpers kept started and waiting (0 = start one per task).
    pub pool: usize,
    /// Let tasks that ask for the network share the host's (`executor.allow_network`).
    pub allow_network: bool,
    /// Size of `/work` and the largest file a task may write, when it gives no
    /// `resources.disk_mb`.
    pub default_disk_mb: u32,
    /// Largest kernel result accepted, in bytes (`executor.max_result_mb`).
    pub max_result: usize,
}

pub struct ContainerExecutor {
    cfg: ContainerConfig,
    seq: AtomicU64,
    /// Helpers started ahead of need, each waiting for one order on stdin.
    pool: tokio::sync::Mutex<Vec<tokio::process::Child>>,
}

#[derive(Debug, Deserialize, Default)]
struct HelperReport {
    exit_code: Option<i32>,
    signal: Option<i32>,
    #[serde(default)]
    timed_out: bool,
    #[serde(default)]
    oom_killed: bool,
    error: Option<String>,
    /// Bytes the task wrote to stdout / stderr in all (the files keep at most the caps).
    #[serde(default)]
    stdout_bytes: u64,
    #[serde(default)]
    stderr_bytes: u64,
    /// Where the helper's time went (microseconds).
    #[serde(default)]
    timing_us: Option<HelperTiming>,
}

#[derive(Debug, Default, Deserialize)]
struct HelperTiming {
    /// Building the container (namespaces, cgroup, rootfs mounts).
    #[serde(default)]
    create: u64,
    /// Starting its process.
    #[serde(default)]
    start: u64,
}

fn bind(dest: &str, src: &Path, rw: bool) -> Value {
    json!({
        "destination": dest,
        "type": "bind",
        "source": src,
        "options": ["rbind", if rw { "rw" } else { "ro" }, "nosuid", "nodev"],
    })
}

/// Limits of one container beyond the job's own.
#[derive(Debug, Clone, Copy)]
pub struct SpecLimits {
    /// Most processes (pids cgroup).
    pub pids: u32,
    /// Size of the `/work` tmpfs and the largest file (RLIMIT_FSIZE), in MiB.
    pub disk_mb: u32,
}

/// The OCI runtime spec of one attempt (pure: tested without containers). `input` is bound
/// read-only at `/input.json`.
pub fn spec(
    args: &[String],
    env: &BTreeMap<String, String>,
    input: Option<&Path>,
    exe: &Path,
    job: &Job,
    limits: SpecLimits,
    cgroup: &str,
) -> Value {
    let mut envs: Vec<String> = vec![
        "PATH=/usr/local/bin:/usr/bin:/bin".into(),
        "HOME=/work".into(),
    ];
    envs.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]}),
    ];
    for dir in ["/usr", "/lib", "/lib64", "/bin", "/sbin"] {
        let p = Path::new(dir);
        if p.exists() {
            mounts.push(bind(dir, p, false));
        }
    }
    // Without a network namespace of its own the task shares the host's network (it asked
    // for it and the node allows it); give it the host's resolver too.
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "mount"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
    ];
    if job.network {
        if Path::new("/etc/resolv.conf").exists() {
            mounts.push(bind(
                "/etc/resolv.conf",
                Path::new("/etc/resolv.conf"),
                false,
            ));
        }
    } else {
        namespaces.push(json!({"type": "network"}));
    }
    if Path::new("/etc/ld.so.cache").exists() {
        mounts.push(bind(
            "/etc/ld.so.cache",
            Path::new("/etc/ld.so.cache"),
            false,
        ));
    }
    mounts.push(bind("/edgerun", exe, false));
    if let Some(input) = input {
        mounts.push(bind("/input.json", input, false));
    }
    // The task's writable dir is memory (charged to its cgroup), never the node's disk.
    mounts.push(json!({
        "destination": "/work",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", "mode=755", format!("size={}k", u64::from(limits.disk_mb) * 1024)],
    }));
    let fsize = u64::from(limits.disk_mb) * 1024 * 1024;
    let mut resources = json!({
        "memory": { "limit": (job.memory_mb as i64) * 1024 * 1024 },
        "pids": { "limit": limits.pids as i64 },
        "devices": [{ "allow": false, "access": "rwm" }],
    });
    if let Some(m) = job.cpu_millis {
        resources["cpu"] = json!({ "quota": (m as i64) * 100, "period": 100_000 });
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": envs,
            "cwd": "/work",
            "capabilities": { "bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": [] },
            "rlimits": [
                { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 },
                { "type": "RLIMIT_FSIZE", "hard": fsize, "soft": fsize },
                { "type": "RLIMIT_CORE", "hard": 0, "soft": 0 },
            ],
            "noNewPrivileges": true,
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "edgerun",
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": cgroup,
            "resources": resources,
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            "seccomp": super::seccomp::oci(),
        },
    })
}

fn read_capped(path: &Path, cap: u64) -> (Vec<u8>, bool) {
    use std::io::Read;
    let Ok(f) = std::fs::File::open(path) else {
        return (Vec::new(), false);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut out = Vec::new();
    let _ = f.take(cap).read_to_end(&mut out);
    (out, len > cap)
}

impl ContainerExecutor {
    pub fn new(cfg: ContainerConfig) -> ContainerExecutor {
        ContainerExecutor {
            cfg,
            seq: AtomicU64::new(0),
            pool: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    /// Start a helper that waits for one order on stdin.
    fn spawn_helper(&self) -> std::io::Result<tokio::process::Child> {
        Command::new(&self.cfg.exe)
            .arg("container-run")
            .arg("--state-root")
            .arg(self.state_root())
            .arg("--orders-on-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
    }

    /// A waiting helper from the pool (or a new one), and one more started for the next task.
    async fn take_helper(&self) -> std::io::Result<tokio::process::Child> {
        let mut pool = self.pool.lock().await;
        let mut ready = None;
        while let Some(mut c) = pool.pop() {
            // Skip helpers that died while waiting.
            if matches!(c.try_wait(), Ok(None)) {
                ready = Some(c);
                break;
            }
        }
        while pool.len() < self.cfg.pool {
            match self.spawn_helper() {
                Ok(c) => pool.push(c),
                Err(_) => break,
            }
        }
        drop(pool);
        match ready {
            Some(c) => Ok(c),
            None => self.spawn_helper(),
        }
    }

    fn state_root(&self) -> PathBuf {
        self.cfg.root.join("state")
    }

    fn bundles(&self) -> PathBuf {
        self.cfg.root.join("bundles")
    }

    /// Remove containers, cgroups and bundles left by an earlier run of this node.
    pub async fn clean(&self) -> std::io::Result<()> {
        let state = self.state_root();
        if state.is_dir() {
            let _ = Command::new(&self.cfg.exe)
                .arg("container-run")
                .arg("--clean")
                .arg("--state-root")
                .arg(&state)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
        let parent = self.cfg.cgroup_parent.clone();
        tokio::task::spawn_blocking(move || kill_and_remove(&parent))
            .await
            .map_err(std::io::Error::other)?;
        let _ = tokio::fs::remove_dir_all(self.bundles()).await;
        tokio::fs::create_dir_all(self.bundles()).await?;
        tokio::fs::create_dir_all(&state).await
    }

    /// Run a trivial container to check that this node can make them.
    pub async fn probe(&self) -> Result<(), String> {
        let job = Job {
            task: 0,
            attempt: 0,
            work: Work::Exec {
                argv: vec!["/edgerun".into(), "--version".into()],
                env: BTreeMap::new(),
            },
            timeout: Duration::from_secs(20),
            memory_mb: 64,
            cpu_millis: None,
            network: false,
            disk_mb: Some(1),
        };
        match self.run_job(job).await {
            Outcome::Succeeded { result } if result.contains("edgerun") => Ok(()),
            Outcome::Succeeded { result } => Err(format!("the probe container printed {result}")),
            Outcome::Failed { error, output, .. } => Err(format!(
                "{}: {}{}",
                error.code,
                error.message,
                output.map(|o| format!(" ({o})")).unwrap_or_default()
            )),
            Outcome::TimedOut { .. } => Err("the probe container timed out".into()),
            Outcome::Stored { .. } => Err("the probe container's result was stored".into()),
        }
    }

    async fn run_job(&self, job: Job) -> Outcome {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "er{}-t{}a{}-{}-{n}",
            self.cfg.node,
            job.task,
            job.attempt,
            std::process::id()
        );
        let bundle = self.bundles().join(&id);
        let outcome = self.run_in(&bundle, &id, &job).await;
        let _ = tokio::fs::remove_dir_all(&bundle).await;
        outcome
    }

    async fn run_in(&self, bundle: &Path, id: &str, job: &Job) -> Outcome {
        if job.network && !self.cfg.allow_network {
            return failed("network_not_allowed", "the task asks for the network and this node does not allow it (executor.allow_network = false)", false);
        }
        if let Err(e) = tokio::fs::create_dir_all(bundle.join("rootfs")).await {
            return failed("sandbox_error", format!("preparing the bundle: {e}"), true);
        }
        let input_file = bundle.join("input.json");
        let (args, env, is_kernel) = match &job.work {
            Work::Kernel { kernel, input } => {
                if let Err(e) = tokio::fs::write(&input_file, input).await {
                    return failed("sandbox_error", format!("writing the input: {e}"), true);
                }
                let args = vec![
                    "/edgerun".to_string(),
                    "kernel-exec".into(),
                    kernel.clone(),
                    "--input".into(),
                    "/input.json".into(),
                ];
                (args, BTreeMap::new(), true)
            }
            Work::Exec { argv, env } => (argv.clone(), env.clone(), false),
            w @ (Work::Wasm { .. } | Work::Http(_)) => return super::not_routed(w, "container"),
        };
        let cgroup = format!("{}/{id}", self.cfg.cgroup_parent.trim_end_matches('/'));
        let disk_mb = job.disk_mb.unwrap_or(self.cfg.default_disk_mb);
        let config = spec(
            &args,
            &env,
            is_kernel.then_some(input_file.as_path()),
            &self.cfg.exe,
            job,
            SpecLimits {
                pids: self.cfg.pids,
                disk_mb,
            },
            &cgroup,
        );
        if let Err(e) = tokio::fs::write(bundle.join("config.json"), config.to_string()).await {
            return failed("sandbox_error", format!("writing config.json: {e}"), true);
        }
        // A pre-started helper waits for its orders on stdin (saves starting the binary on
        // the task's path); a fresh one is started to take its place.
        // One byte over the result cap tells a result that is too large from one that fits.
        let stdout_cap = if is_kernel {
            self.cfg.max_result.saturating_add(1)
        } else {
            OUTPUT_CAP
        };
        let order = json!({
            "bundle": bundle,
            "id": id,
            "timeout_ms": job.timeout.as_millis() as u64,
            "cgroup": cgroup,
            "exec_kernel": self.cfg.exec_kernel,
            "stdout_cap": stdout_cap,
            "stderr_cap": OUTPUT_CAP,
        });
        let child = match self.take_helper().await {
            Ok(mut c) => {
                let sent = match c.stdin.take() {
                    Some(mut stdin) => {
                        let line = format!("{order}\n");
                        stdin.write_all(line.as_bytes()).await.is_ok()
                    }
                    None => false,
                };
                if !sent {
                    return failed(
                        "sandbox_error",
                        "the container helper did not take its orders",
                        true,
                    );
                }
                c
            }
            Err(e) => {
                return failed(
                    "sandbox_error",
                    format!("starting edgerun container-run: {e}"),
                    true,
                )
            }
        };
        let mut child = child;
        let pgid = child.id().map(|p| Pid::from_raw(p as i32));
        let mut guard = super::KillOnDrop::new(pgid, Some(cgroup.clone()));
        // The helper prints its report as soon as the container has exited and deletes the
        // container afterwards: take the report, and let the helper finish in the background.
        let stdout = child.stdout.take();
        let read_report = async move {
            let mut line = String::new();
            if let Some(out) = stdout {
                let _ = tokio::io::BufReader::new(out).read_line(&mut line).await;
            }
            line
        };
        let line = match tokio::time::timeout(job.timeout + HELPER_GRACE, read_report).await {
            Ok(line) => {
                guard.disarm();
                line
            }
            Err(_) => {
                if let Some(pg) = pgid {
                    let _ = killpg(pg, Signal::SIGKILL);
                }
                kill_all(&cgroup);
                let rel = cgroup.clone();
                let _ = tokio::task::spawn_blocking(move || kill_and_remove(&rel)).await;
                guard.disarm();
                return failed("sandbox_error", "the container helper did not finish", true);
            }
        };
        let report: HelperReport = match serde_json::from_str(line.trim()) {
            Ok(r) => r,
            Err(_) => {
                // No report: the helper died. Its stderr says why.
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), e.read_to_string(&mut err))
                            .await;
                }
                let _ = child.wait().await;
                HelperReport {
                    error: Some(format!("no report from the helper: {}", err.trim())),
                    ..HelperReport::default()
                }
            }
        };
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        if let Some(e) = report.error {
            return failed("sandbox_error", e, true);
        }
        if let Some(t) = &report.timing_us {
            metrics::histogram!(crate::metrics_names::CONTAINER_START)
                .record((t.create + t.start) as f64 / 1e6);
        }
        if report.timed_out {
            return Outcome::TimedOut {
                after_ms: job.timeout.as_millis() as u64,
            };
        }
        if report.oom_killed {
            return super::exec_oom_killed(job.memory_mb);
        }
        let (stderr, stderr_truncated) = read_capped(&bundle.join("stderr"), OUTPUT_CAP as u64);
        let (stdout, stdout_truncated) = read_capped(&bundle.join("stdout"), stdout_cap as u64);
        let finished = Finished {
            code: report.exit_code,
            signal: report.signal,
            stdout_truncated: stdout_truncated || report.stdout_bytes > stdout.len() as u64,
            stdout_total: report.stdout_bytes,
            stdout,
            stderr_truncated: stderr_truncated || report.stderr_bytes > stderr.len() as u64,
            stderr,
        };
        if is_kernel {
            kernel_outcome(finished, false, job.memory_mb, self.cfg.max_result)
        } else {
            exec_outcome(finished, disk_mb)
        }
    }
}

impl Executor for ContainerExecutor {
    fn isolation(&self) -> Isolation {
        Isolation::Container
    }

    fn run(&self, job: Job) -> RunFuture<'_> {
        Box::pin(self.run_job(job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_isolates_and_limits() {
        let job = Job {
            task: 1,
            attempt: 1,
            work: Work::Exec {
                argv: vec!["true".into()],
                env: BTreeMap::new(),
            },
            timeout: Duration::from_secs(1),
            memory_mb: 32,
            cpu_millis: Some(500),
            network: false,
            disk_mb: Some(64),
        };
        let s = spec(
            &["true".into()],
            &BTreeMap::from([("A".into(), "b".into())]),
            Some(Path::new("/b/input.json")),
            Path::new("/x/edgerun"),
            &job,
            SpecLimits {
                pids: 16,
                disk_mb: 64,
            },
            "/p/t1",
        );
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["process"]["noNewPrivileges"], true);
        assert_eq!(s["process"]["capabilities"]["effective"], json!([]));
        assert!(s["process"]["env"]
            .as_array()
            .is_some_and(|e| e.contains(&json!("A=b"))));
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 32 * 1024 * 1024);
        assert_eq!(s["linux"]["resources"]["pids"]["limit"], 16);
        assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 50_000);
        let ns: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .map(|v| v.iter().filter_map(|n| n["type"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(ns, vec!["pid", "mount", "ipc", "uts", "network"]);
        let mounts = s["mounts"].as_array().cloned().unwrap_or_default();
        assert!(
            !mounts.iter().any(|m| m["destination"]
                .as_str()
                .is_some_and(|d| d.starts_with("/sys"))),
            "no /sys or cgroupfs inside"
        );
        let work = mounts
            .iter()
            .find(|m| m["destination"] == "/work")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            work["type"], "tmpfs",
            "the writable dir is not the node's disk"
        );
        assert!(work["options"]
            .as_array()
            .is_some_and(|o| o.contains(&json!("size=65536k"))));
        assert!(mounts
            .iter()
            .filter(|m| m["type"] == "bind")
            .all(|m| m["options"]
                .as_array()
                .is_some_and(|o| o.contains(&json!("ro")))));
        assert!(mounts
            .iter()
            .any(|m| m["destination"] == "/input.json" && m["source"] == "/b/input.json"));
        let rlimits = s["process"]["rlimits"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(rlimits
            .iter()
            .any(|r| r["type"] == "RLIMIT_FSIZE" && r["hard"] == 64 * 1024 * 1024));
        assert_eq!(s["linux"]["seccomp"], crate::executor::seccomp::oci());
    }
}
