//! Running one scenario: start its cluster, create its job, inject its faults on schedule
//! while the workload runs, heal, drain, and check what happened.
use super::*;

pub(crate) struct Opts {
    pub(crate) program: String,
    pub(crate) backend: Option<Kind>,
    pub(crate) long: bool,
    pub(crate) duration: Duration,
    pub(crate) isolation: String,
    pub(crate) stale_reads: bool,
}

/// The fault timetable: (ms after the workload starts, fault), and the workload's length.
/// A scenario with a pool draws one fault from it per cycle (from the seed).
pub(crate) fn schedule(sc: &Scenario, opts: &Opts, seed: u64) -> (Vec<(u64, Fault)>, u64) {
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

pub(crate) fn run_scenario(sc: &Scenario, opts: &Opts, seed: u64, dir: &Path) -> Result<Report> {
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
    let feeder = crate::stream::start(&c, Duration::from_secs(20))?;
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
    let fed = feeder.finish();
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
    crate::stream::close(&c.urls(), &fed, Duration::from_secs(60));
    let stream_summary = crate::stream::check(&c, &fed, Duration::from_secs(60), &mut verdict);
    eprintln!("chaos: {} {stream_summary}", sc.name);
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

pub(crate) fn failed_to_run(
    sc: &Scenario,
    opts: &Opts,
    seed: u64,
    dir: &Path,
    e: &anyhow::Error,
) -> Report {
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
pub(crate) fn pause_until(t0: Instant, at_ms: u64) {
    let at = Duration::from_millis(at_ms);
    let now = t0.elapsed();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// A periodic job firing every second through the whole scenario (`fire_all`, so that slots
/// missed while there is no leader are fired later); its id.
pub(crate) fn create_job(c: &Cluster, timeout: Duration) -> Result<u64> {
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
pub(crate) fn list_all(c: &Cluster) -> Result<Vec<Value>, String> {
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
pub(crate) fn drain(
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
