//! The scheduler on real clusters: priorities, constraints, binpack/spread, retries with
//! backoff, the dead-letter queue, cancel stopping work, run-after, periodic jobs across a
//! leader kill, admission control and retention.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn stats(i: u64) -> Value {
    json!({ "kernel": "stats", "input": { "values": [i, i + 1, i + 2] } })
}

fn with(mut t: Value, extra: Value) -> Value {
    if let (Some(o), Some(e)) = (t.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    t
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn wait_all_end(node: &Node, ids: &[u64]) -> Vec<Value> {
    ids.iter()
        .map(|id| node.wait_for_task_end(*id, Duration::from_secs(60)))
        .collect()
}

#[test]
fn priorities_constraints_and_binpack_or_spread_on_three_nodes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c = Cluster::must_start_with(
        dir.path(),
        3,
        &["executor.slots=2", "debug.kernel_delay_ms=300"],
        |id| {
            if id == 3 {
                vec!["node.tier=\"edge\"".into()]
            } else {
                Vec::new()
            }
        },
    );
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let n = c.node(leader);

    // Edge-only tasks never land on cloud nodes.
    let edge: Vec<Value> = (0..6)
        .map(|i| with(stats(i), json!({ "constraints": { "tier": "edge" } })))
        .collect();
    let ids = n.must_submit_batch(&edge);
    for t in wait_all_end(n, &ids) {
        assert_eq!(t["status"], "succeeded", "{t}");
        assert_eq!(t["node"], 3, "an edge-only task ran on a cloud node: {t}");
    }

    // One batch is placed in one tick: spread puts three tasks on three nodes, binpack puts
    // two on one node.
    let spread: Vec<Value> = (0..3)
        .map(|i| with(stats(i), json!({ "placement": "spread" })))
        .collect();
    let ids = n.must_submit_batch(&spread);
    let nodes: BTreeSet<u64> = wait_all_end(n, &ids)
        .iter()
        .map(|t| u(&t["node"]))
        .collect();
    assert_eq!(
        nodes.len(),
        3,
        "spread: one task per node, got nodes {nodes:?}"
    );
    let binpack: Vec<Value> = (0..2)
        .map(|i| with(stats(i), json!({ "placement": "binpack" })))
        .collect();
    let ids = n.must_submit_batch(&binpack);
    let nodes: BTreeSet<u64> = wait_all_end(n, &ids)
        .iter()
        .map(|t| u(&t["node"]))
        .collect();
    assert_eq!(
        nodes.len(),
        1,
        "binpack: both on one node, got nodes {nodes:?}"
    );

    // A full cluster: 6 slots taken by blockers, then 12 tasks of mixed priority wait. They
    // are placed highest priority first.
    let blockers: Vec<Value> = (0..6)
        .map(|i| with(stats(i), json!({ "priority": 100 })))
        .collect();
    let _ = n.must_submit_batch(&blockers);
    let prios: Vec<u64> = (0..12).map(|i| (i * 7) % 11).collect();
    let queued: Vec<Value> = prios
        .iter()
        .enumerate()
        .map(|(i, p)| with(stats(i as u64), json!({ "priority": p })))
        .collect();
    let ids = n.must_submit_batch(&queued);
    let done = wait_all_end(n, &ids);
    let order: Vec<(u64, u64, u64)> = done
        .iter()
        .map(|t| (u(&t["priority"]), u(&t["scheduled_at"]), u(&t["id"])))
        .collect();
    for a in &order {
        for b in &order {
            if a.0 > b.0 {
                assert!(
                    a.1 <= b.1,
                    "priority {} (task {}) was placed after priority {} (task {}): {order:?}",
                    a.0,
                    a.2,
                    b.0,
                    b.2
                );
            }
        }
    }

    // A task that fits nowhere stays pending and says why.
    let a = n.must_post(
        "/v1/tasks",
        &with(
            stats(1),
            json!({ "constraints": { "tier": "edge" }, "resources": { "memory_mb": 4_000_000 } }),
        ),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let t = n.must_get(&format!("/v1/tasks/{}", u(&a.body["id"]))).body;
    assert_eq!(t["status"], "pending");
    let why = t["pending_reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("tier=edge") && why.contains("4000000 MB"),
        "pending_reason: {t}"
    );
}

#[test]
fn retries_back_off_dead_letters_requeue_and_cancel_stops_the_process() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(
        dir.path(),
        &[
            "executor.isolation=\"process\"",
            "executor.allow_exec_without_container=true",
        ],
    );
    let slow = json!({
        "exec": { "argv": ["sh", "-c", "sleep 5.25"] },
        "timeout_ms": 300,
        "retry": { "max_attempts": 3, "backoff_ms": 400 }
    });
    let a = node.must_post("/v1/tasks", &slow);
    assert_eq!(a.status, 201, "{}", a.body);
    let id = u(&a.body["id"]);
    let t = node.wait_for_task_end(id, Duration::from_secs(60));
    assert_eq!(t["status"], "timed_out", "{t}");
    assert_eq!(t["attempt"], 3, "{t}");
    assert_eq!(t["dead_letter"], true, "{t}");
    let attempts = t["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 3, "{t}");
    let delays: Vec<Option<u64>> = attempts
        .iter()
        .map(|a| a["retry_delay_ms"].as_u64())
        .collect();
    assert_eq!(delays, vec![Some(400), Some(800), None], "{t}");
    for w in attempts.windows(2) {
        let gap = u(&w[1]["scheduled_at"]).saturating_sub(u(&w[0]["ended_at"]));
        let wanted = u(&w[0]["retry_delay_ms"]);
        assert!(
            gap >= wanted,
            "attempt {} came {gap} ms after the last one ended; the backoff is {wanted} ms",
            w[1]["attempt"]
        );
    }

    // Listed in the dead-letter queue; requeued, it gets three fresh attempts.
    let dlq = node.must_get("/v1/dlq").body;
    let listed: Vec<u64> = dlq["tasks"]
        .as_array()
        .map(|v| v.iter().map(|t| u(&t["id"])).collect())
        .unwrap_or_default();
    assert_eq!(listed, vec![id], "{dlq}");
    let r = node.must_post(&format!("/v1/dlq/{id}/requeue"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    // Back to pending, and the scheduler may have placed it already.
    assert!(
        ["pending", "scheduled", "running"].contains(&r.body["status"].as_str().unwrap_or("")),
        "{}",
        r.body
    );
    assert_eq!(r.body["dead_letter"], false, "{}", r.body);
    let t = node.wait_for_task_end(id, Duration::from_secs(60));
    assert_eq!(
        (t["status"].clone(), t["attempt"].clone()),
        (json!("timed_out"), json!(6)),
        "{t}"
    );
    assert_eq!(
        node.must_get("/v1/dlq").body["tasks"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // Only dead letters can be requeued.
    let ok = node.must_post("/v1/tasks", &stats(1));
    let ok_id = u(&ok.body["id"]);
    node.wait_for_task_end(ok_id, Duration::from_secs(30));
    let r = node.must_post(&format!("/v1/dlq/{ok_id}/requeue"), &json!({}));
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (409, json!("not_dead_letter"))
    );
    let r = node.must_post("/v1/dlq/999999/requeue", &json!({}));
    assert_eq!(r.status, 404, "{}", r.body);

    // Cancel stops a running task's process on its node.
    let long = json!({ "exec": { "argv": ["sh", "-c", "sleep 77.25"] }, "timeout_ms": 60000 });
    let a = node.must_post("/v1/tasks", &long);
    let long_id = u(&a.body["id"]);
    wait_until("the long task to run", Duration::from_secs(30), || {
        let t = node.must_get(&format!("/v1/tasks/{long_id}")).body;
        match no_process_matches("sleep 77.25") {
            Err(_) if t["status"] == "running" => Ok(()),
            _ => Err(format!("{t}")),
        }
    });
    let r = node.must_post(&format!("/v1/tasks/{long_id}/cancel"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(
        "the cancelled task's process to be gone",
        Duration::from_secs(10),
        || no_process_matches("sleep 77.25"),
    );
}

#[test]
fn after_waits_for_success_and_fails_when_its_dependency_does() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(dir.path(), &["debug.kernel_delay_ms=300"]);
    let a = u(&node.must_post("/v1/tasks", &stats(1)).body["id"]);
    let b = node.must_post("/v1/tasks", &with(stats(2), json!({ "after": [a] })));
    assert_eq!(b.status, 201, "{}", b.body);
    let b = u(&b.body["id"]);
    let tb = node.must_get(&format!("/v1/tasks/{b}")).body;
    if tb["status"] == "pending" && !tb["waiting_on"].as_array().is_some_and(Vec::is_empty) {
        let why = tb["pending_reason"].as_str().unwrap_or_default();
        assert!(why.contains(&format!("waiting for task {a}")), "{tb}");
    }
    let ta = node.wait_for_task_end(a, Duration::from_secs(30));
    let tb = node.wait_for_task_end(b, Duration::from_secs(30));
    assert_eq!(tb["status"], "succeeded", "{tb}");
    assert!(
        u(&tb["scheduled_at"]) >= u(&ta["finished_at"]),
        "b ran before a ended: {ta} {tb}"
    );

    let c = u(&node.must_post("/v1/tasks", &stats(3)).body["id"]);
    let d = u(&node
        .must_post("/v1/tasks", &with(stats(4), json!({ "after": [c] })))
        .body["id"]);
    let e = u(&node
        .must_post("/v1/tasks", &with(stats(5), json!({ "after": [d] })))
        .body["id"]);
    let r = node.must_post(&format!("/v1/tasks/{c}/cancel"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    for id in [d, e] {
        let t = node.wait_for_task_end(id, Duration::from_secs(30));
        assert_eq!(t["status"], "failed", "{t}");
        assert_eq!(t["error"]["code"], "dependency_failed", "{t}");
    }
    let f = node.must_post("/v1/tasks", &with(stats(6), json!({ "after": [987654] })));
    assert_eq!(f.body["status"], "failed", "{}", f.body);
    assert_eq!(f.body["error"]["code"], "dependency_unknown", "{}", f.body);
}

#[test]
fn admission_limits_answer_429_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Edge-only tasks on a cloud node stay pending.
    let stuck = |i| with(stats(i), json!({ "constraints": { "tier": "edge" } }));
    let node = Node::must_start(
        &dir.path().join("a"),
        &[
            "limits.max_pending=100",
            "limits.max_pending_per_submitter=3",
        ],
    );
    let _ = node.must_submit_batch(&[stuck(1), stuck(2), stuck(3)]);
    let r = node.must_post("/v1/tasks", &stuck(4));
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "too_many_pending", "{}", r.body);
    assert!(r.retry_after.is_some(), "429 without Retry-After");
    assert_eq!(node.must_list_all().len(), 3, "the refused task was stored");
    drop(node);

    let node = Node::must_start(&dir.path().join("b"), &["limits.max_pending=2"]);
    let r = node.must_post(
        "/v1/tasks/batch",
        &json!({ "tasks": [stuck(1), stuck(2), stuck(3)] }),
    );
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "cluster_full", "{}", r.body);
    assert_eq!(
        node.must_list_all().len(),
        0,
        "part of a refused batch was stored"
    );
    let _ = node.must_submit_batch(&[stuck(1), stuck(2)]);
}

#[test]
fn retention_collects_only_finished_tasks() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(
        dir.path(),
        &["retention.max_finished=5", "retention.interval_ms=200"],
    );
    let stuck: Vec<u64> = node.must_submit_batch(&[
        with(stats(1), json!({ "constraints": { "tier": "edge" } })),
        with(stats(2), json!({ "constraints": { "tier": "edge" } })),
    ]);
    let done: Vec<u64> = node.must_submit_batch(&(0..12).map(stats).collect::<Vec<_>>());
    wait_until(
        "retention to keep 5 finished tasks",
        Duration::from_secs(60),
        || {
            let all = node.must_list_all();
            let finished: Vec<u64> = all
                .iter()
                .filter(|t| t["status"] == "succeeded")
                .map(|t| u(&t["id"]))
                .collect();
            let pending: Vec<u64> = all
                .iter()
                .filter(|t| t["status"] == "pending")
                .map(|t| u(&t["id"]))
                .collect();
            for id in &stuck {
                assert!(pending.contains(id), "unfinished task {id} was collected");
            }
            if finished.len() == 5 && all.len() == 7 {
                Ok(finished)
            } else {
                Err(format!("finished {finished:?}, pending {pending:?}"))
            }
        },
    );
    // The oldest went first.
    for id in &done[..7] {
        assert_eq!(node.must_get(&format!("/v1/tasks/{id}")).status, 404);
    }
}

#[test]
fn a_one_second_cron_job_fires_each_slot_at_most_once_across_a_leader_kill() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut c = Cluster::must_start(dir.path(), 3, FAST_FAILOVER);
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let job = |misfire: &str| {
        json!({
            "name": format!("every second, {misfire}"),
            "schedule": "* * * * * *",
            "timezone": "Europe/Berlin",
            "task": stats(1),
            "overlap": "allow",
            "misfire": misfire,
        })
    };
    let create = |n: &Node, body: &Value| {
        let r = n.must_post("/v1/jobs", body);
        assert_eq!(r.status, 201, "{}", r.body);
        u(&r.body["id"])
    };
    let all = create(c.node(leader), &job("fire_all"));
    let skip = create(c.node(leader), &job("skip"));
    let bad = c.node(leader).must_post(
        "/v1/jobs",
        &json!({ "name": "x", "schedule": "* * * * *", "task": stats(1) }),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    // A read during the failover may answer 503 (no leader yet): that is "not yet".
    let slots_decided = |n: &Node, id: u64| -> Result<u64, String> {
        let a = n.must_get(&format!("/v1/jobs/{id}"));
        if a.status != 200 {
            return Err(format!("GET /v1/jobs/{id}: {} {}", a.status, a.body));
        }
        Ok(u(&a.body["fires"]) + u(&a.body["skipped"]))
    };
    wait_until("8 slots before the kill", Duration::from_secs(30), || {
        let d = slots_decided(c.node(leader), all)?;
        if d >= 8 {
            Ok(())
        } else {
            Err(format!("{d} decided"))
        }
    });
    c.node_mut(leader).kill9();
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let new = c.wait_for_leader(&others, Duration::from_secs(30));
    let n = c.node(new);
    wait_until("20 slots in all", Duration::from_secs(60), || {
        let d = slots_decided(n, all)?.min(slots_decided(n, skip)?);
        if d >= 20 {
            Ok(())
        } else {
            Err(format!("{d} decided"))
        }
    });
    let tasks = n.must_list_all();
    let mut by_job: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for t in &tasks {
        if let Some(j) = t["job"]["id"].as_u64() {
            by_job
                .entry(j)
                .or_default()
                .push((u(&t["job"]["slot"]), u(&t["created_at"])));
        }
    }
    for (j, fires) in &by_job {
        let slots: BTreeSet<u64> = fires.iter().map(|f| f.0).collect();
        assert_eq!(
            slots.len(),
            fires.len(),
            "job {j} fired a slot twice: {fires:?}"
        );
        assert!(
            slots.iter().all(|s| s % 1000 == 0),
            "slots are whole seconds"
        );
    }
    // fire_all: every slot from the first to the last fired, the missed ones late.
    let fired: Vec<u64> = by_job
        .get(&all)
        .map(|f| {
            f.iter()
                .map(|x| x.0)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        })
        .unwrap_or_default();
    let (first, last) = (fired[0], fired[fired.len() - 1]);
    assert_eq!(
        fired.len() as u64,
        (last - first) / 1000 + 1,
        "fire_all missed slots: {fired:?}"
    );
    // skip: every fired slot was on time; a missed one was skipped, not fired late.
    for (slot, created) in by_job.get(&skip).cloned().unwrap_or_default() {
        assert!(
            created.saturating_sub(slot) <= 1500,
            "skip fired slot {slot} late, at {created}"
        );
    }
    let jobs = n.must_get("/v1/jobs").body;
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(2), "{jobs}");
    let j = n.must_get(&format!("/v1/jobs/{skip}")).body;
    assert!(j["next_fire"].as_u64().is_some(), "{j}");
    assert_eq!(n.agent_delete(&format!("/v1/jobs/{skip}")).status, 200);
    assert_eq!(n.must_get(&format!("/v1/jobs/{skip}")).status, 404);
}

#[test]
fn large_results_live_off_raft_on_their_node_and_are_fetched_through_any_node() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut c = Cluster::must_start_with(
        dir.path(),
        3,
        &["retention.inline_result_max_bytes=1024"],
        |id| vec![format!("node.labels={{ name = \"n{id}\" }}")],
    );
    c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let values: Vec<f64> = (0..400).map(|i| ((i * 37) % 400) as f64 + 0.5).collect();
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    let big = json!({
        "kernel": "sort",
        "input": { "values": values },
        "constraints": { "labels": { "name": "n1" } }
    });
    let a = c.node(2).must_post("/v1/tasks", &big);
    assert_eq!(a.status, 201, "{}", a.body);
    let id = u(&a.body["id"]);
    c.node(3).wait_for_task_end(id, Duration::from_secs(60));
    for n in [1, 2, 3] {
        let t = c.node(n).must_get(&format!("/v1/tasks/{id}")).body;
        assert_eq!(t["status"], "succeeded", "{t}");
        assert_eq!(t["node"], 1, "{t}");
        assert_eq!(t["result_stored"]["node"], 1, "{t}");
        assert_eq!(t["result"]["values"], json!(sorted), "via node {n}");
    }
    // A small result stays in the log.
    let s = u(&c.node(1).must_post("/v1/tasks", &stats(1)).body["id"]);
    let t = c.node(2).wait_for_task_end(s, Duration::from_secs(60));
    assert_eq!(t["result_stored"], Value::Null, "{t}");
    assert_eq!(t["result"]["mean"], 2.0, "{t}");
    // With its node gone the result is unavailable, said clearly.
    c.node_mut(1).kill9();
    let leader = c.wait_for_leader(&[2, 3], Duration::from_secs(30));
    let r = c.node(leader).must_get(&format!("/v1/tasks/{id}"));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "result_unavailable", "{}", r.body);
}

#[test]
fn preemption_makes_room_for_a_higher_priority_task_without_costing_an_attempt() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(
        dir.path(),
        &[
            "executor.slots=1",
            "executor.isolation=\"process\"",
            "executor.allow_exec_without_container=true",
            "scheduler.preemption=true",
        ],
    );
    let low = json!({
        "exec": { "argv": ["sh", "-c", "sleep 2.75"] },
        "priority": 1,
        "retry": { "max_attempts": 1 }
    });
    let low = u(&node.must_post("/v1/tasks", &low).body["id"]);
    wait_until(
        "the low-priority task to run",
        Duration::from_secs(30),
        || {
            let t = node.must_get(&format!("/v1/tasks/{low}")).body;
            match no_process_matches("sleep 2.75") {
                Err(_) if t["status"] == "running" => Ok(()),
                _ => Err(format!("{t}")),
            }
        },
    );
    let high = u(&node
        .must_post("/v1/tasks", &with(stats(1), json!({ "priority": 90 })))
        .body["id"]);
    let th = node.wait_for_task_end(high, Duration::from_secs(30));
    assert_eq!(th["status"], "succeeded", "{th}");
    // The low one was evicted (its process killed), went back to pending, and still ran to
    // the end with its single allowed attempt intact.
    let tl = node.wait_for_task_end(low, Duration::from_secs(60));
    assert_eq!(tl["status"], "succeeded", "{tl}");
    assert_eq!(tl["preemptions"], 1, "{tl}");
    assert_eq!(tl["attempt"], 2, "{tl}");
    assert_eq!(tl["attempts"][0]["outcome"], "preempted", "{tl}");
    assert!(
        u(&th["finished_at"]) <= u(&tl["attempts"][1]["scheduled_at"]),
        "the low task came back only after the high one: {th} {tl}"
    );
}
