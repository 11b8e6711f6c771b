//! kill -9 the node while tasks run, restart it on the same data dir: every acknowledged
//! task and every recorded result is still there, and the unfinished tasks complete.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{wait_until, Node, Rng};
use serde_json::{json, Value};

#[test]
fn kill_9_mid_run_loses_nothing_and_unfinished_tasks_complete() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // One slot, so that a good share of the work is still queued when the node dies.
    let mut node = Node::must_start(dir.path(), &["executor.slots=1"]);
    let mut rng = Rng(42);
    let n = 150;
    // Matmuls big enough to take a few milliseconds each.
    let tasks: Vec<Value> = (0..n)
        .map(|_| {
            let m: Vec<Vec<f32>> = (0..96)
                .map(|_| (0..96).map(|_| (rng.next_u64() % 7) as f32).collect())
                .collect();
            json!({ "kernel": "matmul", "input": { "a": m, "b": m } })
        })
        .collect();
    let ids = node.must_submit_batch(&tasks);
    assert_eq!(ids.len(), n);
    // Submissions acknowledged one by one, too.
    let mut single = Vec::new();
    for i in 0..20 {
        let a = node.must_post(
            "/v1/tasks",
            &json!({ "kernel": "stats", "input": { "values": [i, i + 1] } }),
        );
        assert_eq!(a.status, 201);
        single.push(a.body["id"].as_u64().unwrap_or(0));
    }

    // Wait until some, not all, have finished, then crash.
    let before: BTreeMap<u64, Value> =
        wait_until("some tasks to succeed", Duration::from_secs(60), || {
            let all = node.must_list_all();
            let done = all.iter().filter(|t| t["status"] == "succeeded").count();
            if done >= 5 {
                Ok(all
                    .into_iter()
                    .map(|t| (t["id"].as_u64().unwrap_or(0), t))
                    .collect())
            } else {
                Err(format!("{done} succeeded"))
            }
        });
    node.kill9();
    let unfinished = before
        .values()
        .filter(|t| t["status"] != "succeeded")
        .count();
    eprintln!(
        "crashed with {} succeeded, {unfinished} unfinished",
        before.len() - unfinished
    );

    node.must_restart();
    let after: BTreeMap<u64, Value> = node
        .must_list_all()
        .into_iter()
        .map(|t| (t["id"].as_u64().unwrap_or(0), t))
        .collect();
    for id in ids.iter().chain(&single) {
        assert!(
            after.contains_key(id),
            "task {id} acknowledged before the crash is gone"
        );
    }
    // Results recorded before the crash are unchanged.
    for (id, t) in &before {
        if t["status"] == "succeeded" {
            assert_eq!(after[id]["result"], t["result"], "task {id}");
            assert_eq!(after[id]["finished_at"], t["finished_at"], "task {id}");
        }
    }
    for id in ids.iter().chain(&single) {
        let t = node.wait_for_task_end(*id, Duration::from_secs(120));
        assert_eq!(t["status"], "succeeded", "{t}");
    }
    assert_eq!(
        node.must_list_all().len(),
        n + single.len(),
        "no task recorded twice"
    );
    // The ids keep counting after a restart: a new task gets a fresh id.
    let a = node.must_post(
        "/v1/tasks",
        &json!({ "kernel": "stats", "input": { "values": [1] } }),
    );
    assert_eq!(a.body["id"].as_u64(), Some((n + single.len() + 1) as u64));
}

#[test]
fn sigterm_stops_the_node_cleanly_and_it_comes_back_with_its_state() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut node = Node::must_start(dir.path(), &[]);
    let a = node.must_post(
        "/v1/tasks",
        &json!({ "kernel": "stats", "input": { "values": [4, 8] } }),
    );
    let id = a.body["id"].as_u64().unwrap_or(0);
    let done = node.wait_for_task_end(id, Duration::from_secs(30));
    node.terminate();
    let st = node.wait_exit(Duration::from_secs(30));
    assert!(
        st.success(),
        "a clean stop exits 0, got {st}; log:\n{}",
        node.log()
    );
    assert!(node.log().contains("node stopped"), "{}", node.log());
    node.must_restart();
    assert_eq!(node.must_get(&format!("/v1/tasks/{id}")).body, done);
}
