//! `edgerun bench <scenario>`: the numbers users compare us by, measured on loopback with real
//! processes (this binary as `edgerun node`, durable sled, Raft over TCP) and, for `submit`, a
//! 3-member etcd cluster (Debian's etcd-server) under the same client at the same concurrency.
//! Each scenario prints a table and writes JSON (`--out`, default `bench-<scenario>.json`).
//!
//! Nothing here asserts a time: the figures are reported, and compared as ratios where there
//! is something to compare with in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// Committed submissions/s and latency through a 3-node cluster, single and in batches,
    /// with a 3-member etcd cluster taking puts of the same size side by side.
    Submit {
        /// Concurrent clients (spread over the nodes).
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Tasks per batch call (etcd: puts per transaction).
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Skip etcd (not installed).
        #[arg(long)]
        no_etcd: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Submit → run → result committed, inproc and container: tasks/s and latency.
    E2e {
        /// Tasks per isolation mode.
        #[arg(long, default_value_t = 20_000)]
        tasks: usize,
        /// Isolation modes to measure.
        #[arg(long, value_delimiter = ',', default_value = "inproc,container")]
        isolation: Vec<String>,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// executor.slots of each node (inproc tasks are tiny: many at once).
        #[arg(long, default_value_t = 32)]
        slots: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Kill the leader with tasks in flight: → new leader, → first new placement, → all
    /// in-flight tasks done. Median of the rounds.
    Failover {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Each node's RSS idle and after N tasks; sled size on disk and space amplification.
    Memory {
        #[arg(long, default_value_t = 100_000)]
        tasks: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Process start → /readyz for one node; three nodes → an agreed leader. Median of rounds.
    Startup {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Stream jobs on one node: http batches → 1 s tumbling window over --keys keys →
    /// results (records/s); and MQTT → the same window → Redis beside mosquitto_sub draining
    /// the same broker (the ceiling for any consumer).
    Stream {
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 1000)]
        keys: usize,
        /// Records per POST.
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        /// Messages for the MQTT part (0 = skip it).
        #[arg(long, default_value_t = 200_000)]
        mqtt: usize,
        #[command(flatten)]
        common: Common,
    },
    /// WebAssembly tasks: start of a run beside a native process start, a C matmul as wasm
    /// beside the same C native, and wasm tasks/s through a 3-node cluster.
    Wasm {
        /// Runs for the start measurement.
        #[arg(long, default_value_t = 2000)]
        runs: usize,
        /// Side of the matmul.
        #[arg(long, default_value_t = 256)]
        matmul_n: usize,
        /// Tasks for the cluster part.
        #[arg(long, default_value_t = 10_000)]
        tasks: usize,
        #[command(flatten)]
        common: Common,
    },
    /// The leader's placement planner with 1,000 simulated nodes: placements/s.
    Scheduler {
        #[arg(long, default_value_t = 1000)]
        nodes: u64,
        /// Pending tasks placed per round.
        #[arg(long, default_value_t = 4000)]
        tasks: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Where the JSON goes (default bench-<scenario>.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Working directory for data (a temporary one, removed after, by default).
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    let (name, common) = match &cmd {
        BenchCmd::Submit { common, .. } => ("submit", common),
        BenchCmd::E2e { common, .. } => ("e2e", common),
        BenchCmd::Failover { common, .. } => ("failover", common),
        BenchCmd::Memory { common, .. } => ("memory", common),
        BenchCmd::Startup { common, .. } => ("startup", common),
        BenchCmd::Scheduler { common, .. } => ("scheduler", common),
        BenchCmd::Stream { common, .. } => ("stream", common),
        BenchCmd::Wasm { common, .. } => ("wasm", common),
    };
    let tmp;
    let dir = match &common.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix(&format!("edgerun-bench-{name}-"))
                .tempdir()
                .context("creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let out = common
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("bench-{name}.json")));
    let report = match cmd {
        BenchCmd::Submit {
            clients,
            secs,
            batch,
            no_etcd,
            ..
        } => submit(
            &dir,
            clients,
            Duration::from_secs_f64(secs),
            batch,
            !no_etcd,
        )?,
        BenchCmd::E2e {
            tasks,
            isolation,
            clients,
            slots,
            ..
        } => e2e(&dir, tasks, &isolation, clients, slots)?,
        BenchCmd::Failover { rounds, .. } => failover(&dir, rounds)?,
        BenchCmd::Memory { tasks, .. } => memory(&dir, tasks)?,
        BenchCmd::Startup { rounds, .. } => startup(&dir, rounds)?,
        BenchCmd::Scheduler {
            nodes,
            tasks,
            rounds,
            ..
        } => scheduler(nodes, tasks, rounds),
        BenchCmd::Stream {
            secs,
            clients,
            keys,
            batch,
            mqtt,
            ..
        } => crate::stream::stream(&dir, secs, clients, keys.max(1), batch.max(1), mqtt)?,
        BenchCmd::Wasm {
            runs,
            matmul_n,
            tasks,
            ..
        } => crate::wasm::wasm(&dir, runs.max(1), matmul_n.clamp(8, 2048), tasks.max(1))?,
    };
    let doc = json!({
        "scenario": name,
        "edgerun": env!("CARGO_PKG_VERSION"),
        "machine": machine(),
        "at_ms": edgerun_actors::now_ms(),
        "results": report,
    });
    std::fs::write(&out, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("(JSON in {})", out.display());
    Ok(())
}

fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    json!({ "cpus": cpus, "cpu": model, "build": if cfg!(debug_assertions) { "debug" } else { "release" } })
}

// ---- numbers ----------------------------------------------------------------------------

/// p50/p95/p99/max of `ms` (sorted here).
pub(crate) fn percentiles(ms: &mut [f64]) -> Value {
    if ms.is_empty() {
        return json!({ "n": 0 });
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    json!({ "n": ms.len(), "p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": at(1.0) })
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub(crate) fn f(v: &Value, k: &str) -> String {
    v[k].as_f64().map_or("-".into(), |x| {
        if x >= 100.0 {
            format!("{x:.0}")
        } else {
            format!("{x:.2}")
        }
    })
}

// ---- processes --------------------------------------------------------------------------

fn free_port() -> anyhow::Result<u16> {
    Ok(edgerun_testkit::free_port())
}

/// A process of a benchmarked cluster (an edgerun node, or an etcd member beside it).
pub(crate) struct Proc {
    id: u64,
    pub(crate) url: String,
    proc: edgerun_testkit::NodeProcess,
    args: Vec<String>,
    dir: PathBuf,
}

impl Proc {
    pub(crate) fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// kill -9 and reap (also when the Proc is dropped).
    pub(crate) fn kill(&mut self) {
        self.proc.kill9();
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("finding the edgerun binary")?;
        let mut cmd = Command::new(exe);
        cmd.args(&self.args).env("EDGERUN_LOG", "warn");
        self.proc
            .spawn(
                cmd,
                edgerun_testkit::Log::Append(&self.dir.join("node.log")),
            )
            .context("starting edgerun node")?;
        Ok(())
    }
}

/// `n` edgerun nodes as one cluster on loopback, spawned (not yet ready).
pub(crate) fn edgerun_cluster(dir: &Path, n: u64, sets: &[String]) -> anyhow::Result<Vec<Proc>> {
    let mut ports = Vec::new();
    let layout = edgerun_testkit::Layout::new(n, "127.0.0.1", |id| {
        let p = (edgerun_testkit::free_port(), edgerun_testkit::free_port());
        ports.push((id, p.0, p.1));
        p
    });
    let peers = layout.peers_set();
    let mut out = Vec::new();
    for (id, api, rpc) in ports {
        let d = dir.join(format!("n{id}"));
        std::fs::create_dir_all(&d)?;
        let mut args: Vec<String> = vec![
            "node".into(),
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            d.join("data").display().to_string(),
            "--api-listen".into(),
            format!("127.0.0.1:{api}"),
        ];
        let mut all = vec![
            format!("cluster.listen=\"127.0.0.1:{rpc}\""),
            format!(
                "cluster.secret_file=\"{}\"",
                dir.join("cluster.secret").display()
            ),
            "limits.max_pending=0".into(),
        ];
        all.extend(edgerun_testkit::HARNESS_SETS.iter().map(|s| s.to_string()));
        if n > 1 {
            all.push(peers.clone());
        }
        all.extend(sets.iter().cloned());
        for s in all {
            args.push("--set".into());
            args.push(s);
        }
        let mut p = Proc {
            id,
            url: format!("http://127.0.0.1:{api}"),
            proc: edgerun_testkit::NodeProcess::default(),
            args,
            dir: d,
        };
        p.spawn()?;
        out.push(p);
    }
    Ok(out)
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .max_idle_connections_per_host(64)
        .build()
}

/// Poll `probe` every `every` until it gives a value or `timeout` passes.
pub(crate) fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(every);
    }
}

/// The leader every node in `procs` agrees on.
fn agreed_leader(a: &ureq::Agent, procs: &[&Proc]) -> Option<u64> {
    let mut seen = None;
    for p in procs {
        let v: Value = a
            .get(&format!("{}/readyz", p.url))
            .call()
            .ok()?
            .into_json()
            .ok()?;
        let l = v["leader"].as_u64()?;
        if seen.is_some_and(|s| s != l) {
            return None;
        }
        seen = Some(l);
    }
    seen
}

pub(crate) fn wait_cluster(a: &ureq::Agent, procs: &[Proc]) -> anyhow::Result<u64> {
    let all: Vec<&Proc> = procs.iter().collect();
    poll(
        "the cluster to agree on a leader",
        Duration::from_secs(60),
        Duration::from_millis(5),
        || agreed_leader(a, &all),
    )
}

pub(crate) fn post_json(a: &ureq::Agent, url: &str, body: &Value) -> Result<Value, String> {
    match a.post(url).send_json(body) {
        Ok(r) => r.into_json().map_err(|e| e.to_string()),
        Err(ureq::Error::Status(code, r)) => Err(format!(
            "HTTP {code}: {}",
            r.into_string().unwrap_or_default()
        )),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn count_status(a: &ureq::Agent, url: &str, status: &str) -> Option<u64> {
    let v: Value = a
        .get(&format!("{url}/v1/cluster?stale=true"))
        .call()
        .ok()?
        .into_json()
        .ok()?;
    v["tasks"][status].as_u64()
}

// ---- load -------------------------------------------------------------------------------

struct Load {
    items: u64,
    calls: u64,
    errors: u64,
    secs: f64,
    latencies_ms: Vec<f64>,
    first_error: Option<String>,
}

/// `clients` threads, each sending `call(client, seq)` in a loop for `dur`; a call returns the
/// items it committed or an error.
fn load(
    clients: usize,
    dur: Duration,
    call: impl Fn(&ureq::Agent, usize, u64) -> Result<u64, String> + Sync,
) -> Load {
    let items = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let first_error = std::sync::Mutex::new(None);
    let started = Instant::now();
    let deadline = started + dur;
    let lat: Vec<Vec<f64>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                let (items, errors, call, first_error) = (&items, &errors, &call, &first_error);
                s.spawn(move || {
                    let a = agent();
                    let mut l = Vec::new();
                    let mut seq = 0u64;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        match call(&a, c, seq) {
                            Ok(n) => {
                                l.push(t.elapsed().as_secs_f64() * 1000.0);
                                items.fetch_add(n, Ordering::Relaxed);
                            }
                            Err(e) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                first_error
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .get_or_insert(e);
                            }
                        }
                        seq += 1;
                    }
                    l
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let latencies_ms: Vec<f64> = lat.into_iter().flatten().collect();
    Load {
        items: items.into_inner(),
        calls: latencies_ms.len() as u64,
        errors: errors.into_inner(),
        secs,
        latencies_ms,
        first_error: first_error.into_inner().unwrap_or_else(|p| p.into_inner()),
    }
}

fn load_json(system: &str, mode: &str, clients: usize, mut l: Load) -> Value {
    let mut v = json!({
        "system": system, "mode": mode, "clients": clients,
        "items_per_second": l.items as f64 / l.secs,
        "calls": l.calls, "items": l.items, "errors": l.errors, "secs": l.secs,
        "latency": percentiles(&mut l.latencies_ms),
    });
    if let Some(e) = l.first_error {
        v["first_error"] = json!(e);
    }
    v
}

// ---- submit -----------------------------------------------------------------------------

/// A task no node takes (there is no edge node): `submit` measures the submit path alone.
fn parked_task(client: usize, seq: u64) -> Value {
    json!({"kernel": "stats", "input": {"values": [client, seq, 1.5, 2.5]},
           "constraints": {"tier": "edge"}})
}

struct Etcd {
    procs: Vec<Proc>,
    clients: Vec<String>,
}

fn etcd_cluster(dir: &Path) -> anyhow::Result<Etcd> {
    let etcd = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .iter()
        .find(|p| Path::new(p).exists())
        .context("etcd is not installed (Debian package etcd-server; ./scripts/setup installs it), or pass --no-etcd")?;
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("e{}=http://127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Vec::new();
    let mut clients = Vec::new();
    for (i, (c, p)) in ports.iter().enumerate() {
        let d = dir.join(format!("etcd{}", i + 1));
        std::fs::create_dir_all(&d)?;
        let args: Vec<String> = vec![
            "--name".into(),
            format!("e{}", i + 1),
            "--data-dir".into(),
            d.join("data").display().to_string(),
            "--listen-client-urls".into(),
            format!("http://127.0.0.1:{c}"),
            "--advertise-client-urls".into(),
            format!("http://127.0.0.1:{c}"),
            "--listen-peer-urls".into(),
            format!("http://127.0.0.1:{p}"),
            "--initial-advertise-peer-urls".into(),
            format!("http://127.0.0.1:{p}"),
            "--initial-cluster".into(),
            initial.clone(),
            "--initial-cluster-state".into(),
            "new".into(),
            "--initial-cluster-token".into(),
            "edgerun-bench".into(),
            "--log-level".into(),
            "error".into(),
        ];
        let mut proc = edgerun_testkit::NodeProcess::default();
        let mut cmd = Command::new(etcd);
        cmd.args(&args);
        proc.spawn(cmd, edgerun_testkit::Log::Fresh(&d.join("etcd.log")))
            .context("starting etcd")?;
        clients.push(format!("http://127.0.0.1:{c}"));
        procs.push(Proc {
            id: i as u64 + 1,
            url: format!("http://127.0.0.1:{c}"),
            proc,
            args,
            dir: d,
        });
    }
    let a = agent();
    for c in &clients {
        poll(
            "etcd to be healthy",
            Duration::from_secs(60),
            Duration::from_millis(20),
            || {
                let v: Value = a
                    .get(&format!("{c}/health"))
                    .call()
                    .ok()?
                    .into_json()
                    .ok()?;
                (v["health"] == "true").then_some(())
            },
        )?;
    }
    Ok(Etcd { procs, clients })
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn submit(
    dir: &Path,
    clients: usize,
    dur: Duration,
    batch: usize,
    with_etcd: bool,
) -> anyhow::Result<Value> {
    let batch = batch.clamp(1, 128);
    let procs = edgerun_cluster(
        &dir.join("edgerun"),
        3,
        &["executor.isolation=\"inproc\"".into()],
    )?;
    let a = agent();
    wait_cluster(&a, &procs)?;
    let urls: Vec<String> = procs.iter().map(|p| p.url.clone()).collect();
    let body_bytes = serde_json::to_vec(&parked_task(0, 0))?.len();
    let mut rows = Vec::new();
    let single = |a: &ureq::Agent, c: usize, seq: u64| -> Result<u64, String> {
        post_json(
            a,
            &format!("{}/v1/tasks", urls[c % urls.len()]),
            &parked_task(c, seq),
        )
        .map(|_| 1)
    };
    let batched = |a: &ureq::Agent, c: usize, seq: u64| -> Result<u64, String> {
        let tasks: Vec<Value> = (0..batch)
            .map(|i| parked_task(c, seq * batch as u64 + i as u64))
            .collect();
        post_json(
            a,
            &format!("{}/v1/tasks/batch", urls[c % urls.len()]),
            &json!({ "tasks": tasks }),
        )
        .map(|_| batch as u64)
    };
    eprintln!("bench submit: edgerun, 1 client, single");
    rows.push(load_json("edgerun", "sequential", 1, load(1, dur, single)));
    eprintln!("bench submit: edgerun, {clients} clients, single");
    rows.push(load_json(
        "edgerun",
        "single",
        clients,
        load(clients, dur, single),
    ));
    eprintln!("bench submit: edgerun, {clients} clients, batches of {batch}");
    rows.push(load_json(
        "edgerun",
        &format!("batch{batch}"),
        clients,
        load(clients, dur, batched),
    ));
    drop(procs);
    if with_etcd {
        let etcd = etcd_cluster(&dir.join("etcd"))?;
        let value = b64(&serde_json::to_vec(&parked_task(0, 0))?);
        let eurls = etcd.clients.clone();
        let put = |a: &ureq::Agent, c: usize, seq: u64| -> Result<u64, String> {
            let key = b64(format!("task/{c}/{seq}").as_bytes());
            post_json(
                a,
                &format!("{}/v3/kv/put", eurls[c % eurls.len()]),
                &json!({"key": key, "value": value}),
            )
            .map(|_| 1)
        };
        let txn = |a: &ureq::Agent, c: usize, seq: u64| -> Result<u64, String> {
            let ops: Vec<Value> = (0..batch)
                .map(|i| json!({"requestPut": {"key": b64(format!("task/{c}/{seq}/{i}").as_bytes()), "value": value}}))
                .collect();
            post_json(
                a,
                &format!("{}/v3/kv/txn", eurls[c % eurls.len()]),
                &json!({"success": ops}),
            )
            .map(|_| batch as u64)
        };
        eprintln!("bench submit: etcd, 1 client, put");
        rows.push(load_json("etcd", "sequential", 1, load(1, dur, put)));
        eprintln!("bench submit: etcd, {clients} clients, put");
        rows.push(load_json(
            "etcd",
            "single",
            clients,
            load(clients, dur, put),
        ));
        eprintln!("bench submit: etcd, {clients} clients, txn of {batch}");
        rows.push(load_json(
            "etcd",
            &format!("batch{batch}"),
            clients,
            load(clients, dur, txn),
        ));
        drop(etcd.procs);
    }
    println!("submit: 3 nodes on loopback, durable, {clients} clients, {:.0} s per row, body {body_bytes} bytes", dur.as_secs_f64());
    println!(
        "{:<8} {:<11} {:>7} {:>10} {:>8} {:>8} {:>8} {:>7}",
        "SYSTEM", "MODE", "CLIENTS", "ITEMS/S", "P50 MS", "P95 MS", "P99 MS", "ERRORS"
    );
    for r in &rows {
        println!(
            "{:<8} {:<11} {:>7} {:>10} {:>8} {:>8} {:>8} {:>7}",
            r["system"].as_str().unwrap_or(""),
            r["mode"].as_str().unwrap_or(""),
            r["clients"],
            f(r, "items_per_second"),
            f(&r["latency"], "p50_ms"),
            f(&r["latency"], "p95_ms"),
            f(&r["latency"], "p99_ms"),
            r["errors"]
        );
        if let Some(e) = r["first_error"].as_str() {
            println!("  first error: {}", e.chars().take(200).collect::<String>());
        }
    }
    let mut ratios = serde_json::Map::new();
    for mode in ["sequential", "single", &format!("batch{batch}")] {
        let rate = |sys: &str| {
            rows.iter()
                .find(|r| r["system"] == sys && r["mode"] == mode)
                .and_then(|r| r["items_per_second"].as_f64())
        };
        if let (Some(e), Some(d)) = (rate("edgerun"), rate("etcd")) {
            ratios.insert(mode.to_string(), json!(e / d));
            println!("edgerun / etcd ({mode}): {:.2}x", e / d);
        }
    }
    Ok(json!({ "body_bytes": body_bytes, "rows": rows, "ratio_edgerun_to_etcd": ratios }))
}

// ---- e2e --------------------------------------------------------------------------------

fn e2e(
    dir: &Path,
    tasks: usize,
    modes: &[String],
    clients: usize,
    slots: u32,
) -> anyhow::Result<Value> {
    let mut rows = Vec::new();
    for mode in modes {
        let procs = edgerun_cluster(
            &dir.join(mode),
            3,
            &[
                format!("executor.isolation=\"{mode}\""),
                "cache.enabled=false".into(),
                format!("executor.slots={slots}"),
            ],
        )?;
        let a = agent();
        wait_cluster(&a, &procs)?;
        let urls: Vec<String> = procs.iter().map(|p| p.url.clone()).collect();
        let per_call = 100usize;
        let calls = tasks.div_ceil(per_call);
        let next = AtomicU64::new(0);
        eprintln!("bench e2e: {tasks} tasks, {mode}");
        let started = Instant::now();
        std::thread::scope(|s| {
            for c in 0..clients {
                let (next, urls) = (&next, &urls);
                s.spawn(move || {
                    let a = agent();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= calls {
                            return;
                        }
                        let batch: Vec<Value> = (0..per_call.min(tasks - i * per_call))
                            .map(|k| json!({"kernel": "stats", "input": {"values": [i, k, 1.5, 2.5]}}))
                            .collect();
                        let url = format!("{}/v1/tasks/batch", urls[c % urls.len()]);
                        while post_json(&a, &url, &json!({ "tasks": batch })).is_err() {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                });
            }
        });
        let submitted = started.elapsed().as_secs_f64();
        poll(
            "every task to end",
            Duration::from_secs(3600),
            Duration::from_millis(20),
            || {
                let done: u64 = ["succeeded", "failed", "timed_out"]
                    .iter()
                    .filter_map(|s| count_status(&a, &urls[0], s))
                    .sum();
                (done >= tasks as u64).then_some(())
            },
        )?;
        let secs = started.elapsed().as_secs_f64();
        // Per-task latency: created → finished, from the tasks themselves.
        let mut lat = Vec::new();
        let mut after: Option<u64> = None;
        let mut failed = 0;
        loop {
            let mut q = format!("{}/v1/tasks?limit=1000&stale=true", urls[0]);
            if let Some(x) = after {
                q.push_str(&format!("&after={x}"));
            }
            let v: Value = a
                .get(&q)
                .call()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .into_json()?;
            for t in v["tasks"].as_array().into_iter().flatten() {
                if t["status"] != "succeeded" {
                    failed += 1;
                }
                if let (Some(c), Some(fin)) = (t["created_at"].as_u64(), t["finished_at"].as_u64())
                {
                    lat.push(fin.saturating_sub(c) as f64);
                }
            }
            match v["next"].as_u64() {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let row = json!({
            "isolation": mode, "tasks": tasks, "clients": clients, "slots": slots,
            "tasks_per_second": tasks as f64 / secs, "secs": secs,
            "submitted_in_secs": submitted, "not_succeeded": failed,
            "latency": percentiles(&mut lat),
        });
        println!(
            "e2e {mode}: {tasks} tasks in {secs:.2} s = {:.0} tasks/s (submitted in {submitted:.2} s); created→finished p50 {} ms, p95 {} ms, p99 {} ms; {failed} not succeeded",
            tasks as f64 / secs,
            f(&row["latency"], "p50_ms"),
            f(&row["latency"], "p95_ms"),
            f(&row["latency"], "p99_ms")
        );
        rows.push(row);
    }
    Ok(json!({ "rows": rows }))
}

// ---- failover ---------------------------------------------------------------------------

fn failover(dir: &Path, rounds: usize) -> anyhow::Result<Value> {
    let mut procs = edgerun_cluster(
        dir,
        3,
        &[
            "executor.isolation=\"inproc\"".into(),
            "debug.kernel_delay_ms=300".into(),
            "cache.enabled=false".into(),
        ],
    )?;
    let a = agent();
    let mut to_leader = Vec::new();
    let mut to_placement = Vec::new();
    let mut to_done = Vec::new();
    let mut rows = Vec::new();
    for round in 0..rounds {
        let leader = wait_cluster(&a, &procs)?;
        let li = procs
            .iter()
            .position(|p| p.id == leader)
            .context("leader not found")?;
        let other = procs
            .iter()
            .find(|p| p.id != leader)
            .map(|p| p.url.clone())
            .context("no follower")?;
        // In flight: 30 tasks of 300 ms each on 3 nodes × 4 slots.
        let batch: Vec<Value> = (0..30)
            .map(|k| json!({"kernel": "stats", "input": {"values": [round, k]}}))
            .collect();
        let v = post_json(
            &a,
            &format!("{other}/v1/tasks/batch"),
            &json!({ "tasks": batch }),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let ids: Vec<u64> = v["ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect();
        poll(
            "tasks to be running",
            Duration::from_secs(30),
            Duration::from_millis(5),
            || count_status(&a, &other, "running").filter(|n| *n > 0),
        )?;
        let waiting: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| {
                a.get(&format!("{other}/v1/tasks/{id}?stale=true"))
                    .call()
                    .ok()
                    .and_then(|r| r.into_json::<Value>().ok())
                    .is_some_and(|v| v["status"] == "pending")
            })
            .collect();
        let t0 = Instant::now();
        procs[li].kill();
        let survivors: Vec<&Proc> = procs.iter().filter(|p| p.id != leader).collect();
        let new_leader = poll(
            "a new leader",
            Duration::from_secs(60),
            Duration::from_millis(2),
            || agreed_leader(&a, &survivors).filter(|l| *l != leader),
        )?;
        let t_leader = t0.elapsed().as_secs_f64() * 1000.0;
        // The first placement the cluster makes after the kill: a task that was waiting
        // when the leader died, or one submitted after it (high priority: first in line).
        let probe = poll(
            "a submission to be taken",
            Duration::from_secs(60),
            Duration::from_millis(2),
            || {
                post_json(
                    &a,
                    &format!("{other}/v1/tasks"),
                    &json!({"kernel": "stats", "input": {"values": [round, 999]}, "priority": 100}),
                )
                .ok()
                .and_then(|v| v["id"].as_u64())
            },
        )?;
        let mut watch = waiting.clone();
        watch.push(probe);
        poll(
            "a first placement",
            Duration::from_secs(60),
            Duration::from_millis(2),
            || {
                watch
                    .iter()
                    .any(|id| {
                        a.get(&format!("{other}/v1/tasks/{id}?stale=true"))
                            .call()
                            .ok()
                            .and_then(|r| r.into_json::<Value>().ok())
                            .is_some_and(|v| v["node"].as_u64().is_some())
                    })
                    .then_some(())
            },
        )?;
        let t_place = t0.elapsed().as_secs_f64() * 1000.0;
        poll(
            "the in-flight tasks to end",
            Duration::from_secs(120),
            Duration::from_millis(5),
            || {
                ids.iter()
                    .all(|id| {
                        a.get(&format!("{other}/v1/tasks/{id}?stale=true"))
                            .call()
                            .ok()
                            .and_then(|r| r.into_json::<Value>().ok())
                            .is_some_and(|v| {
                                ["succeeded", "failed", "timed_out"]
                                    .contains(&v["status"].as_str().unwrap_or(""))
                            })
                    })
                    .then_some(())
            },
        )?;
        let t_done = t0.elapsed().as_secs_f64() * 1000.0;
        println!("failover round {}: leader {leader} killed → node {new_leader} leads in {t_leader:.0} ms, first placement {t_place:.0} ms, in-flight done {t_done:.0} ms", round + 1);
        rows.push(json!({"killed": leader, "new_leader": new_leader, "leader_ms": t_leader, "first_placement_ms": t_place, "in_flight_done_ms": t_done}));
        to_leader.push(t_leader);
        to_placement.push(t_place);
        to_done.push(t_done);
        procs[li].spawn()?;
        let all: Vec<&Proc> = procs.iter().collect();
        // Back, and caught up: a survivor of the next round that is still replaying the log
        // cannot win an election, which would measure the restart, not the failover.
        poll(
            "the killed node back in the cluster and caught up",
            Duration::from_secs(60),
            Duration::from_millis(10),
            || {
                agreed_leader(&a, &all)?;
                let applied: Vec<u64> = all
                    .iter()
                    .map(|p| {
                        a.get(&format!("{}/readyz", p.url))
                            .call()
                            .ok()
                            .and_then(|r| r.into_json::<Value>().ok())
                            .and_then(|v| v["applied"].as_u64())
                    })
                    .collect::<Option<_>>()?;
                let (lo, hi) = (applied.iter().min()?, applied.iter().max()?);
                (lo == hi).then_some(())
            },
        )?;
        // Every member's circuits to the restarted node closed again (their cooldown).
        std::thread::sleep(Duration::from_secs(1));
    }
    let (ml, mp, md) = (
        median(&mut to_leader),
        median(&mut to_placement),
        median(&mut to_done),
    );
    println!("failover, median of {rounds}: new leader {ml:.0} ms, first placement {mp:.0} ms, in-flight done {md:.0} ms");
    Ok(
        json!({ "rounds": rows, "median_ms": {"leader": ml, "first_placement": mp, "in_flight_done": md} }),
    )
}

// ---- memory -----------------------------------------------------------------------------

pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn memory(dir: &Path, tasks: usize) -> anyhow::Result<Value> {
    let mut procs = edgerun_cluster(
        dir,
        3,
        &[
            "executor.isolation=\"inproc\"".into(),
            "cache.enabled=false".into(),
        ],
    )?;
    let a = agent();
    wait_cluster(&a, &procs)?;
    // Let start-up settle (registrations, first heartbeats) before reading "idle".
    std::thread::sleep(Duration::from_secs(2));
    let idle: Vec<u64> = procs
        .iter()
        .filter_map(|p| p.pid().and_then(rss_kib))
        .collect();
    let urls: Vec<String> = procs.iter().map(|p| p.url.clone()).collect();
    eprintln!("bench memory: {tasks} tasks");
    let started = Instant::now();
    let per_call = 1000;
    for (i, start) in (0..tasks).step_by(per_call).enumerate() {
        let batch: Vec<Value> = (start..(start + per_call).min(tasks))
            .map(|k| json!({"kernel": "stats", "input": {"values": [k, 1.5, 2.5]}}))
            .collect();
        post_json(
            &a,
            &format!("{}/v1/tasks/batch", urls[i % urls.len()]),
            &json!({ "tasks": batch }),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    poll(
        "every task to end",
        Duration::from_secs(3600),
        Duration::from_millis(50),
        || count_status(&a, &urls[0], "succeeded").filter(|n| *n >= tasks as u64),
    )?;
    let secs = started.elapsed().as_secs_f64();
    let rss = |procs: &[Proc]| -> Vec<u64> {
        procs
            .iter()
            .filter_map(|p| p.pid().and_then(rss_kib))
            .collect()
    };
    let loaded = rss(&procs);
    // Settled: the Monitor hands freed memory back every 10 s; wait until no node's resident
    // size has dropped for 12 s (at most a minute).
    let mut settled = loaded.clone();
    let mut last_drop = Instant::now();
    let settle_start = Instant::now();
    while last_drop.elapsed() < Duration::from_secs(12)
        && settle_start.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(500));
        let now = rss(&procs);
        if now.iter().zip(&settled).any(|(n, s)| *n + 1024 < *s) {
            last_drop = Instant::now();
        }
        settled = now;
    }
    for p in procs.iter_mut() {
        p.kill();
    }
    let mut disk = Vec::new();
    for p in &procs {
        let data = p.dir.join("data");
        let data = edgerun_raft::DataDir::open_stopped(&data, 16)?;
        let r = edgerun_raft::doctor::inspect(&data, true);
        disk.push(json!({"node": p.id, "data_dir_bytes": r.data_dir_bytes, "snapshot_bytes": r.snapshot_bytes, "log_bytes": r.log_bytes, "log_entries": r.log_entries, "db_bytes": r.db_bytes, "live_bytes": r.live_bytes, "space_amplification": r.space_amplification}));
    }
    let mib = |k: &u64| *k as f64 / 1024.0;
    println!("memory: 3 nodes, {tasks} tasks run in {secs:.1} s");
    println!(
        "{:<5} {:>10} {:>16} {:>12} {:>9} {:>8} {:>9} {:>9}",
        "NODE",
        "IDLE MiB",
        "AFTER TASKS MiB",
        "SETTLED MiB",
        "SLED MiB",
        "LOG MiB",
        "SNAP MiB",
        "DATA MiB"
    );
    let mb = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0) / 1048576.0;
    for (i, p) in procs.iter().enumerate() {
        println!(
            "{:<5} {:>10.1} {:>16.1} {:>12.1} {:>9.1} {:>8.1} {:>9.1} {:>9.1}",
            p.id,
            idle.get(i).map_or(0.0, mib),
            loaded.get(i).map_or(0.0, mib),
            settled.get(i).map_or(0.0, mib),
            mb(&disk[i], "db_bytes"),
            mb(&disk[i], "log_bytes"),
            mb(&disk[i], "snapshot_bytes"),
            mb(&disk[i], "data_dir_bytes"),
        );
    }
    Ok(
        json!({"tasks": tasks, "secs": secs, "idle_rss_kib": idle, "after_rss_kib": loaded, "settled_rss_kib": settled, "disk": disk}),
    )
}

// ---- startup ----------------------------------------------------------------------------

fn startup(dir: &Path, rounds: usize) -> anyhow::Result<Value> {
    let a = agent();
    let mut one = Vec::new();
    let mut three = Vec::new();
    for r in 0..rounds {
        let t0 = Instant::now();
        let procs = edgerun_cluster(
            &dir.join(format!("one{r}")),
            1,
            &["executor.isolation=\"inproc\"".into()],
        )?;
        let url = procs[0].url.clone();
        poll(
            "one node to be ready",
            Duration::from_secs(60),
            Duration::from_millis(1),
            || a.get(&format!("{url}/readyz")).call().ok().map(|_| ()),
        )?;
        one.push(t0.elapsed().as_secs_f64() * 1000.0);
        drop(procs);
        let t0 = Instant::now();
        let procs = edgerun_cluster(
            &dir.join(format!("three{r}")),
            3,
            &["executor.isolation=\"inproc\"".into()],
        )?;
        let all: Vec<&Proc> = procs.iter().collect();
        poll(
            "three nodes to agree on a leader",
            Duration::from_secs(60),
            Duration::from_millis(1),
            || agreed_leader(&a, &all),
        )?;
        three.push(t0.elapsed().as_secs_f64() * 1000.0);
        drop(procs);
    }
    println!("startup (ms, each of {rounds} rounds): one node → ready {one:.0?}; three nodes → agreed leader {three:.0?}");
    let (m1, m3) = (median(&mut one.clone()), median(&mut three.clone()));
    println!("startup, median: one node ready in {m1:.0} ms; three nodes agree on a leader in {m3:.0} ms");
    Ok(
        json!({"one_node_ready_ms": one, "three_nodes_leader_ms": three, "median_ms": {"one_node_ready": m1, "three_nodes_leader": m3}}),
    )
}

// ---- scheduler --------------------------------------------------------------------------

fn scheduler(nodes: u64, tasks: usize, rounds: usize) -> Value {
    use edgerun_actors::scheduler::{plan, Policy};
    use edgerun_model::{Admission, ClusterState, Command, RaftRequest, TaskSpec};
    use std::collections::{HashMap, HashSet};
    let apply = |s: &mut ClusterState, c: Command| {
        s.apply(&RaftRequest::new(c), &mut Vec::new());
    };
    let mut s = edgerun_actors::scheduler::simulated_cluster(nodes);
    let mut spec = TaskSpec::kernel("stats", "{}");
    spec.resources.memory_mb = Some(256);
    spec.resources.cpu_millis = Some(500);
    apply(
        &mut s,
        Command::Submit {
            now_ms: 0,
            tasks: vec![spec; tasks],
            admission: Admission::default(),
        },
    );
    let (none, evicting) = (HashMap::new(), HashSet::new());
    let policy = Policy::default();
    let mut rates = Vec::new();
    let mut placed = 0;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let p = plan(&s, &none, &evicting, tasks, 0, &policy, |_| true);
        let secs = t.elapsed().as_secs_f64();
        placed = p.assignments.len();
        rates.push(placed as f64 / secs);
    }
    let m = median(&mut rates.clone());
    println!("scheduler: {placed} of {tasks} pending tasks placed on {nodes} nodes per plan; median {m:.0} placements/s over {rounds} rounds (planner only; the Raft write of the assignments is in e2e)");
    json!({"nodes": nodes, "pending": tasks, "placed_per_plan": placed, "placements_per_second": rates, "median_placements_per_second": m})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(&mut v);
        assert_eq!(
            (
                p["p50_ms"].as_f64(),
                p["p99_ms"].as_f64(),
                p["max_ms"].as_f64()
            ),
            (Some(50.0), Some(99.0), Some(100.0))
        );
    }
}
