//! edgerun-chaos: start real edgerun clusters, break them on a schedule while clients work,
//! then check that nothing was lost, duplicated or read out of order.
//!
//! ```text
//! edgerun-chaos                       # every scenario, short (CI)
//! edgerun-chaos --long --seed 42      # each scenario for minutes, random fault timing
//! edgerun-chaos --scenario kill-leader --scenario full-disk
//! ```
//!
//! # Layout
//! - `scenarios`: each scenario's cluster shape, faults and timing; `faults`: the faults as
//!   typed values and how each is done; `net`: where nodes live (network namespaces, 127.0.0.1
//!   or containers) and how the network between them is broken.
//! - `cluster`: the real `edgerun node` processes under test; `workload`: clients that submit
//!   with idempotency keys and retry, readers, and the leader monitor.
//! - `check`: the checkers run on the recorded history and the final state.
//!
//! Each run writes `report.json` and `report.md` per scenario plus a `summary.md`, and keeps
//! every node's log, under `--out` (default `target/chaos/run-<unix time>`).

mod check;
mod cluster;
mod faults;
mod net;
mod scenarios;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;
use serde_json::Value;

use check::Verdict;
use cluster::{Cluster, NodeSettings};
use faults::{Fault, Injected, Injector};
use net::{Kind, Net};
use scenarios::Scenario;
use workload::{History, Params, Workload};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Fault injection on real edgerun clusters, with checkers"
)]
struct Cli {
    /// Run only these scenarios (repeatable); see --list.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Run each scenario for --duration with a randomized fault schedule.
    #[arg(long)]
    long: bool,
    /// Length of each scenario's workload in long mode.
    #[arg(long, default_value = "3m", value_parser = humantime_duration)]
    duration: Duration,
    /// Seed of the fault schedule and the readers; printed so a run can be replayed.
    #[arg(long)]
    seed: Option<u64>,
    /// Where nodes run: netns (root; real packet loss), local (127.0.0.1 and the nodes' RPC
    /// fault filter). Default: netns when possible.
    #[arg(long, value_parser = parse_kind)]
    backend: Option<Kind>,
    /// The edgerun binary (default: $EDGERUN_BIN, else target/debug/edgerun).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Where reports and node logs go.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Readers use `?stale=true` (local reads): a self-test of the linearizability checker,
    /// which should then fail scenarios that isolate or pause the leader.
    #[arg(long)]
    stale_reads: bool,
    /// Executor isolation on the nodes.
    #[arg(long, default_value = "process")]
    isolation: String,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 90s, 3m)"))
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    match s {
        "netns" => Ok(Kind::Netns),
        "local" => Ok(Kind::Local),
        "docker" => Ok(Kind::Docker),
        _ => Err(format!(
            "{s:?} is not a backend; accepted: netns, local, docker"
        )),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Serialize)]
struct Operations {
    submit_requests: usize,
    submit_timeouts: usize,
    submit_refusals: usize,
    /// Answers with status 500 (an internal error is a bug even mid-fault: 503 is for that).
    server_errors: usize,
    reads: usize,
    read_failures: usize,
    acknowledged: usize,
    abandoned_unacknowledged: usize,
    tasks_in_cluster: usize,
}

#[derive(Debug, Default, Serialize)]
struct Recovery {
    /// Fault → a live node reports a new leader in a later term (ms), per leader fault.
    leader_election_ms: Vec<u64>,
    /// Fault → the first task submitted after it is placed (ms).
    first_placement_ms: Vec<u64>,
    /// Kill of a node → the first retried attempt placed after it (ms).
    reschedule_after_loss_ms: Vec<u64>,
    /// Final heal → every node ready (ms).
    ready_after_heal_ms: Option<u64>,
    /// Final heal → every acknowledged task ended (ms).
    drained_after_heal_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: String,
    about: String,
    backend: Kind,
    mode: &'static str,
    seed: u64,
    workload_ms: u64,
    faults: Vec<Injected>,
    skipped_faults: Vec<String>,
    operations: Operations,
    lost: usize,
    duplicates: usize,
    linearizable: bool,
    verdict: Verdict,
    recovery: Recovery,
    passed: bool,
    logs: PathBuf,
}

struct Opts {
    program: String,
    backend: Option<Kind>,
    long: bool,
    duration: Duration,
    isolation: String,
    stale_reads: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("edgerun-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    let all = scenarios::all();
    if cli.list {
        for s in &all {
            println!("{:<22} {} voters  {}", s.name, s.voters, s.about);
        }
        return Ok(true);
    }
    for name in &cli.scenarios {
        if !all.iter().any(|s| s.name == name) {
            bail!(
                "no scenario {name:?}; there are: {}",
                all.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            );
        }
    }
    let program = match cli
        .bin
        .or_else(|| std::env::var_os("EDGERUN_BIN").map(PathBuf::from))
    {
        Some(p) => p,
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/edgerun"),
    };
    let program = program.canonicalize().with_context(|| {
        format!(
            "the edgerun binary {} (build it first, or pass --bin)",
            program.display()
        )
    })?;
    let seed = cli
        .seed
        .unwrap_or_else(|| now_ms() ^ u64::from(std::process::id()));
    let out = cli
        .out
        .unwrap_or_else(|| PathBuf::from(format!("target/chaos/run-{}", now_ms() / 1000)));
    std::fs::create_dir_all(&out)?;
    let out = out.canonicalize()?;
    eprintln!(
        "chaos: seed {seed} ({} mode; replay with --seed {seed}{}), reports in {}",
        if cli.long { "long" } else { "short" },
        if cli.long { " --long" } else { "" },
        out.display()
    );
    if !Net::netem_available() {
        eprintln!("chaos: tc netem is not available on this kernel; latency goes through the nodes' RPC fault filter");
    }
    let opts = Opts {
        program: program.display().to_string(),
        backend: cli.backend,
        long: cli.long,
        duration: cli.duration,
        isolation: cli.isolation,
        stale_reads: cli.stale_reads,
    };
    let mut reports = Vec::new();
    for (i, sc) in all.iter().enumerate() {
        if !cli.scenarios.is_empty() && !cli.scenarios.iter().any(|n| n == sc.name) {
            continue;
        }
        let sc_seed = seed.wrapping_add(i as u64);
        eprintln!("chaos: == {} ({})", sc.name, sc.about);
        let report = match run_scenario(sc, &opts, sc_seed, &out.join(sc.name)) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("chaos: {} could not run: {e:#}", sc.name);
                failed_to_run(sc, &opts, sc_seed, &out.join(sc.name), &e)
            }
        };
        write_report(&report, &out.join(sc.name))?;
        eprintln!(
            "chaos: {} {}: {} acknowledged, {} lost, {} duplicates, linearizable: {}, {} reads checked",
            sc.name,
            if report.passed { "PASSED" } else { "FAILED" },
            report.operations.acknowledged,
            report.lost,
            report.duplicates,
            report.linearizable,
            report.verdict.reads_checked
        );
        reports.push(report);
    }
    let summary = summary_md(&reports, seed, opts.long);
    std::fs::write(out.join("summary.md"), &summary)?;
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_vec_pretty(&reports)?,
    )?;
    println!("{summary}");
    Ok(reports.iter().all(|r| r.passed))
}

/// The fault timetable: (ms after the workload starts, fault), and the workload's length.
/// A scenario with a pool draws one fault from it per cycle (from the seed).
fn schedule(sc: &Scenario, opts: &Opts, seed: u64) -> (Vec<(u64, Fault)>, u64) {
    let mut plan = Vec::new();
    let mut rng = fastrand::Rng::with_seed(seed);
    let cycle = |rng: &mut fastrand::Rng| -> Vec<Fault> {
        let mut faults = sc.inject.clone();
        if !sc.pool.is_empty() {
            faults.push(sc.pool[rng.usize(0..sc.pool.len())].clone());
        }
        faults
    };
    if !opts.long {
        // Two cycles when faults are drawn, so a short run still sees two kinds.
        let cycles: &[(u64, u64)] = if sc.pool.is_empty() {
            &[(3_000, 9_000)]
        } else {
            &[(2_000, 5_500), (7_000, 10_500)]
        };
        for (inject, recover) in cycles {
            for f in cycle(&mut rng) {
                plan.push((*inject, f));
            }
            for f in &sc.recover {
                plan.push((*recover, f.clone()));
            }
        }
        return (plan, 14_000);
    }
    let total = opts.duration.as_millis() as u64;
    let mut t = 3_000;
    while t + 6_000 < total {
        for f in cycle(&mut rng) {
            plan.push((t, f));
        }
        t += rng.u64(1_000..8_000);
        for f in &sc.recover {
            plan.push((t, f.clone()));
        }
        t += rng.u64(1_000..5_000);
        if sc.once {
            break;
        }
    }
    (plan, total)
}

fn run_scenario(sc: &Scenario, opts: &Opts, seed: u64, dir: &Path) -> Result<Report> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let net = Net::open(opts.backend)?;
    let backend = net.kind();
    let settings = NodeSettings {
        isolation: match opts.isolation.as_str() {
            "container" => "container",
            "inproc" => "inproc",
            _ => "process",
        },
        slots: 8,
        kernel_delay_ms: 100,
        extra: vec![],
        faketime: None,
    };
    let settings = if sc.faketime {
        let lib = PathBuf::from(cluster::LIBFAKETIME);
        if !lib.exists() {
            bail!(
                "{} is missing (Debian package libfaketime; ./scripts/setup installs it)",
                lib.display()
            );
        }
        NodeSettings {
            faketime: Some(lib),
            ..settings
        }
    } else {
        settings
    };
    let mut c = Cluster::start(&opts.program, dir, net, sc.voters, settings, sc.tmpfs)?;
    c.wait_ready(Duration::from_secs(60))?;
    let job = create_job(&c, Duration::from_secs(20))?;
    let t0 = Instant::now();
    let t0_epoch = now_ms();
    let wl = Workload::start(
        c.urls(),
        Params {
            clients: 4,
            readers: 2,
            think: Duration::from_millis(30),
            give_up: Duration::from_secs(20),
            stale_reads: opts.stale_reads,
        },
        t0,
        seed,
    );
    let (plan, workload_ms) = schedule(sc, opts, seed);
    let mut inj = Injector::new(seed);
    let mut skipped = Vec::new();
    for (at, fault) in plan {
        pause_until(t0, at);
        if let Err(e) = inj.inject(&mut c, fault.clone(), t0) {
            eprintln!("chaos: could not inject {fault:?}: {e:#}");
            skipped.push(format!("{} ms {fault:?}: {e:#}", t0.elapsed().as_millis()));
        }
    }
    pause_until(t0, workload_ms);
    let history = wl.finish();
    let _ = inj.inject(&mut c, Fault::Heal, t0);
    let heal_at = Instant::now();
    let mut verdict = Verdict::default();
    let mut recovery = Recovery::default();
    for id in c.ids() {
        if inj.removed().contains(&id) {
            c.nodes.remove(&id);
        }
    }
    match c.wait_ready(Duration::from_secs(30)) {
        Ok(_) => recovery.ready_after_heal_ms = Some(heal_at.elapsed().as_millis() as u64),
        Err(e) => verdict
            .other
            .push(format!("not ready within 30 s of the heal: {e:#}")),
    }
    let acked: std::collections::BTreeSet<u64> =
        history.acked.iter().map(|(_, id, _)| *id).collect();
    let tasks = match drain(&c, &acked, Duration::from_secs(120)) {
        Ok(t) => {
            recovery.drained_after_heal_ms = Some(heal_at.elapsed().as_millis() as u64);
            t
        }
        Err((e, last)) => {
            verdict.other.push(format!("draining: {e}"));
            last
        }
    };
    check::check(&history, &tasks, &mut verdict);
    // A skewed leader clock legitimately moves which slots are due; only the at-most-once
    // rule holds then.
    check::check_job(job, &tasks, !sc.faketime, &mut verdict);
    for e in inj.unexpected_exits() {
        verdict.other.push(e.clone());
    }
    for id in c.ids() {
        if let Some(how) = c.node_mut(id)?.exit_status() {
            verdict
                .other
                .push(format!("node {id} exited by itself after the heal: {how}"));
        }
    }
    if !opts.long && !skipped.is_empty() {
        verdict
            .other
            .push(format!("{} faults could not be injected", skipped.len()));
    }
    measure_recovery(&history, &inj.log, &tasks, t0_epoch, &mut recovery);
    c.shutdown();
    let mut from_logs = std::collections::BTreeMap::new();
    for n in c.nodes.values() {
        let log = std::fs::read_to_string(n.log_path()).unwrap_or_default();
        check::leaders_in_log(&log, &mut from_logs);
    }
    for (term, ls) in from_logs {
        if ls.len() > 1 {
            verdict.split_brain.push(format!(
                "term {term}: nodes {ls:?} all became leader (node logs)"
            ));
        }
    }
    // The whole history, for a look at what a checker complained about.
    std::fs::write(dir.join("history.json"), serde_json::to_vec(&history)?)?;
    let ops = operations(&history, tasks.len());
    if ops.server_errors > 0 {
        let codes: std::collections::BTreeSet<String> = history
            .submits
            .iter()
            .map(|s| &s.end)
            .chain(history.reads.iter().map(|r| &r.end))
            .filter_map(|e| match e {
                workload::End::Fail { status: 500, code } => Some(code.clone()),
                _ => None,
            })
            .collect();
        verdict.other.push(format!(
            "{} answers were 500 internal errors (codes {codes:?}); see the node logs",
            ops.server_errors
        ));
    }
    let passed = verdict.passed();
    Ok(Report {
        scenario: sc.name.into(),
        about: sc.about.into(),
        backend,
        mode: if opts.long { "long" } else { "short" },
        seed,
        workload_ms,
        faults: inj.log,
        skipped_faults: skipped,
        operations: ops,
        lost: verdict.lost.len(),
        duplicates: verdict.duplicates.len(),
        linearizable: verdict.not_linearizable.is_empty(),
        verdict,
        recovery,
        passed,
        logs: dir.to_path_buf(),
    })
}

fn failed_to_run(sc: &Scenario, opts: &Opts, seed: u64, dir: &Path, e: &anyhow::Error) -> Report {
    let verdict = Verdict {
        other: vec![format!("the scenario could not run: {e:#}")],
        ..Verdict::default()
    };
    Report {
        scenario: sc.name.into(),
        about: sc.about.into(),
        backend: opts.backend.unwrap_or(Kind::Local),
        mode: if opts.long { "long" } else { "short" },
        seed,
        workload_ms: 0,
        faults: vec![],
        skipped_faults: vec![],
        operations: operations(&History::default(), 0),
        lost: 0,
        duplicates: 0,
        linearizable: false,
        verdict,
        recovery: Recovery::default(),
        passed: false,
        logs: dir.to_path_buf(),
    }
}

/// Hold the schedule until `at_ms` after `t0` (the fault timetable, not a wait for a state).
fn pause_until(t0: Instant, at_ms: u64) {
    let at = Duration::from_millis(at_ms);
    let now = t0.elapsed();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// A periodic job firing every second through the whole scenario (`fire_all`, so that slots
/// missed while there is no leader are fired later); its id.
fn create_job(c: &Cluster, timeout: Duration) -> Result<u64> {
    let body = serde_json::json!({
        "name": "chaos: every second",
        "schedule": "* * * * * *",
        "task": { "kernel": "stats", "input": { "values": [1, 2, 3] } },
        "overlap": "allow",
        "misfire": "fire_all",
        "misfire_deadline_ms": check::JOB_DEADLINE_MS,
    });
    let start = Instant::now();
    loop {
        let mut last = String::new();
        for id in c.ids() {
            match c.send(id, "POST", "/v1/jobs", &body) {
                Ok(a) if a.status == 201 => {
                    if let Some(j) = a.body["id"].as_u64() {
                        return Ok(j);
                    }
                    last = format!("no id in {}", a.body);
                }
                Ok(a) => last = format!("node {id}: {} {}", a.status, a.body),
                Err(e) => last = format!("node {id}: {e}"),
            }
        }
        if start.elapsed() > timeout {
            bail!("creating the periodic job: {last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every task the cluster holds, listed linearizably through any node that answers.
fn list_all(c: &Cluster) -> Result<Vec<Value>, String> {
    let mut last_err = String::from("no node");
    'nodes: for id in c.ids() {
        let mut tasks = Vec::new();
        let mut after: Option<u64> = None;
        loop {
            let path = match after {
                Some(a) => format!("/v1/tasks?limit=1000&after={a}"),
                None => "/v1/tasks?limit=1000".to_string(),
            };
            match c.get(id, &path) {
                Ok(a) if a.status == 200 => {
                    if let Some(page) = a.body["tasks"].as_array() {
                        tasks.extend(page.iter().cloned());
                    }
                    match a.body["next"].as_u64() {
                        Some(n) => after = Some(n),
                        None => return Ok(tasks),
                    }
                }
                Ok(a) => {
                    last_err = format!("node {id}: {} {}", a.status, a.body);
                    continue 'nodes;
                }
                Err(e) => {
                    last_err = format!("node {id}: {e}");
                    continue 'nodes;
                }
            }
        }
    }
    Err(last_err)
}

/// Wait until every acknowledged task has ended; the final listing.
fn drain(
    c: &Cluster,
    acked: &std::collections::BTreeSet<u64>,
    timeout: Duration,
) -> Result<Vec<Value>, (String, Vec<Value>)> {
    let start = Instant::now();
    let mut last = Vec::new();
    loop {
        let seen = match list_all(c) {
            Ok(tasks) => {
                let open: Vec<u64> = tasks
                    .iter()
                    .filter(|t| {
                        t["id"].as_u64().is_some_and(|id| acked.contains(&id))
                            && !t["status"].as_str().is_some_and(check::is_terminal)
                    })
                    .filter_map(|t| t["id"].as_u64())
                    .collect();
                last = tasks;
                if open.is_empty() {
                    return Ok(last);
                }
                format!(
                    "{} acknowledged tasks not ended, e.g. {:?}",
                    open.len(),
                    &open[..open.len().min(5)]
                )
            }
            Err(e) => e,
        };
        if start.elapsed() > timeout {
            return Err((format!("after {timeout:?}: {seen}"), last));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn measure_recovery(
    h: &History,
    faults: &[Injected],
    tasks: &[Value],
    t0_epoch: u64,
    r: &mut Recovery,
) {
    // (created, placed, attempt), in ms since t0.
    let placements: Vec<(u64, u64, u32)> = tasks
        .iter()
        .filter_map(|t| {
            let at = t["scheduled_at"].as_u64()?.saturating_sub(t0_epoch);
            let created = t["created_at"].as_u64()?.saturating_sub(t0_epoch);
            Some((created, at, t["attempt"].as_u64().unwrap_or(0) as u32))
        })
        .collect();
    for f in faults {
        let leader_fault = matches!(
            &f.fault,
            Fault::Kill {
                target: faults::Target::Leader
            } | Fault::Pause {
                target: faults::Target::Leader
            } | Fault::Isolate {
                target: faults::Target::Leader
            } | Fault::RestartAll
        ) || matches!(&f.fault, Fault::Kill { .. } | Fault::Pause { .. } | Fault::Isolate { .. } if was_leader(h, f));
        if leader_fault {
            let term_before = h
                .leaders
                .iter()
                .filter(|o| o.at_ms <= f.at_ms)
                .map(|o| o.term)
                .max()
                .unwrap_or(0);
            if let Some(o) = h.leaders.iter().find(|o| {
                o.at_ms > f.at_ms
                    && o.term > term_before
                    && o.leader.is_some()
                    && !f.nodes.contains(&o.node)
            }) {
                r.leader_election_ms.push(o.at_ms - f.at_ms);
            }
            // A task submitted after the fault, placed: only a working leader does that.
            if let Some(p) = placements
                .iter()
                .filter(|(created, _, _)| *created > f.at_ms)
                .map(|(_, at, _)| *at)
                .min()
            {
                r.first_placement_ms.push(p - f.at_ms);
            }
        }
        if matches!(&f.fault, Fault::Kill { .. }) {
            if let Some(p) = placements
                .iter()
                .filter(|(_, at, attempt)| *at > f.at_ms && *attempt >= 2)
                .map(|(_, at, _)| *at)
                .min()
            {
                r.reschedule_after_loss_ms.push(p - f.at_ms);
            }
        }
    }
}

/// Whether the node a fault hit was the leader just before.
fn was_leader(h: &History, f: &Injected) -> bool {
    h.leaders
        .iter()
        .rev()
        .find(|o| o.at_ms <= f.at_ms && o.leader.is_some())
        .is_some_and(|o| o.leader.is_some_and(|l| f.nodes.contains(&l)))
}

fn operations(h: &History, tasks_in_cluster: usize) -> Operations {
    use workload::End;
    Operations {
        submit_requests: h.submits.len(),
        submit_timeouts: h
            .submits
            .iter()
            .filter(|s| matches!(s.end, End::Timeout { .. }))
            .count(),
        submit_refusals: h
            .submits
            .iter()
            .filter(|s| matches!(s.end, End::Fail { .. }))
            .count(),
        server_errors: h
            .submits
            .iter()
            .map(|s| &s.end)
            .chain(h.reads.iter().map(|r| &r.end))
            .filter(|e| matches!(e, End::Fail { status: 500, .. }))
            .count(),
        reads: h.reads.len(),
        read_failures: h.reads.iter().filter(|r| r.status.is_none()).count(),
        acknowledged: h.acked.len(),
        abandoned_unacknowledged: h.abandoned.len(),
        tasks_in_cluster,
    }
}

fn ms_list(v: &[u64]) -> String {
    if v.is_empty() {
        "—".into()
    } else {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn report_md(r: &Report) -> String {
    let mut s = format!(
        "# {} — {}\n\n{}\n\nbackend {:?}, {} mode, seed {}, workload {} ms\n\n## Faults\n\n",
        r.scenario,
        if r.passed { "PASSED" } else { "FAILED" },
        r.about,
        r.backend,
        r.mode,
        r.seed,
        r.workload_ms
    );
    for f in &r.faults {
        s.push_str(&format!(
            "- {} ms: {:?} on {:?} {}\n",
            f.at_ms, f.fault, f.nodes, f.note
        ));
    }
    for f in &r.skipped_faults {
        s.push_str(&format!("- not injected: {f}\n"));
    }
    let o = &r.operations;
    s.push_str(&format!(
        "\n## Operations\n\n| submit requests | timeouts | refusals | acknowledged | abandoned | reads | read failures | tasks in cluster |\n|---|---|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} | {} | {} |\n",
        o.submit_requests, o.submit_timeouts, o.submit_refusals, o.acknowledged, o.abandoned_unacknowledged, o.reads, o.read_failures, o.tasks_in_cluster
    ));
    let v = &r.verdict;
    s.push_str(&format!(
        "\n## Checks\n\n- lost: {}\n- duplicates: {}\n- wrong results: {}\n- linearizable status reads: {} ({} reads checked)\n- leaders per term: {}\n- end states: {:?}\n",
        r.lost,
        r.duplicates,
        v.wrong_results.len(),
        if r.linearizable { "yes" } else { "NO" },
        v.reads_checked,
        if v.split_brain.is_empty() { "at most one" } else { "SPLIT BRAIN" },
        v.by_status
    ));
    for (what, list) in [
        ("lost", &v.lost),
        ("duplicates", &v.duplicates),
        ("wrong results", &v.wrong_results),
        ("not linearizable", &v.not_linearizable),
        ("split brain", &v.split_brain),
        ("other", &v.other),
    ] {
        for x in list {
            s.push_str(&format!("- {what}: {x}\n"));
        }
    }
    let rc = &r.recovery;
    s.push_str(&format!(
        "\n## Recovery (ms)\n\n- leader election after a leader fault: {}\n- first placement of a task submitted after it: {}\n- first retried attempt placed after a kill: {}\n- ready after the heal: {}\n- every acknowledged task ended after the heal: {}\n\nNode logs: {}\n",
        ms_list(&rc.leader_election_ms),
        ms_list(&rc.first_placement_ms),
        ms_list(&rc.reschedule_after_loss_ms),
        rc.ready_after_heal_ms.map_or("—".into(), |x| x.to_string()),
        rc.drained_after_heal_ms.map_or("—".into(), |x| x.to_string()),
        r.logs.display()
    ));
    s
}

fn write_report(r: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(r)?)?;
    std::fs::write(dir.join("report.md"), report_md(r))?;
    Ok(())
}

fn summary_md(reports: &[Report], seed: u64, long: bool) -> String {
    let mut s = format!(
        "# edgerun chaos run — seed {seed}, {} mode\n\n| scenario | result | acknowledged | lost | duplicates | linearizable | election ms | first placement ms | reschedule ms | ready after heal ms |\n|---|---|---|---|---|---|---|---|---|---|\n",
        if long { "long" } else { "short" }
    );
    for r in reports {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            if r.passed { "pass" } else { "FAIL" },
            r.operations.acknowledged,
            r.lost,
            r.duplicates,
            if r.linearizable { "yes" } else { "no" },
            ms_list(&r.recovery.leader_election_ms),
            ms_list(&r.recovery.first_placement_ms),
            ms_list(&r.recovery.reschedule_after_loss_ms),
            r.recovery
                .ready_after_heal_ms
                .map_or("—".into(), |x| x.to_string()),
        ));
    }
    for r in reports.iter().filter(|r| !r.passed) {
        s.push_str(&format!("\n{} failed:\n", r.scenario));
        let v = &r.verdict;
        for x in v
            .lost
            .iter()
            .chain(&v.duplicates)
            .chain(&v.wrong_results)
            .chain(&v.not_linearizable)
            .chain(&v.split_brain)
            .chain(&v.other)
        {
            s.push_str(&format!("- {x}\n"));
        }
    }
    s
}
