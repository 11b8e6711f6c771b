//! Test harness: start the real `edgerun` binary, talk to it over HTTP, wait on conditions.
//!
//! Naming (STYLE.md): `must_*` panics with context, `try_*` returns a Result, `wait_for_*`
//! / [`wait_until`] poll a condition until a deadline and say what they saw last.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A test that cannot run on this machine says so, loudly: on stderr and as a line in
/// `target/test-skips.log`, which `scripts/test` prints in its summary (a skipped test must
/// never pass for one that ran). With `REQUIRE_ALL_TESTS=1` (CI sets it where it runs as
/// root) it fails instead.
#[allow(dead_code)]
pub fn skipped(test: &str, why: &str) {
    if std::env::var_os("REQUIRE_ALL_TESTS").is_some_and(|v| v == "1") {
        panic!("{test} cannot run here and REQUIRE_ALL_TESTS=1: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    let log = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-skips.log");
    let line = format!("{test}: {why}\n");
    if let Err(e) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()))
    {
        panic!(
            "{test} cannot run here ({why}) and the skip cannot be recorded in {}: {e}",
            log.display()
        );
    }
}

/// Poll `probe` until it returns `Some`, or panic after `timeout` naming `what` and the last
/// observation.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut last: String;
    let mut delay = Duration::from_millis(5);
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) => last = seen,
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// `Ok` when no process's command line matches `pattern` (pgrep -f).
pub fn no_process_matches(pattern: &str) -> Result<(), String> {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .map_err(|e| e.to_string())?;
    let pids = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if pids.is_empty() {
        Ok(())
    } else {
        Err(format!("still running: {pids}"))
    }
}

/// Run the `edgerun` binary with `args`, without a token or API key from the environment.
pub fn edgerun_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgerun"))
        .args(args)
        .env_remove("EDGERUN_TOKEN")
        .env_remove("EDGERUN_API_KEY")
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A command's exit and output, for a failure message.
pub fn said(o: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The `*.backup` files in `dir`, sorted (none when it cannot be read).
pub fn backups_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "backup"));
    v.sort();
    v
}

/// A matmul task whose result (600 x 600 floats as JSON, a few MiB) is over a 1 MiB
/// `executor.max_result_mb`.
pub fn big_result_task() -> Value {
    let col: Vec<Vec<f32>> = (0..600).map(|i| vec![i as f32 + 0.5]).collect();
    let row: Vec<Vec<f32>> = vec![(0..600).map(|i| i as f32 + 0.25).collect()];
    serde_json::json!({ "kernel": "matmul", "input": { "a": col, "b": row } })
}

pub use edgerun_testkit::free_port;
use edgerun_testkit::process::{Log, NodeProcess};

/// An HTTP answer: status and parsed JSON (Null when the body is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<String>,
}

impl Answer {
    /// Panic unless this is a 429 `rate_limited` with a Retry-After of at least 1 s.
    pub fn must_be_rate_limited(&self) {
        assert_eq!(self.status, 429, "{}", self.body);
        assert_eq!(self.body["error"]["code"], "rate_limited", "{}", self.body);
        let wait: u64 = self
            .retry_after
            .as_deref()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        assert!(wait >= 1, "Retry-After {:?}", self.retry_after);
    }
}

/// A running `edgerun node` process.
pub struct Node {
    pub id: u64,
    pub dir: PathBuf,
    pub url: String,
    pub port: u16,
    args: Vec<String>,
    proc: NodeProcess,
    agent: ureq::Agent,
    starts: u32,
    /// EDGERUN_LOG for the process; none = unset (the config's log.filter applies).
    log_env: Option<String>,
}

/// How [`Node::spawn_custom`] starts a node.
pub struct SpawnOpts {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// The harness's own overrides: auth off and limits out of the way (flags win over the
    /// file, so a test of file settings turns them off).
    pub harness_sets: bool,
    /// EDGERUN_LOG; none = unset.
    pub log_env: Option<String>,
}

impl Default for SpawnOpts {
    fn default() -> Self {
        SpawnOpts {
            config: None,
            harness_sets: true,
            log_env: Some("info".into()),
        }
    }
}

impl Node {
    /// Start a single-node cluster in `dir` with extra `--set key=value` overrides; wait
    /// until it is ready.
    pub fn must_start(dir: &Path, sets: &[&str]) -> Node {
        let mut n = Node::spawn(dir, 1, free_port(), free_port(), sets);
        n.must_be_ready();
        n
    }

    /// Start node `id` with the given ports and overrides; do not wait.
    pub fn spawn(dir: &Path, id: u64, port: u16, rpc: u16, sets: &[&str]) -> Node {
        Node::spawn_custom(dir, id, port, rpc, sets, SpawnOpts::default())
    }

    /// Like [`Node::spawn`], started as `opts` says.
    pub fn spawn_custom(
        dir: &Path,
        id: u64,
        port: u16,
        rpc: u16,
        sets: &[&str],
        opts: SpawnOpts,
    ) -> Node {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        let mut args = vec![
            "node".to_string(),
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--api-listen".into(),
            format!("127.0.0.1:{port}"),
            "--set".into(),
            format!("cluster.listen=\"127.0.0.1:{rpc}\""),
        ];
        if opts.harness_sets {
            // Tests hammer one node from one address; the limit has its own test.
            // Authentication has its own tests (t85); the others talk to the node directly.
            for s in edgerun_testkit::HARNESS_SETS {
                args.push("--set".into());
                args.push(s.to_string());
            }
        }
        if let Some(c) = &opts.config {
            args.push("--config".into());
            args.push(c.display().to_string());
        }
        for s in sets {
            args.push("--set".into());
            args.push(s.to_string());
        }
        let mut n = Node {
            id,
            dir: dir.to_path_buf(),
            url: format!("http://127.0.0.1:{port}"),
            port,
            args,
            proc: NodeProcess::default(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .build(),
            starts: 0,
            log_env: opts.log_env,
        };
        n.must_spawn();
        n
    }

    /// The node's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Resident memory of the node's process, in KiB (VmRSS).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Send a signal by name (STOP, CONT, TERM) to the process.
    pub fn signal(&self, sig: &str) {
        if let Err(e) = self.proc.signal(sig) {
            panic!("{e}");
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("node-{}.log", self.starts))
    }

    fn must_spawn(&mut self) {
        self.starts += 1;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgerun"));
        match &self.log_env {
            Some(f) => cmd.env("EDGERUN_LOG", f),
            None => cmd.env_remove("EDGERUN_LOG").env_remove("RUST_LOG"),
        };
        cmd.args(&self.args);
        if let Err(e) = self.proc.spawn(cmd, Log::Fresh(&self.log_path())) {
            panic!("spawning edgerun: {e}");
        }
    }

    /// host:port of this node's cluster RPC (from its `cluster.listen` override).
    pub fn rpc_addr(&self) -> String {
        self.args
            .iter()
            .find_map(|a| a.strip_prefix("cluster.listen=\""))
            .map(|a| a.trim_end_matches('"').to_string())
            .unwrap_or_else(|| panic!("node {} has no cluster.listen override", self.id))
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(self.log_path()).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    pub fn must_be_ready(&mut self) {
        let timeout = Duration::from_secs(60);
        let deadline = Instant::now() + timeout;
        let mut last: String;
        loop {
            if let Some(st) = self.proc.exit_status() {
                panic!("the node exited during start ({st}); log:\n{}", self.log());
            }
            match self.try_get("/readyz") {
                Ok(a) if a.status == 200 => return,
                Ok(a) => last = format!("HTTP {} {}", a.status, a.body),
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                panic!(
                    "the node was not ready after {timeout:?}; last seen: {last}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9, as a crash would.
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// Send SIGTERM (a clean stop request).
    pub fn terminate(&mut self) {
        self.signal("TERM");
    }

    /// Start again with the same data dir and ports.
    pub fn must_restart(&mut self) {
        self.kill9();
        self.must_spawn();
        self.must_be_ready();
    }

    /// Start again with the same data dir and ports, without waiting for readiness (a
    /// cluster needs a majority up before any node is ready).
    pub fn must_restart_no_wait(&mut self) {
        self.kill9();
        self.must_spawn();
    }

    pub fn agent_delete(&self, path: &str) -> Answer {
        Self::answer(self.agent.delete(&format!("{}{path}", self.url)).call())
            .unwrap_or_else(|e| panic!("DELETE {path}: {e}"))
    }

    /// Wait for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.proc.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "the node did not exit within {timeout:?}; log:\n{}",
                self.log()
            )
        })
    }

    fn answer(res: Result<ureq::Response, ureq::Error>) -> Result<Answer, String> {
        let r = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.to_string()),
        };
        let status = r.status();
        let retry_after = r.header("retry-after").map(String::from);
        let text = r.into_string().map_err(|e| e.to_string())?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            body,
            retry_after,
        })
    }

    /// The body of a GET as text (e.g. /metrics).
    pub fn must_get_text(&self, path: &str) -> String {
        let r = self
            .agent
            .get(&format!("{}{path}", self.url))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        r.into_string()
            .unwrap_or_else(|e| panic!("GET {path}: reading the body: {e}"))
    }

    /// Any call, with an optional bearer token and JSON body.
    pub fn must_call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut r = self.agent.request(method, &format!("{}{path}", self.url));
        if let Some(t) = token {
            r = r.set("Authorization", &format!("Bearer {t}"));
        }
        let res = match body {
            Some(b) => r.send_json(b),
            None => r.call(),
        };
        Self::answer(res).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn try_get(&self, path: &str) -> Result<Answer, String> {
        Self::answer(self.agent.get(&format!("{}{path}", self.url)).call())
    }

    pub fn must_get(&self, path: &str) -> Answer {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn try_post_raw(&self, path: &str, body: &[u8]) -> Result<Answer, String> {
        Self::answer(
            self.agent
                .post(&format!("{}{path}", self.url))
                .set("content-type", "application/json")
                .send_bytes(body),
        )
    }

    /// PUT a JSON body.
    pub fn must_put(&self, path: &str, body: &Value) -> Answer {
        Self::answer(
            self.agent
                .put(&format!("{}{path}", self.url))
                .send_json(body),
        )
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"))
    }

    pub fn must_post(&self, path: &str, body: &Value) -> Answer {
        let bytes = serde_json::to_vec(body).unwrap_or_else(|e| panic!("{e}"));
        self.try_post_raw(path, &bytes)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Submit `tasks` in one batch call; the ids, in order.
    pub fn must_submit_batch(&self, tasks: &[Value]) -> Vec<u64> {
        let a = self.must_post("/v1/tasks/batch", &serde_json::json!({ "tasks": tasks }));
        assert_eq!(a.status, 201, "batch submission: {}", a.body);
        let ids: Vec<u64> = a.body["ids"]
            .as_array()
            .map(|v| v.iter().filter_map(|x| x.as_u64()).collect())
            .unwrap_or_default();
        assert_eq!(ids.len(), tasks.len(), "one id per task: {}", a.body);
        ids
    }

    /// The task, once it has ended.
    pub fn wait_for_task_end(&self, id: u64, timeout: Duration) -> Value {
        wait_until(&format!("task {id} to end"), timeout, || {
            let a = self.try_get(&format!("/v1/tasks/{id}/wait?timeout=5s"))?;
            match a.body["status"].as_str() {
                Some("succeeded" | "failed" | "timed_out" | "cancelled") => Ok(a.body),
                _ => Err(format!("HTTP {} {}", a.status, a.body)),
            }
        })
    }

    /// Every task the node has, by paging through GET /v1/tasks.
    pub fn must_list_all(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<u64> = None;
        loop {
            let path = match after {
                Some(a) => format!("/v1/tasks?limit=1000&after={a}"),
                None => "/v1/tasks?limit=1000".to_string(),
            };
            let a = self.must_get(&path);
            assert_eq!(a.status, 200, "{path}: {}", a.body);
            out.extend(a.body["tasks"].as_array().cloned().unwrap_or_default());
            match a.body["next"].as_u64() {
                Some(n) => after = Some(n),
                None => return out,
            }
        }
    }

    /// Value of a Prometheus sample whose line starts with `prefix`, if present.
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        let r = self
            .agent
            .get(&format!("{}/metrics", self.url))
            .call()
            .ok()?;
        let text = r.into_string().ok()?;
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

/// A bearer token for `key` (POST /v1/auth/token).
pub fn must_token(node: &Node, key: &str) -> String {
    let a = node.must_call(
        "POST",
        "/v1/auth/token",
        None,
        Some(&serde_json::json!({ "api_key": key })),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {}", a.body))
        .to_string()
}

impl Node {
    /// The cgroup parent of this node's tasks, from its log (container isolation, or process
    /// isolation on a root node with cgroups).
    pub fn cgroup_parent(&self) -> Option<String> {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("task cgroups go under this parent"))?;
        let v = line.split("cgroup_parent=").nth(1)?;
        Some(v.split_whitespace().next()?.trim_matches('"').to_string())
    }
}

/// Remove a cgroup directory tree under every hierarchy (children first).
pub fn remove_cgroup_tree(rel: &str) {
    let rel = rel.trim_start_matches('/');
    let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut dirs: Vec<PathBuf> = roots.flatten().map(|e| e.path().join(rel)).collect();
    dirs.push(PathBuf::from("/sys/fs/cgroup").join(rel));
    for d in dirs.into_iter().filter(|d| d.is_dir()) {
        let _ = Command::new("find")
            .arg(&d)
            .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
            .status();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // (A stopped process is continued first, or it would not die.)
        self.kill9();
        // A killed node cannot clean its container cgroups; its data dir is going away, so no
        // later node would either.
        if let Some(parent) = self.cgroup_parent() {
            remove_cgroup_tree(&parent);
        }
    }
}

/// Tries `clone` with CLONE_NEWUSER|CLONE_NEWNET, `clone3` with CLONE_NEWUSER, and a plain
/// `clone` (a fork), through raw syscalls, and prints what each answered.
/// (`python3 -c`, for an exec task.)
pub const CLONE_PROBE: &str = r#"
import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
nr = {"x86_64": (56, 435), "aarch64": (220, 435)}[platform.machine()]
NEWUSER, NEWNET, SIGCHLD = 0x10000000, 0x40000000, 17
def done(name, r):
    if r == 0:
        os._exit(0)
    if r < 0:
        return name + "=" + os.strerror(ctypes.get_errno())
    os.waitpid(r, 0)
    return name + "=ok"
class Args(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls")]
a = Args(flags=NEWUSER, exit_signal=SIGCHLD)
print(done("clone", libc.syscall(nr[0], ctypes.c_ulong(NEWUSER | NEWNET | SIGCHLD), 0, 0, 0, 0)),
      done("clone3", libc.syscall(nr[1], ctypes.byref(a), ctypes.sizeof(a))),
      done("fork", libc.syscall(nr[0], ctypes.c_ulong(SIGCHLD), 0, 0, 0, 0)))
"#;

/// Settings that make failure tests quick: short heartbeats and lease.
pub const FAST_FAILOVER: &[&str] = &["cluster.heartbeat_ms=200", "cluster.lease_ms=1500"];

/// A cluster of `edgerun node` processes on 127.0.0.1.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// The `cluster.peers=[...]` override the nodes were started with.
    pub peers: String,
    /// The `cluster.secret_file=...` override they share (a node joining later needs it).
    pub secret: String,
}

impl Cluster {
    /// Start `n` voters (ids 1..=n) in `dir/n<id>` and wait until every one is ready.
    pub fn must_start(dir: &Path, n: u64, sets: &[&str]) -> Cluster {
        Cluster::must_start_with(dir, n, sets, |_| Vec::new())
    }

    /// Like `must_start`, with extra overrides per node (`per(id)`).
    pub fn must_start_with(
        dir: &Path,
        n: u64,
        sets: &[&str],
        per: impl Fn(u64) -> Vec<String>,
    ) -> Cluster {
        let mut ports = Vec::new();
        let layout = edgerun_testkit::Layout::new(n, "127.0.0.1", |id| {
            let p = (free_port(), free_port());
            ports.push((id, p.0, p.1));
            p
        });
        let peers = layout.peers_set();
        let secret = format!(
            "cluster.secret_file=\"{}\"",
            dir.join("cluster.secret").display()
        );
        let mut nodes: Vec<Node> = ports
            .iter()
            .map(|(id, api, rpc)| {
                let mine = per(*id);
                let mut all: Vec<&str> = vec![&peers, &secret];
                all.extend_from_slice(sets);
                all.extend(mine.iter().map(String::as_str));
                Node::spawn(&dir.join(format!("n{id}")), *id, *api, *rpc, &all)
            })
            .collect();
        for node in nodes.iter_mut() {
            node.must_be_ready();
        }
        Cluster {
            nodes,
            peers,
            secret,
        }
    }

    pub fn node(&self, id: u64) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Wait until every node in `among` names the same leader (one of `among`), and return it.
    pub fn wait_for_leader(&self, among: &[u64], timeout: Duration) -> u64 {
        wait_until("one leader that every live node agrees on", timeout, || {
            let mut seen = Vec::new();
            for id in among {
                // /readyz needs no token (some clusters run with auth on).
                let a = self.node(*id).try_get("/readyz")?;
                seen.push((*id, a.body["leader"].as_u64()));
            }
            match seen.first() {
                Some((_, Some(l)))
                    if among.contains(l) && seen.iter().all(|(_, x)| *x == Some(*l)) =>
                {
                    Ok(*l)
                }
                _ => Err(format!("(node, leader) = {seen:?}")),
            }
        })
    }
}

/// A small deterministic PRNG (xorshift) so tests need no extra crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [-100, 100), with a few decimals.
    pub fn value(&mut self) -> f64 {
        ((self.next_u64() % 200_000) as f64) / 1000.0 - 100.0
    }
}

/// A real redis-server on a free port, in `dir`; killed on drop.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Start it (no persistence) and wait until it answers PING.
    pub fn must_start(dir: &Path) -> RedisServer {
        let mut r = RedisServer {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        r.must_spawn();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn must_spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting redis-server: {e} (install it with ./scripts/setup)")
            });
        self.child = Some(child);
        let port = self.port;
        wait_until(
            "redis-server to answer PING",
            Duration::from_secs(20),
            || {
                use std::io::Write;
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
                    .map_err(|e| format!("connect: {e}"))?;
                s.set_read_timeout(Some(Duration::from_secs(2)))
                    .map_err(|e| e.to_string())?;
                s.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
                let mut buf = [0u8; 16];
                let n = s.read(&mut buf).map_err(|e| e.to_string())?;
                if buf[..n].starts_with(b"+PONG") {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&buf[..n]).into_owned())
                }
            },
        );
    }

    /// Kill it (kill -9) and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port (empty: it keeps nothing).
    pub fn must_restart(&mut self) {
        self.kill();
        self.must_spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real MQTT broker (Debian's mosquitto) on a free port, in `dir`; killed on drop. It keeps
/// up to 100,000 queued QoS 1 messages per client (the default 1,000 would drop a stream
/// job's input while its runner moves), in memory only.
pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn must_start(dir: &Path) -> Mosquitto {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 100000\nmax_inflight_messages 1000\n"
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let bin = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| !b.starts_with('/') || Path::new(b).exists())
            .unwrap_or("mosquitto");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("mosquitto.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting mosquitto: {e} (install it with ./scripts/setup)")
            });
        wait_until(
            "mosquitto to accept connections",
            Duration::from_secs(20),
            || {
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .map(|_| ())
                    .map_err(|e| format!("connect: {e}"))
            },
        );
        Mosquitto {
            port,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// A handle on a broker another value owns (for publishing from a thread).
    pub fn at(port: u16) -> Mosquitto {
        Mosquitto { port, child: None }
    }

    /// Publish each line of `lines` as one QoS 1 message to `topic` (mosquitto_pub -l).
    pub fn must_publish(&self, topic: &str, lines: &[String]) {
        use std::io::Write;
        let mut c = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-q", "1", "-t", topic, "-l"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("mosquitto_pub: {e} (install it with ./scripts/setup)"));
        if let Some(mut stdin) = c.stdin.take() {
            for l in lines {
                writeln!(stdin, "{l}").unwrap_or_else(|e| panic!("mosquitto_pub stdin: {e}"));
            }
        }
        let out = c
            .wait_with_output()
            .unwrap_or_else(|e| panic!("mosquitto_pub: {e}"));
        assert!(
            out.status.success(),
            "mosquitto_pub: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Subscribe to `topic` (QoS 1) in the background, appending each message as a line to
    /// `out`; the subscriber is killed on drop of the returned child guard.
    pub fn subscribe_to_file(&self, topic: &str, out: &Path) -> ChildGuard {
        let f = std::fs::File::create(out).unwrap_or_else(|e| panic!("{e}"));
        let c = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-q", "1", "-t", topic])
            .stdout(Stdio::from(f))
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("mosquitto_sub: {e}"));
        ChildGuard(c)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A helper process killed when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `redis-cli` against `url`'s port; the raw output lines.
pub fn redis_cli(port: u16, args: &[&str]) -> Vec<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--raw"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli: {e} (install redis-tools with ./scripts/setup)"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}
