//! The nodes under test: real `edgerun node` processes, each with its own config file, data
//! directory and log, started through the network backend.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::net::{Addrs, Kind, Net};

/// Settings every node of a scenario gets.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub isolation: &'static str,
    pub slots: u32,
    /// `debug.kernel_delay_ms`: keeps attempts in flight long enough to be cut off.
    pub kernel_delay_ms: u64,
    /// Extra `key = value` lines by section.
    pub extra: Vec<(&'static str, String)>,
    /// Run every node under libfaketime so its wall clock can be moved ([`ChaosNode::set_clock`]).
    pub faketime: Option<PathBuf>,
}

/// Where Debian's libfaketime puts the preload library.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

pub struct ChaosNode {
    pub id: u64,
    pub addrs: Addrs,
    pub dir: PathBuf,
    pub voter: bool,
    proc: edgerun_testkit::NodeProcess,
    /// Stopped with SIGSTOP and not yet continued.
    pub paused: bool,
    /// A tmpfs mounted on the data directory (full-disk scenarios).
    pub tmpfs: bool,
    /// The container this node runs in (docker backend): signals go through `docker`.
    pub container: Option<String>,
}

impl ChaosNode {
    pub fn url(&self) -> String {
        format!("http://{}", self.addrs.api)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    fn clock_file(&self) -> PathBuf {
        self.dir.join("faketime")
    }

    /// Move this node's wall clock (realtime only; monotonic time is untouched) to `offset_s`
    /// seconds from the real time. Needs the node to run under libfaketime.
    pub fn set_clock(&self, offset_s: i64) -> Result<()> {
        std::fs::write(self.clock_file(), format!("{offset_s:+}\n"))
            .with_context(|| format!("moving node {}'s clock", self.id))
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Running (not exited; a paused process counts as running).
    pub fn alive(&mut self) -> bool {
        self.proc.is_running()
    }

    /// How the process ended, if it has.
    pub fn exit_status(&mut self) -> Option<String> {
        self.proc.exit_status().map(|s| s.to_string())
    }

    pub fn signal(&mut self, sig: Signal) -> Result<()> {
        if let Some(name) = &self.container {
            let out = match sig {
                Signal::SIGSTOP => std::process::Command::new("docker")
                    .args(["pause", name])
                    .output(),
                Signal::SIGCONT => std::process::Command::new("docker")
                    .args(["unpause", name])
                    .output(),
                s => std::process::Command::new("docker")
                    .args(["kill", "--signal", s.as_str(), name])
                    .output(),
            }
            .with_context(|| format!("docker: signal {sig} to node {}", self.id))?;
            if !out.status.success() {
                bail!(
                    "docker: signal {sig} to node {}: {}",
                    self.id,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            return Ok(());
        }
        let Some(pid) = self.pid() else {
            bail!("node {} is not running", self.id)
        };
        kill(Pid::from_raw(pid as i32), sig)
            .with_context(|| format!("kill -{sig} node {}", self.id))
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        if let Some(name) = &self.container {
            if self.paused {
                let _ = std::process::Command::new("docker")
                    .args(["unpause", name])
                    .output();
            }
            let _ = std::process::Command::new("docker")
                .args(["kill", name])
                .output();
        }
        self.proc.kill9();
        self.paused = false;
    }
}

pub struct Cluster {
    pub nodes: BTreeMap<u64, ChaosNode>,
    pub net: Net,
    pub program: String,
    pub dir: PathBuf,
    pub settings: NodeSettings,
    /// The initial voters, as `cluster.peers`.
    peers: Vec<(u64, Addrs)>,
    pub http: ureq::Agent,
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Cluster {
    /// Place and start `voters` voters (ids 1..=voters) in `dir`; does not wait.
    pub fn start(
        program: &str,
        dir: &Path,
        mut net: Net,
        voters: u64,
        settings: NodeSettings,
        tmpfs_node: Option<(u64, u32)>,
    ) -> Result<Cluster> {
        let mut peers = Vec::new();
        for id in 1..=voters {
            peers.push((id, net.place(id)?));
        }
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            net,
            program: program.to_string(),
            dir: dir.to_path_buf(),
            settings,
            peers: peers.clone(),
            http: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_millis(500))
                .timeout(Duration::from_secs(2))
                .build(),
        };
        for (id, addrs) in peers {
            let node_dir = dir.join(format!("n{id}"));
            std::fs::create_dir_all(node_dir.join("data"))?;
            let mut node = ChaosNode {
                id,
                addrs,
                dir: node_dir,
                voter: true,
                proc: edgerun_testkit::NodeProcess::default(),
                paused: false,
                tmpfs: false,
                container: None,
            };
            if let Some((tid, mb)) = tmpfs_node {
                if tid == id {
                    mount_tmpfs(&node.data_dir(), mb)?;
                    node.tmpfs = true;
                }
            }
            c.nodes.insert(id, node);
            c.spawn(id)?;
        }
        Ok(c)
    }

    /// The cluster secret of this run (made on first use).
    fn secret(&self) -> Result<String> {
        let path = self.dir.join("cluster.secret");
        if let Ok(s) = std::fs::read_to_string(&path) {
            return Ok(s);
        }
        let mut raw = [0u8; 24];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut raw)?;
        let s: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&path, &s)?;
        Ok(s)
    }

    fn config(&self, node: &ChaosNode) -> String {
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|(id, a)| {
                format!(
                    "  {{ id = {id}, rpc = \"{}\", api = \"{}\" }},",
                    a.rpc, a.api
                )
            })
            .collect();
        let s = &self.settings;
        let mut extra: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (section, line) in &s.extra {
            extra.entry(section).or_default().push(line);
        }
        let more = |section: &str| extra.get(section).map(|l| l.join("\n")).unwrap_or_default();
        format!(
            "# written by edgerun-chaos\n[node]\nid = {id}\ndata_dir = \"{data}\"\n{node_x}\n\n\
             [api]\nlisten = \"{api}\"\n{api_x}\n\n\
             [cluster]\nlisten = \"{rpc}\"\nrole = \"{role}\"\nsecret_file = \"{secret}\"\npeers = [\n{peers}\n]\n{cluster_x}\n\n\
             [executor]\nisolation = \"{iso}\"\nslots = {slots}\n{exec_x}\n\n\
             [raft]\n{raft_x}\n\n\
             [auth]\nenabled = false\n\n\
             [limits]\n# the harness's clients all come from one address\nrequests_per_second = 1000000\nburst = 1000000\naddress_requests_per_second = 1000000\naddress_burst = 1000000\n\n\
             [debug]\nfault_injection = true\nkernel_delay_ms = {delay}\n",
            id = node.id,
            data = node.data_dir().display(),
            node_x = more("node"),
            api = node.addrs.api,
            api_x = more("api"),
            rpc = node.addrs.rpc,
            role = if node.voter { "voter" } else { "learner" },
            secret = node.dir.join("cluster.secret").display(),
            peers = peers.join("\n"),
            cluster_x = more("cluster"),
            iso = s.isolation,
            slots = s.slots,
            exec_x = more("executor"),
            raft_x = more("raft"),
            delay = s.kernel_delay_ms,
        )
    }

    /// (Re)start node `id` with its data.
    pub fn spawn(&mut self, id: u64) -> Result<()> {
        let node = self.node(id)?;
        // Every member proves the same cluster secret; the copy sits in the node's own
        // directory (the only one a docker-backend node sees).
        let secret = self.secret()?;
        let secret_path = node.dir.join("cluster.secret");
        if !secret_path.exists() {
            std::fs::write(&secret_path, &secret)?;
        }
        let cfg_path = node.dir.join("node.toml");
        std::fs::write(&cfg_path, self.config(node))?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())?;
        writeln!(log, "==== edgerun-chaos: starting node {id}")?;
        drop(log);
        let log_path = node.log_path();
        let clock = node.clock_file();
        let mut cmd = self.net.command(id, &self.program, &node.dir);
        if self.settings.faketime.is_some() && self.net.kind() == Kind::Docker {
            bail!("clock faults need libfaketime in the node's process; not on the docker backend");
        }
        let docker = self.net.kind() == Kind::Docker;
        if let Some(lib) = &self.settings.faketime {
            if !clock.exists() {
                std::fs::write(&clock, "+0\n")?;
            }
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", &clock)
                .env("FAKETIME_NO_CACHE", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        cmd.args(["node", "--config"])
            .arg(&cfg_path)
            .env("RUST_LOG", "info");
        let node = self.node_mut(id)?;
        node.proc
            .spawn(cmd, edgerun_testkit::Log::Append(&log_path))
            .with_context(|| format!("starting node {id}"))?;
        node.paused = false;
        node.container = docker.then(|| crate::net::container(id));
        Ok(())
    }

    /// Place a new node (a learner to be added by the membership fault) and start it.
    pub fn spawn_learner(&mut self, id: u64) -> Result<Addrs> {
        let addrs = self.net.place(id)?;
        let node_dir = self.dir.join(format!("n{id}"));
        std::fs::create_dir_all(node_dir.join("data"))?;
        self.nodes.insert(
            id,
            ChaosNode {
                id,
                addrs: addrs.clone(),
                dir: node_dir,
                voter: false,
                proc: edgerun_testkit::NodeProcess::default(),
                paused: false,
                tmpfs: false,
                container: None,
            },
        );
        self.spawn(id)?;
        Ok(addrs)
    }

    pub fn node(&self, id: u64) -> Result<&ChaosNode> {
        self.nodes.get(&id).with_context(|| format!("no node {id}"))
    }

    pub fn node_mut(&mut self, id: u64) -> Result<&mut ChaosNode> {
        self.nodes
            .get_mut(&id)
            .with_context(|| format!("no node {id}"))
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn urls(&self) -> Vec<(u64, String)> {
        self.nodes.values().map(|n| (n.id, n.url())).collect()
    }

    pub fn kind(&self) -> Kind {
        self.net.kind()
    }

    pub fn get(&self, id: u64, path: &str) -> Result<Answer, String> {
        let url = self.node(id).map_err(|e| e.to_string())?.url();
        answer(self.http.get(&format!("{url}{path}")).call())
    }

    pub fn send(&self, id: u64, method: &str, path: &str, body: &Value) -> Result<Answer, String> {
        let url = self.node(id).map_err(|e| e.to_string())?.url();
        answer(
            self.http
                .request(method, &format!("{url}{path}"))
                .send_json(body),
        )
    }

    /// The leader as the live nodes report it, when they agree.
    pub fn leader(&self) -> Option<u64> {
        let mut seen = None;
        for id in self.ids() {
            if let Ok(a) = self.get(id, "/v1/cluster") {
                if let Some(l) = a.body["leader"].as_u64() {
                    if seen.is_some_and(|s| s != l) {
                        return None;
                    }
                    seen = Some(l);
                }
            }
        }
        seen
    }

    /// Wait until every running, unpaused node answers /readyz 200; the time it took.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let mut waiting = Vec::new();
            let ids = self.ids();
            for id in ids {
                let n = self.node_mut(id)?;
                if !n.alive() || n.paused {
                    continue;
                }
                match self.get(id, "/readyz") {
                    Ok(a) if a.status == 200 => {}
                    Ok(a) => waiting.push(format!("node {id}: {} {}", a.status, a.body)),
                    Err(e) => waiting.push(format!("node {id}: {e}")),
                }
            }
            if waiting.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "nodes not ready after {timeout:?}; last seen: {}",
                    waiting.join("; ")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop every node (kill -9: a chaos run owes nobody a clean shutdown) and unmount.
    pub fn shutdown(&mut self) {
        for n in self.nodes.values_mut() {
            if n.paused {
                let _ = n.signal(Signal::SIGCONT);
            }
            n.kill9();
            if n.tmpfs {
                let _ = std::process::Command::new("umount")
                    .arg(n.data_dir())
                    .output();
                n.tmpfs = false;
            }
        }
        self.net.close();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn mount_tmpfs(dir: &Path, mb: u32) -> Result<()> {
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
        .arg(dir)
        .output()?;
    if !out.status.success() {
        bail!(
            "mounting a {mb} MB tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub fn answer(res: Result<ureq::Response, ureq::Error>) -> Result<Answer, String> {
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    let text = resp.into_string().map_err(|e| e.to_string())?;
    Ok(Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    })
}
