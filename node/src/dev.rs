//! `edgerun dev`: a local cluster on 127.0.0.1 for trying edgerun out, with a demo.
//!
//! One node runs in this process; more nodes run as child processes (`edgerun node`), each
//! with its own ports and data dir, and stop with this one (Ctrl-C).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use edgerun_config::{NodeConfig, Sources};
use edgerun_testkit::{Log, NodeProcess};
use serde_json::json;

use crate::cli::{toml_string, DevArgs};
use crate::client::Client;

const MAX_NODES: u32 = 9;

struct NodePorts {
    id: u64,
    api: u16,
    rpc: u16,
}

fn ports(base: u16, n: u32) -> Vec<NodePorts> {
    (0..n as u16)
        .map(|i| NodePorts {
            id: i as u64 + 1,
            api: base + i,
            rpc: base + 100 + i,
        })
        .collect()
}

fn overrides(
    dir: &Path,
    me: &NodePorts,
    all: &[NodePorts],
    tls: Option<&crate::cert::Made>,
) -> Vec<(String, String)> {
    let mut o = vec![
        ("node.id".to_string(), me.id.to_string()),
        (
            "node.data_dir".into(),
            toml_string(&dir.join(format!("n{}", me.id)).display().to_string()),
        ),
        (
            "api.listen".into(),
            toml_string(&format!("127.0.0.1:{}", me.api)),
        ),
        (
            "cluster.listen".into(),
            toml_string(&format!("127.0.0.1:{}", me.rpc)),
        ),
        // One secret and one admin key for the whole cluster (a token works on every node),
        // and one cluster RPC secret (members prove it to each other).
        (
            "cluster.secret_file".into(),
            toml_string(&dir.join("cluster.secret").display().to_string()),
        ),
        (
            "auth.jwt_secret_file".into(),
            toml_string(&dir.join("jwt.secret").display().to_string()),
        ),
        (
            "auth.api_keys".into(),
            format!(
                "[{{ key_file = {}, role = \"admin\" }}]",
                toml_string(&dir.join("admin.key").display().to_string())
            ),
        ),
    ];
    if all.len() > 1 {
        let layout = edgerun_testkit::Layout {
            members: all
                .iter()
                .map(|p| edgerun_testkit::Member {
                    id: p.id,
                    api: format!("127.0.0.1:{}", p.api),
                    rpc: format!("127.0.0.1:{}", p.rpc),
                })
                .collect(),
        };
        o.push(("cluster.peers".into(), layout.peers_toml()));
    }
    if let Some(t) = tls {
        o.push((
            "api.tls_cert_file".into(),
            toml_string(&t.cert.display().to_string()),
        ));
        o.push((
            "api.tls_key_file".into(),
            toml_string(&t.key.display().to_string()),
        ));
    }
    o
}

pub fn run(a: DevArgs) -> anyhow::Result<()> {
    if a.nodes == 0 || a.nodes > MAX_NODES {
        anyhow::bail!(
            "invalid value for --nodes: {}; accepted: 1 to {MAX_NODES}",
            a.nodes
        );
    }
    if a.port as u32 + 100 + a.nodes > u16::MAX as u32 {
        anyhow::bail!(
            "invalid value for --port: {}; the cluster ports would run past 65535",
            a.port
        );
    }
    let all = ports(a.port, a.nodes);
    // Every port before anything is made or started: a taken one (another edgerun dev?) is
    // named here, not found out later through a node's log.
    for p in &all {
        let at = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        crate::wiring::check_listen(&format!("node {} api.listen", p.id), at(p.api))?;
        crate::wiring::check_listen(&format!("node {} cluster.listen", p.id), at(p.rpc))?;
    }
    let (dir, _scratch) = match a.dir {
        Some(d) => (d, None),
        None => {
            let s = Scratch::make(&std::env::temp_dir().join(format!("edgerun-dev-{}", a.port)))?;
            (s.0.clone(), Some(s))
        }
    };
    let tls = if a.tls {
        let hosts = ["localhost", "127.0.0.1", "::1"].map(String::from);
        Some(crate::cert::make(&dir.join("tls"), &hosts, 30)?)
    } else {
        None
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let urls: Vec<String> = all
        .iter()
        .map(|p| format!("{scheme}://127.0.0.1:{}", p.api))
        .collect();
    // Check every node's config before starting any.
    let mut cfgs = Vec::new();
    for p in &all {
        let cfg: NodeConfig = edgerun_config::load(&Sources {
            file: None,
            env: Sources::process_env(),
            overrides: overrides(&dir, p, &all, tls.as_ref()),
        })?;
        cfgs.push(cfg);
    }
    let demo = !a.no_demo;
    let show_urls = urls.clone();
    let ca = tls.as_ref().map(|t| t.ca.clone());
    let key_file = cfgs
        .first()
        .filter(|c| c.auth.enabled)
        .map(|_| dir.join("admin.key"));
    std::thread::spawn(move || {
        if let Err(e) = show(&show_urls, demo, key_file, ca) {
            eprintln!("edgerun dev: {e:#}");
        }
    });
    if a.nodes == 1 {
        let cfg = cfgs.into_iter().next().context("no node config")?;
        return crate::wiring::run(cfg, None);
    }
    run_children(&dir, &all, tls.as_ref())
}

/// The data directory of a dev cluster run without `--dir`: a fixed name per base port (the
/// ports are free, so no cluster of ours uses it), made fresh and removed on exit.
struct Scratch(PathBuf);

/// Written into a scratch directory: only a directory holding it is ever removed.
const SCRATCH_MARK: &str = ".edgerun-dev";

impl Scratch {
    fn make(dir: &Path) -> anyhow::Result<Scratch> {
        if dir.exists() {
            if !dir.join(SCRATCH_MARK).is_file() {
                anyhow::bail!(
                    "{} exists and was not made by edgerun dev; remove it or pass --dir",
                    dir.display()
                );
            }
            // Left by a run that was killed (its ports are free again).
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("removing the old {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let s = Scratch(dir.to_path_buf());
        std::fs::write(dir.join(SCRATCH_MARK), b"")
            .with_context(|| format!("creating {}", dir.join(SCRATCH_MARK).display()))?;
        Ok(s)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("edgerun dev: removing {}: {e}", self.0.display());
        }
    }
}

/// The last error lines of a node's log (its reason to exit), to print with its death.
fn last_errors(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ERROR") || l.starts_with("edgerun: error"))
        .collect();
    let tail: Vec<&str> = lines.iter().rev().take(3).rev().copied().collect();
    if tail.is_empty() {
        String::new()
    } else {
        format!(":\n  {}\n", tail.join("\n  "))
    }
}

/// Start one `edgerun node` per member and stop them all on Ctrl-C or when one dies.
fn run_children(
    dir: &Path,
    all: &[NodePorts],
    tls: Option<&crate::cert::Made>,
) -> anyhow::Result<()> {
    crate::wiring::init_logging();
    let exe = std::env::current_exe().context("finding the edgerun binary")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut children: Vec<(u64, NodeProcess, PathBuf)> = Vec::new();
    for p in all {
        let log = dir.join(format!("n{}.log", p.id));
        let mut cmd = Command::new(&exe);
        cmd.arg("node");
        for (k, v) in overrides(dir, p, all, tls) {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        let mut child = NodeProcess::default();
        let pid = child
            .spawn(cmd, Log::Fresh(&log))
            .with_context(|| format!("starting node {} (log {})", p.id, log.display()))?;
        tracing::info!(node = p.id, pid, log = %log.display(), "node started");
        children.push((p.id, child, log));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let died = rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let stop = crate::wiring::shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return None,
                _ = tick.tick() => {
                    for (id, c, log) in children.iter_mut() {
                        if let Some(st) = c.exit_status() {
                            return Some(format!(
                                "node {id} exited ({st}){}; its log is {}",
                                last_errors(log),
                                log.display()
                            ));
                        }
                    }
                }
            }
        }
    });
    tracing::info!("stopping {} nodes", children.len());
    // All asked at once, then each given up to 15 s before a kill -9.
    for (_, c, _) in children.iter() {
        let _ = c.signal("TERM");
    }
    for (id, c, _) in children.iter_mut() {
        if c.stop(Duration::from_secs(15)).is_none() {
            tracing::warn!(node = *id, "did not stop in 15 s; killed it");
        }
    }
    match died {
        Some(why) => anyhow::bail!(why),
        None => Ok(()),
    }
}

/// Wait until every node is ready, print how to use the cluster, and run a demo.
fn show(
    urls: &[String],
    demo: bool,
    key_file: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> anyhow::Result<()> {
    let client = |u: &str, key: Option<String>| match &ca {
        Some(ca) => Client::with_ca(u, None, key, ca),
        None => Ok(Client::with_credentials(u, None, key)),
    };
    let clients: Vec<Client> = urls
        .iter()
        .map(|u| client(u, None))
        .collect::<anyhow::Result<_>>()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    for (c, url) in clients.iter().zip(urls) {
        loop {
            match c.get("/readyz") {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    anyhow::bail!("{url} did not become ready in 60 s: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    // With auth on (the default) every call needs a token: use the admin key.
    let key = match &key_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the admin key {}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let clients: Vec<Client> = urls
        .iter()
        .map(|u| client(u, key.clone()))
        .collect::<anyhow::Result<_>>()?;
    let cluster = clients[0].get("/v1/cluster")?;
    println!(
        "\nedgerun is up: {} node(s), leader node {}  (Ctrl-C stops it)",
        urls.len(),
        cluster["leader"]
    );
    for u in urls {
        println!("  {u}");
    }
    let url = &urls[0];
    let cacert = match &ca {
        Some(ca) => {
            println!("\n  TLS: clients trust the CA {}", ca.display());
            format!(" --cacert {}", ca.display())
        }
        None => String::new(),
    };
    let auth = match (&key, &key_file) {
        (Some(k), Some(f)) => {
            println!("\n  admin API key: {k}   (in {})", f.display());
            println!("  token:   TOKEN=$(curl -s{cacert} -XPOST {url}/v1/auth/token -d \"{{\\\"api_key\\\":\\\"$(cat {})\\\"}}\" | sed 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/')", f.display());
            " -H \"Authorization: Bearer $TOKEN\""
        }
        _ => "",
    };
    let auth = format!("{cacert}{auth}");
    println!("\n  submit:  curl -s{auth} -XPOST {url}/v1/tasks -d '{{\"kernel\":\"stats\",\"input\":{{\"values\":[3,1,4,1,5,9,2,6]}}}}'");
    println!("  wait:    curl -s{auth} '{url}/v1/tasks/1/wait?timeout=10s'");
    let mut key_env = if key.is_some() {
        match &key_file {
            Some(f) => format!("EDGERUN_API_KEY=$(cat {}) ", f.display()),
            None => String::new(),
        }
    } else {
        String::new()
    };
    if let Some(ca) = &ca {
        key_env = format!("EDGERUN_CA_CERT={} {key_env}", ca.display());
    }
    println!("  or:      {key_env}edgerun task submit --url {url} --kernel matmul --input '{{\"a\":[[1,2],[3,4]],\"b\":[[5,6],[7,8]]}}' --wait");
    println!("  live:    {key_env}edgerun top --url {url}");
    let sign_in = if key.is_some() {
        "  (sign in with the admin API key above)"
    } else {
        ""
    };
    println!("  dashboard: {url}/{sign_in}\n");
    if demo {
        let n = 2 * clients.len();
        let mut ids = Vec::new();
        for i in 0..n {
            let c = &clients[i % clients.len()];
            let t = c.post("/v1/tasks", &json!({"kernel": "matmul", "input": {"a": [[1, 2], [3, 4]], "b": [[5, 6], [7, i]]}}))?;
            ids.push((
                i % clients.len(),
                t.get("id")
                    .and_then(|v| v.as_u64())
                    .context("no id in the answer")?,
            ));
        }
        for (via, id) in ids {
            let done = clients[via].get(&format!("/v1/tasks/{id}/wait?timeout=30s"))?;
            println!(
                "demo: task {id} submitted via {} {} on node {}: {}",
                urls[via],
                done["status"].as_str().unwrap_or("?"),
                done["node"],
                done["result"]
            );
        }
        demo_stream(&clients[0], &clients[clients.len() - 1])?;
    }
    Ok(())
}

/// The demo stream job: per sensor, 10-second windows of readings POSTed to another node
/// than the one the job was created on (forwarded to the job's node).
fn demo_stream(create_via: &Client, send_via: &Client) -> anyhow::Result<()> {
    let job = create_via.post(
        "/v1/streams",
        &json!({
            "name": "demo-temps",
            "source": { "type": "http" },
            "time": { "field": "ts", "max_delay_ms": 2000 },
            "pipeline": [
                { "filter": "temp > -50.0" },
                { "key_by": "sensor" },
                { "window": { "type": "tumbling", "size_ms": 10000 },
                  "aggregate": { "n": { "count": "*" }, "mean": { "mean": "temp" }, "p99": { "p99": "temp" } } }
            ],
            "sink": { "type": "results" }
        }),
    )?;
    let id = job["id"].as_u64().context("no id in the answer")?;
    // The last 30 s, a reading every 0.5 s from 3 sensors.
    let t0 = edgerun_actors::now_ms() as i64 - 30_000;
    let records: Vec<serde_json::Value> = (0..60)
        .map(|i| json!({"sensor": format!("s{}", i % 3), "ts": t0 + i * 500, "temp": 20.0 + (i % 7) as f64 * 0.5}))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The job starts on its node within a scheduler tick or two: 503 until then.
    let sent = loop {
        match send_via.post(
            &format!("/v1/streams/{id}/records"),
            &serde_json::Value::from(records.clone()),
        ) {
            Ok(v) => break v,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let results = create_via.get(&format!("/v1/streams/{id}/results"))?;
    let n = results["results"].as_array().map_or(0, Vec::len);
    println!(
        "demo: stream job {id} (edgerun stream get {id}) took {} readings; {n} windows closed so far (edgerun stream results {id})",
        sent["accepted"]
    );
    Ok(())
}
