//! Supervision: a failed actor is restarted while the node keeps serving; failing past the
//! restart budget shuts the node down with an error naming the actor.

mod common;

use std::time::Duration;

use common::{wait_until, Node};
use serde_json::json;

fn restarts(node: &Node, actor: &str) -> f64 {
    node.metric(&format!(
        "edgerun_actor_restarts_total{{actor=\"{actor}\"}}"
    ))
    .unwrap_or(0.0)
}

fn must_run_a_task(node: &Node) {
    let a = node.must_post(
        "/v1/tasks",
        &json!({ "kernel": "stats", "input": { "values": [1, 2] } }),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let t = node.wait_for_task_end(a.body["id"].as_u64().unwrap_or(0), Duration::from_secs(30));
    assert_eq!(t["status"], "succeeded", "{t}");
}

/// Inject a failure into `actor` (retrying while it is between restarts) and wait for the
/// restart to be counted.
fn fail_and_wait_restart(node: &Node, actor: &str, expect: f64) {
    wait_until(
        &format!("{actor} to accept an injected failure"),
        Duration::from_secs(20),
        || {
            let a = node.must_post(&format!("/v1/debug/fail/{actor}"), &json!({}));
            if a.status == 202 {
                Ok(())
            } else {
                Err(format!("HTTP {} {}", a.status, a.body))
            }
        },
    );
    wait_until(
        &format!("{actor} restart #{expect}"),
        Duration::from_secs(20),
        || {
            let r = restarts(node, actor);
            if r >= expect {
                Ok(())
            } else {
                Err(format!("restarts = {r}"))
            }
        },
    );
}

#[test]
fn failed_actors_are_restarted_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(dir.path(), &["debug.fault_injection=true"]);
    must_run_a_task(&node);
    for actor in [
        "worker",
        "scheduler",
        "state_shard",
        "cluster_rpc",
        "monitor",
        "api",
    ] {
        fail_and_wait_restart(&node, actor, 1.0);
        // Submissions and execution still work after each restart.
        wait_until(
            "the API to answer after the restart",
            Duration::from_secs(20),
            || {
                node.try_get("/healthz")
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        );
        must_run_a_task(&node);
    }
    let unknown = node.must_post("/v1/debug/fail/nobody", &json!({}));
    assert_eq!(unknown.status, 409, "{}", unknown.body);
    assert!(unknown.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("worker"));
}

#[test]
fn fault_injection_is_off_by_default() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(dir.path(), &[]);
    let a = node.must_post("/v1/debug/fail/worker", &json!({}));
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(restarts(&node, "worker"), 0.0);
    let a = node.must_put("/v1/debug/net", &json!({ "delay_ms": 10 }));
    assert_eq!(a.status, 404, "{}", a.body);
}

#[test]
fn rpc_faults_are_validated_shown_and_healed() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(dir.path(), &["debug.fault_injection=true"]);
    for bad in [
        json!({ "loss_percent": 101 }),
        json!({ "loss_percent": "lots" }),
        json!({ "delay": 5 }),
    ] {
        let a = node.must_put("/v1/debug/net", &bad);
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
    }
    assert_eq!(
        node.must_get("/v1/debug/net").body,
        json!({ "drop_to": [], "delay_ms": 0, "loss_percent": 0 })
    );
    let set = json!({ "drop_to": ["127.0.0.1:1"], "delay_ms": 5, "loss_percent": 10 });
    let a = node.must_put("/v1/debug/net", &set);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(node.must_get("/v1/debug/net").body, set);
    // A single node has no peers to lose, so it keeps committing.
    let ids =
        node.must_submit_batch(&[json!({ "kernel": "stats", "input": { "values": [1, 2] } })]);
    let t = node.wait_for_task_end(ids[0], Duration::from_secs(30));
    assert_eq!(t["status"], "succeeded", "{t}");
    let a = node.must_put("/v1/debug/net", &json!({}));
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(node.must_get("/v1/debug/net").body["drop_to"], json!([]));
}

#[test]
fn exceeding_the_restart_budget_shuts_the_node_down_naming_the_actor() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut node = Node::must_start(
        dir.path(),
        &[
            "debug.fault_injection=true",
            "supervisor.max_restarts=2",
            "supervisor.window_secs=120",
        ],
    );
    fail_and_wait_restart(&node, "worker", 1.0);
    fail_and_wait_restart(&node, "worker", 2.0);
    wait_until(
        "the third failure to be injected",
        Duration::from_secs(20),
        || {
            let a = node.try_post_raw("/v1/debug/fail/worker", b"{}")?;
            if a.status == 202 {
                Ok(())
            } else {
                Err(format!("HTTP {} {}", a.status, a.body))
            }
        },
    );
    let status = node.wait_exit(Duration::from_secs(30));
    assert!(
        !status.success(),
        "the node must exit non-zero, got {status}"
    );
    let log = node.log();
    assert!(
        log.contains("actor worker failed 3 times within 120 s"),
        "the exit message names the actor; log:\n{log}"
    );
}
