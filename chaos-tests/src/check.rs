//! Checkers run on a recorded history and the cluster's final state.
//!
//! # Linearizability of status reads
//!
//! A task's status is a register that only the cluster writes, and only forward: every
//! transition the state machine allows raises [`rank`] (pending(0) → scheduled(1) →
//! running(1) → pending(1) after a failed attempt → scheduled(2) … → one terminal state).
//! Clients never write it; they read it (and the submission is a read of "pending, attempt 0"
//! at its commit). For a register whose hidden writes only raise its value, a history of reads
//! is linearizable iff every read can be given a point inside its own [invoke, complete]
//! interval so that points are ordered as the values read: the writes can then be placed
//! between those points in value order. [`monotone_linearizable`] decides that exactly with a
//! greedy sweep: take values in increasing order and place each read as early as it may go
//! (no earlier than its invoke, no earlier than any read of a lower value); the history is
//! linearizable iff no read is pushed past its completion. Placing every read as early as
//! possible never hurts a later one, so the sweep fails only when no placement exists. This
//! is the same question Knossos or stateright's tester would answer for this model, in
//! O(n log n) per task instead of a search. Reads of different tasks are independent
//! (linearizability is compositional), so tasks are checked one by one.
//!
//! A terminal status must also be the same for every read of a task, and a read that began
//! after the submission was acknowledged must find the task.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::workload::{base_of_key, End, History};

/// The position of a status in a task's life (see the module docs); `None` for an unknown one.
pub fn rank(status: &str, attempt: u32) -> Option<u64> {
    let a = u64::from(attempt);
    Some(match status {
        "absent" => 0,
        "pending" => 4 * a + 3,
        "scheduled" => 4 * a + 1,
        "running" => 4 * a + 2,
        "succeeded" | "failed" | "timed_out" | "cancelled" => 4 * a + 4,
        _ => return None,
    })
}

pub fn is_terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "timed_out" | "cancelled")
}

/// One observation: an interval and the value seen in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obs {
    pub invoke: u64,
    pub complete: u64,
    pub value: u64,
}

/// `Ok` when the reads of a forward-only register are linearizable; else the first read
/// that cannot be placed and the earliest point it could have had.
pub fn monotone_linearizable(obs: &[Obs]) -> Result<(), (Obs, u64)> {
    let mut sorted = obs.to_vec();
    sorted.sort_by_key(|o| (o.value, o.invoke));
    let mut floor = 0u64; // no read of a higher value may sit before this
    let mut i = 0;
    while i < sorted.len() {
        let value = sorted[i].value;
        let mut group_max = floor;
        while i < sorted.len() && sorted[i].value == value {
            let o = sorted[i];
            let point = o.invoke.max(floor);
            if point > o.complete {
                return Err((o, point));
            }
            group_max = group_max.max(point);
            i += 1;
        }
        floor = group_max;
    }
    Ok(())
}

#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    pub acknowledged: usize,
    pub lost: Vec<String>,
    pub duplicates: Vec<String>,
    pub wrong_results: Vec<String>,
    pub not_linearizable: Vec<String>,
    pub split_brain: Vec<String>,
    pub reads_checked: usize,
    pub by_status: BTreeMap<String, usize>,
    /// Problems that are not one of the above (a node that died by itself, a fault that could
    /// not be injected).
    pub other: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.duplicates.is_empty()
            && self.wrong_results.is_empty()
            && self.not_linearizable.is_empty()
            && self.split_brain.is_empty()
            && self.other.is_empty()
    }
}

fn first<T: std::fmt::Debug>(v: &mut Vec<String>, what: T) {
    // Keep reports readable: the first 20 of a kind, then a count.
    if v.len() < 20 {
        v.push(format!("{what:?}"));
    } else if v.len() == 20 {
        v.push("... and more".into());
    }
}

/// The chaos job's misfire deadline: slots missed for longer are never fired.
pub const JOB_DEADLINE_MS: u64 = 120_000;

/// The periodic job `job` fired no slot twice and, when `contiguous`, left no slot out
/// between its first and last fire (its policy is `fire_all`).
pub fn check_job(job: u64, final_tasks: &[Value], contiguous: bool, verdict: &mut Verdict) {
    let mut slots: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for t in final_tasks {
        if t["job"]["id"].as_u64() == Some(job) {
            if let (Some(slot), Some(id)) = (t["job"]["slot"].as_u64(), t["id"].as_u64()) {
                slots.entry(slot).or_default().push(id);
            }
        }
    }
    for (slot, ids) in &slots {
        if ids.len() > 1 {
            first(
                &mut verdict.duplicates,
                format!("job {job} fired slot {slot} as tasks {ids:?}"),
            );
        }
    }
    let (Some(lo), Some(hi)) = (slots.keys().next(), slots.keys().next_back()) else {
        verdict
            .other
            .push(format!("job {job} never fired during the scenario"));
        return;
    };
    if contiguous {
        let missing: Vec<u64> = (lo / 1000..=hi / 1000)
            .map(|s| s * 1000)
            .filter(|s| !slots.contains_key(s))
            .collect();
        if !missing.is_empty() {
            verdict.other.push(format!(
                "job {job} (fire_all) left {} slots out between {lo} and {hi}, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            ));
        }
    }
}

/// Check the history against the final task list (every task the cluster holds, from a
/// linearizable listing after the run).
pub fn check(h: &History, final_tasks: &[Value], verdict: &mut Verdict) {
    let by_id: BTreeMap<u64, &Value> = final_tasks
        .iter()
        .filter_map(|t| t["id"].as_u64().map(|id| (id, t)))
        .collect();

    // An idempotency key never yields two tasks, and every ack of a key names the same one.
    let mut by_key: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for t in final_tasks {
        if let (Some(k), Some(id)) = (t["idempotency_key"].as_str(), t["id"].as_u64()) {
            by_key.entry(k).or_default().insert(id);
        }
    }
    for (k, ids) in &by_key {
        if ids.len() > 1 {
            first(
                &mut verdict.duplicates,
                format!("key {k} has tasks {ids:?}"),
            );
        }
    }
    let mut acked: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for (k, id, _) in &h.acked {
        acked.entry(k.as_str()).or_default().insert(*id);
    }
    verdict.acknowledged = acked.len();
    for (k, ids) in &acked {
        if ids.len() > 1 {
            first(
                &mut verdict.duplicates,
                format!("key {k} acknowledged as {ids:?}"),
            );
        }
    }

    // Every acknowledged task is there, ended, once, with the right result.
    for (k, ids) in &acked {
        for id in ids {
            let Some(t) = by_id.get(id) else {
                first(&mut verdict.lost, format!("task {id} (key {k}) is gone"));
                continue;
            };
            let status = t["status"].as_str().unwrap_or("?");
            *verdict.by_status.entry(status.to_string()).or_default() += 1;
            if !is_terminal(status) {
                first(
                    &mut verdict.lost,
                    format!("task {id} (key {k}) never ended: {status}"),
                );
                continue;
            }
            if t["idempotency_key"].as_str() != Some(k) {
                first(
                    &mut verdict.wrong_results,
                    format!("task {id} has key {} not {k}", t["idempotency_key"]),
                );
            }
            match status {
                "succeeded" => {
                    let want = base_of_key(k).map(|b| b as f64 + 1.0);
                    let got = t["result"]["mean"].as_f64();
                    if want.is_none() || got != want {
                        first(
                            &mut verdict.wrong_results,
                            format!("task {id} (key {k}): mean {got:?}, want {want:?}"),
                        );
                    }
                }
                _ => {
                    if t["error"]["code"].as_str().is_none() {
                        first(
                            &mut verdict.wrong_results,
                            format!("task {id} ended {status} without an error"),
                        );
                    }
                }
            }
        }
    }

    // Status reads.
    let ack_time: BTreeMap<u64, u64> = h.acked.iter().map(|(_, id, at)| (*id, *at)).collect();
    let mut per_task: BTreeMap<u64, Vec<Obs>> = BTreeMap::new();
    let mut terminal_seen: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for r in &h.reads {
        let (End::Ok { .. } | End::Fail { status: 404, .. }) = r.end else {
            continue;
        };
        let Some(status) = r.status.as_deref() else {
            continue;
        };
        let Some(value) = rank(status, r.attempt.unwrap_or(0)) else {
            first(
                &mut verdict.not_linearizable,
                format!("read of task {} saw unknown status {status}", r.id),
            );
            continue;
        };
        verdict.reads_checked += 1;
        if status == "absent" && ack_time.get(&r.id).is_some_and(|at| r.invoke_ms > *at) {
            first(
                &mut verdict.not_linearizable,
                format!(
                    "task {} not found by a read on node {} at {} ms, acknowledged at {} ms",
                    r.id, r.node, r.invoke_ms, ack_time[&r.id]
                ),
            );
        }
        if is_terminal(status) {
            terminal_seen
                .entry(r.id)
                .or_default()
                .insert(status.to_string());
        }
        per_task.entry(r.id).or_default().push(Obs {
            invoke: r.invoke_ms,
            complete: r.complete_ms,
            value,
        });
    }
    // The submission: "pending, attempt 0" at a point inside the acknowledged request.
    for s in &h.submits {
        if let (End::Ok { status: 201 }, Some(id)) = (&s.end, s.id) {
            if let Some(v) = per_task.get_mut(&id) {
                v.push(Obs {
                    invoke: s.invoke_ms,
                    complete: s.complete_ms,
                    value: 3,
                });
            }
        }
    }
    for (id, obs) in &per_task {
        if let Err((o, point)) = monotone_linearizable(obs) {
            first(&mut verdict.not_linearizable, format!("task {id}: a read during [{}, {}] ms of value {} cannot come after reads that needed {point} ms", o.invoke, o.complete, o.value));
        }
    }
    for (id, seen) in &terminal_seen {
        if seen.len() > 1 {
            first(
                &mut verdict.not_linearizable,
                format!("task {id} read as ended in two ways: {seen:?}"),
            );
        }
    }

    // At most one leader per term.
    let mut leaders: BTreeMap<u64, BTreeMap<u64, Vec<u64>>> = BTreeMap::new();
    for o in &h.leaders {
        if let Some(l) = o.leader {
            leaders
                .entry(o.term)
                .or_default()
                .entry(l)
                .or_default()
                .push(o.node);
        }
    }
    for (term, ls) in &leaders {
        if ls.len() > 1 {
            first(
                &mut verdict.split_brain,
                format!("term {term}: leaders {ls:?} (leader -> nodes that said so)"),
            );
        }
    }
}

/// Split `s` into what precedes its trailing digits, and those digits.
fn trailing_digits(s: &str) -> (&str, &str) {
    let head = s.trim_end_matches(|c: char| c.is_ascii_digit());
    (head, &s[head.len()..])
}

/// Leaders per term as the nodes' own logs tell it: openraft logs every vote change, and a
/// committed vote `T<term>-N<id>:committed` means node `id` won term `term`. This sees the
/// elections the monitor's polling is too slow for (a leader that lasts a millisecond).
pub fn leaders_in_log(log: &str, out: &mut BTreeMap<u64, BTreeSet<u64>>) {
    const MARK: &str = ":committed";
    let mut rest = log;
    while let Some(at) = rest.find(MARK) {
        let before = &rest[..at];
        // ... T<term>-N<id> immediately before the mark.
        let (head, id) = trailing_digits(before);
        if let Some(head) = head.strip_suffix("-N") {
            let (head, term) = trailing_digits(head);
            if head.ends_with('T') {
                if let (Ok(term), Ok(id)) = (term.parse::<u64>(), id.parse::<u64>()) {
                    out.entry(term).or_default().insert(id);
                }
            }
        }
        rest = &rest[at + MARK.len()..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(invoke: u64, complete: u64, value: u64) -> Obs {
        Obs {
            invoke,
            complete,
            value,
        }
    }

    #[test]
    fn forward_reads_are_linearizable() {
        // Overlapping reads may see either order.
        assert!(monotone_linearizable(&[o(0, 10, 5), o(2, 8, 3), o(9, 20, 6)]).is_ok());
        assert!(monotone_linearizable(&[]).is_ok());
        assert!(monotone_linearizable(&[o(0, 1, 3), o(1, 2, 3), o(1, 1, 8)]).is_ok());
    }

    #[test]
    fn a_stale_read_after_a_newer_one_is_caught() {
        // Running (6) read and returned at 10; a read that began at 11 saw pending (3).
        // The sweep places the pending read at 11, so the running read cannot fit.
        let r = monotone_linearizable(&[o(0, 10, 6), o(11, 12, 3)]);
        assert_eq!(r, Err((o(0, 10, 6), 11)));
        // A chain: 1 then 2 then back to 1, each strictly after the other.
        assert!(monotone_linearizable(&[o(0, 1, 1), o(2, 3, 2), o(4, 5, 1)]).is_err());
    }

    #[test]
    fn the_greedy_sweep_is_not_fooled_by_overlaps() {
        // b (value 2) must come after a (value 1) which starts at 5; b ends at 4: impossible.
        assert!(monotone_linearizable(&[o(5, 9, 1), o(0, 4, 2)]).is_err());
        // Same, but b ends at 6: place a at 5, b at 5..6.
        assert!(monotone_linearizable(&[o(5, 9, 1), o(0, 6, 2)]).is_ok());
    }

    #[test]
    fn committed_votes_in_logs_name_the_leaders() {
        let log = "vote is changing from T1-N2:uncommitted to T1-N2:committed\n\
                   vote is changing from T1-N3:uncommitted to T1-N3:committed\n\
                   resp={T4-N1:committed, last_log:None} T10-N12:committed";
        let mut m = BTreeMap::new();
        leaders_in_log(log, &mut m);
        assert_eq!(m[&1], BTreeSet::from([2, 3]));
        assert_eq!(m[&4], BTreeSet::from([1]));
        assert_eq!(m[&10], BTreeSet::from([12]));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn ranks_follow_the_state_machine() {
        let life = [
            ("pending", 0),
            ("scheduled", 1),
            ("running", 1),
            ("pending", 1),
            ("scheduled", 2),
            ("running", 2),
            ("succeeded", 2),
        ];
        let ranks: Vec<u64> = life.iter().filter_map(|(s, a)| rank(s, *a)).collect();
        assert_eq!(ranks.len(), life.len());
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
        assert!(rank("absent", 0) < rank("pending", 0));
        assert_eq!(rank("exploded", 1), None);
    }
}
