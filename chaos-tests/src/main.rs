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
//! - `check`: the checkers run on the recorded history and the final state; `stream`: a stream
//!   job fed through every node during the faults, and its checker (each window once, equal
//!   to the reference made from the acknowledged batches).
//! - `run`: one scenario from start to verdict; `report`: its report, the recovery times
//!   measured from the history, and the run's summary. This file: the command line and the
//!   loop over the scenarios.
//!
//! Each run writes `report.json` and `report.md` per scenario plus a `summary.md`, and keeps
//! every node's log, under `--out` (default `target/chaos/run-<unix time>`).

mod check;
mod cluster;
mod faults;
mod net;
mod report;
mod run;
mod scenarios;
mod stream;
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
use report::{measure_recovery, operations, summary_md, write_report, Recovery, Report};
use run::{failed_to_run, run_scenario, Opts};
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
