//! What a run found: each scenario's report (markdown and JSON), the recovery times measured
//! from the history, and the run's summary.
use super::*;

#[derive(Debug, Serialize)]
pub(crate) struct Operations {
    pub(crate) submit_requests: usize,
    pub(crate) submit_timeouts: usize,
    pub(crate) submit_refusals: usize,
    /// Answers with status 500 (an internal error is a bug even mid-fault: 503 is for that).
    pub(crate) server_errors: usize,
    pub(crate) reads: usize,
    pub(crate) read_failures: usize,
    pub(crate) acknowledged: usize,
    pub(crate) abandoned_unacknowledged: usize,
    pub(crate) tasks_in_cluster: usize,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Recovery {
    /// Fault → a live node reports a new leader in a later term (ms), per leader fault.
    pub(crate) leader_election_ms: Vec<u64>,
    /// Fault → the first task submitted after it is placed (ms).
    pub(crate) first_placement_ms: Vec<u64>,
    /// Kill of a node → the first retried attempt placed after it (ms).
    pub(crate) reschedule_after_loss_ms: Vec<u64>,
    /// Final heal → every node ready (ms).
    pub(crate) ready_after_heal_ms: Option<u64>,
    /// Final heal → every acknowledged task ended (ms).
    pub(crate) drained_after_heal_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: String,
    pub(crate) about: String,
    pub(crate) backend: Kind,
    pub(crate) mode: &'static str,
    pub(crate) seed: u64,
    pub(crate) workload_ms: u64,
    pub(crate) faults: Vec<Injected>,
    pub(crate) skipped_faults: Vec<String>,
    pub(crate) operations: Operations,
    pub(crate) lost: usize,
    pub(crate) duplicates: usize,
    pub(crate) linearizable: bool,
    pub(crate) verdict: Verdict,
    pub(crate) recovery: Recovery,
    pub(crate) passed: bool,
    pub(crate) logs: PathBuf,
}

pub(crate) fn measure_recovery(
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
            // A task submitted after the fault, placed: only a working leader does that. Times
            // come from the leaders' wall clocks: one moved back (clock faults) can stamp a
            // placement before the fault, which says nothing about recovery.
            if let Some(p) = placements
                .iter()
                .filter(|(created, at, _)| *created > f.at_ms && *at >= f.at_ms)
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
pub(crate) fn was_leader(h: &History, f: &Injected) -> bool {
    h.leaders
        .iter()
        .rev()
        .find(|o| o.at_ms <= f.at_ms && o.leader.is_some())
        .is_some_and(|o| o.leader.is_some_and(|l| f.nodes.contains(&l)))
}

pub(crate) fn operations(h: &History, tasks_in_cluster: usize) -> Operations {
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

pub(crate) fn ms_list(v: &[u64]) -> String {
    if v.is_empty() {
        "—".into()
    } else {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(crate) fn report_md(r: &Report) -> String {
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

pub(crate) fn write_report(r: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(r)?)?;
    std::fs::write(dir.join("report.md"), report_md(r))?;
    Ok(())
}

pub(crate) fn summary_md(reports: &[Report], seed: u64, long: bool) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::LeaderObs;
    use serde_json::json;

    #[test]
    fn a_placement_stamped_before_the_fault_by_a_skewed_clock_is_not_a_recovery_time() {
        let h = History {
            leaders: vec![
                LeaderObs {
                    at_ms: 100,
                    node: 2,
                    term: 1,
                    leader: Some(1),
                },
                LeaderObs {
                    at_ms: 1_500,
                    node: 2,
                    term: 2,
                    leader: Some(2),
                },
            ],
            ..History::default()
        };
        let f = Injected {
            at_ms: 1_000,
            fault: Fault::Kill {
                target: crate::faults::Target::Leader,
            },
            nodes: vec![1],
            note: String::new(),
        };
        let t0 = 10_000_000;
        // Created after the fault; placed by a leader whose clock ran an hour behind, and one
        // placed 800 ms after the fault.
        let tasks = vec![
            json!({"created_at": t0 + 1_200, "scheduled_at": t0 - 3_600_000, "attempt": 1}),
            json!({"created_at": t0 + 1_300, "scheduled_at": t0 + 1_800, "attempt": 1}),
        ];
        let mut r = Recovery::default();
        measure_recovery(&h, &[f], &tasks, t0, &mut r);
        assert_eq!(r.leader_election_ms, vec![500]);
        assert_eq!(r.first_placement_ms, vec![800]);
    }
}
