//! Tracing and run-time log control on real nodes:
//! - one task's trace id in the logs of all three nodes of a cluster (submitted through one
//!   follower, proposed by the leader, run on the other follower), with the client's own
//!   W3C `traceparent` honoured and echoed;
//! - `PUT /v1/admin/log` changes the filter at once; a bad filter is refused and changes
//!   nothing;
//! - `log.format = "json"`: every line is a JSON object, the attempt's lines carry its trace;
//! - SIGHUP re-reads the config file: new rate limits and log filter apply, a key that needs a
//!   restart is reported, a broken file changes nothing.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Lines of `log` that mention `trace`.
fn lines_with<'a>(log: &'a str, trace: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(trace)).collect()
}

#[test]
fn one_trace_id_follows_a_task_across_three_nodes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Each node is labelled with its own id, so a task can be sent to one of them.
    let c = Cluster::must_start_with(dir.path(), 3, &[], |id| {
        vec![format!("node.labels={{ name = \"n{id}\" }}")]
    });
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let followers: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    let (entry, runner) = (followers[0], followers[1]);
    for n in &c.nodes {
        let a = n.must_put(
            "/v1/admin/log",
            &json!({ "filter": "info,edgerun::trace=debug" }),
        );
        assert_eq!(a.status, 200, "node {}: {}", n.id, a.body);
        assert_eq!(a.body["filter"], "info,edgerun::trace=debug");
    }
    // Submitted through a follower with the client's trace context.
    let resp = ureq::post(&format!("{}/v1/tasks", c.node(entry).url))
        .set("traceparent", &format!("00-{TRACE}-00f067aa0ba902b7-01"))
        .send_json(json!({
            "kernel": "stats",
            "input": {"values": [1, 2, 3]},
            "constraints": {"labels": {"name": [format!("n{runner}")]}},
        }))
        .unwrap_or_else(|e| panic!("submitting: {e}"));
    assert_eq!(resp.header("x-trace-id"), Some(TRACE));
    let task: Value = resp.into_json().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(task["trace_id"], TRACE, "{task}");
    let id = task["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id: {task}"));
    let done = c.node(entry).wait_for_task_end(id, Duration::from_secs(60));
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["node"], runner, "{done}");
    assert_eq!(done["trace_id"], TRACE);

    // Each hop in the log of the node that made it; every node applied the task's changes.
    let want = [
        (entry, "submit received"),
        (entry, "forwarding to the leader"),
        (leader, "proposing a write forwarded by a follower"),
        (leader, "placing"),
        (runner, "attempt started"),
        (runner, "attempt ended"),
    ];
    let excerpt = wait_until(
        "every hop of the task in the logs, with its trace id",
        Duration::from_secs(20),
        || {
            for (node, what) in want {
                let log = c.node(node).log();
                if !lines_with(&log, TRACE).iter().any(|l| l.contains(what)) {
                    return Err(format!(
                        "node {node} has no {what:?} line with the trace id"
                    ));
                }
            }
            for n in &c.nodes {
                let log = n.log();
                let applied = lines_with(&log, TRACE);
                if !applied
                    .iter()
                    .any(|l| l.contains("applied") && l.contains("succeeded"))
                {
                    return Err(format!("node {} has not logged the task succeeding", n.id));
                }
            }
            let mut out = String::new();
            for n in &c.nodes {
                let role = if n.id == leader {
                    "leader"
                } else if n.id == entry {
                    "entry follower"
                } else {
                    "runner follower"
                };
                for l in lines_with(&n.log(), TRACE) {
                    out.push_str(&format!("[node {} {role}] {l}\n", n.id));
                }
            }
            Ok(out)
        },
    );
    // Kept for the record (the closing note quotes it).
    let target =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/trace-excerpt.txt");
    let _ = std::fs::write(&target, &excerpt);

    // A request without a trace context gets a fresh id, different per request.
    let a = ureq::post(&format!("{}/v1/tasks/batch", c.node(leader).url))
        .send_json(json!({"tasks": [{"kernel": "stats", "input": {"values": [1]}}]}))
        .unwrap_or_else(|e| panic!("{e}"));
    let fresh = a.header("x-trace-id").unwrap_or_default().to_string();
    assert_eq!(fresh.len(), 32, "{fresh:?}");
    assert_ne!(fresh, TRACE);
    let ids: Value = a.into_json().unwrap_or_else(|e| panic!("{e}"));
    let batch_id = ids["ids"][0].as_u64().unwrap_or_else(|| panic!("{ids}"));
    let t = c
        .node(leader)
        .must_get(&format!("/v1/tasks/{batch_id}"))
        .body;
    assert_eq!(t["trace_id"], fresh.as_str());
    // A malformed traceparent is ignored, not trusted.
    let a = ureq::post(&format!("{}/v1/tasks", c.node(leader).url))
        .set("traceparent", "00-XYZ-00f067aa0ba902b7-01")
        .send_json(json!({"kernel": "stats", "input": {"values": [1]}}))
        .unwrap_or_else(|e| panic!("{e}"));
    let other = a.header("x-trace-id").unwrap_or_default().to_string();
    assert_eq!(other.len(), 32);
    assert!(other.bytes().all(|b| b.is_ascii_hexdigit()), "{other}");
}

#[test]
fn the_log_filter_changes_at_run_time_and_json_logs_parse() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(dir.path(), &["log.format=\"json\""]);
    let before = node.must_get("/v1/admin/log");
    assert_eq!(before.status, 200);
    assert_eq!(before.body["format"], "json");
    assert_eq!(before.body["filter"], "info", "the harness's EDGERUN_LOG");
    // A bad filter: 400, nothing changed.
    for bad in [
        json!({"filter": "edgerun=loud"}),
        json!({"filter": ""}),
        json!({"filter": 7}),
        json!({"level": "debug"}),
    ] {
        let a = node.must_put("/v1/admin/log", &bad);
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert_eq!(node.must_get("/v1/admin/log").body["filter"], "info");
    }
    // No trace lines at info ...
    let quiet = node
        .must_post(
            "/v1/tasks",
            &json!({"kernel": "stats", "input": {"values": [5]}}),
        )
        .body;
    let quiet_trace = quiet["trace_id"].as_str().unwrap_or_default().to_string();
    let quiet_id = quiet["id"].as_u64().unwrap_or_else(|| panic!("{quiet}"));
    node.wait_for_task_end(quiet_id, Duration::from_secs(30));
    // ... and they appear once the filter asks for them.
    let a = node.must_put(
        "/v1/admin/log",
        &json!({"filter": "info,edgerun::trace=debug"}),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let t = node
        .must_post(
            "/v1/tasks",
            &json!({"kernel": "stats", "input": {"values": [6]}}),
        )
        .body;
    let trace = t["trace_id"].as_str().unwrap_or_default().to_string();
    let id = t["id"].as_u64().unwrap_or_else(|| panic!("{t}"));
    node.wait_for_task_end(id, Duration::from_secs(30));
    let log = wait_until(
        "the attempt's lines in the JSON log",
        Duration::from_secs(10),
        || {
            let log = node.log();
            if log.contains("attempt ended") && log.contains(&trace) {
                Ok(log)
            } else {
                Err("no \"attempt ended\" line with the task's trace yet".into())
            }
        },
    );
    assert!(
        !log.contains(&quiet_trace),
        "trace lines were logged at info"
    );
    let mut attempt_lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
        if v["fields"]["message"] == "attempt ended" {
            assert_eq!(v["span"]["trace_id"], trace.as_str(), "{line}");
            assert_eq!(v["target"], "edgerun::trace");
            attempt_lines += 1;
        }
    }
    assert_eq!(attempt_lines, 1, "one attempt, one 'attempt ended' line");
}

fn write_config(path: &std::path::Path, rate: u32, burst: u32, filter: &str, slots: u32) {
    std::fs::write(
        path,
        format!(
            "[auth]\nenabled = false\n\n[limits]\nrequests_per_second = {rate}\nburst = {burst}\n\n[log]\nfilter = \"{filter}\"\n\n[executor]\nslots = {slots}\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// GET /v1/tasks `n` times; how many were rate limited.
fn limited_of(node: &Node, n: usize) -> usize {
    (0..n)
        .filter(|_| node.must_get("/v1/tasks?limit=1").status == 429)
        .count()
}

#[test]
fn sighup_rereads_rate_limits_and_the_log_filter() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("node.toml");
    write_config(&file, 1, 3, "info", 4);
    let mut node = Node::spawn_custom(
        dir.path(),
        1,
        free_port(),
        free_port(),
        &[],
        SpawnOpts {
            config: Some(file.clone()),
            harness_sets: false,
            log_env: None,
        },
    );
    node.must_be_ready();
    assert!(
        limited_of(&node, 10) >= 5,
        "burst 3 at 1/s should refuse most of 10 quick calls"
    );

    // Looser limits, a louder filter, and a key that needs a restart.
    write_config(&file, 100000, 100000, "info,edgerun::trace=debug", 8);
    node.signal("HUP");
    let line = wait_until("the reload's log line", Duration::from_secs(10), || {
        node.log()
            .lines()
            .find(|l| l.contains("configuration re-read"))
            .map(String::from)
            .ok_or_else(|| "not yet".to_string())
    });
    assert!(
        line.contains("executor.slots"),
        "needs_restart not reported: {line}"
    );
    assert!(node.is_running(), "SIGHUP must not stop the node");
    assert_eq!(limited_of(&node, 30), 0, "the new limits are in force");
    assert_eq!(
        node.must_get("/v1/admin/log").body["filter"],
        "info,edgerun::trace=debug"
    );

    // A broken file: nothing changes, the node says why and keeps running.
    std::fs::write(&file, "[limits\nrequests_per_second = 1\n").unwrap_or_else(|e| panic!("{e}"));
    node.signal("HUP");
    wait_until(
        "the refused reload's log line",
        Duration::from_secs(10),
        || {
            if node
                .log()
                .contains("the configuration was not reloaded; nothing changed")
            {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    );
    assert_eq!(
        limited_of(&node, 30),
        0,
        "limits unchanged by a broken file"
    );
    let a = node.must_post("/v1/admin/reload", &json!({}));
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "invalid_config");

    // Fixed again, through the admin route this time: the tighter limit is back.
    write_config(&file, 1, 2, "info", 8);
    let a = node.must_post("/v1/admin/reload", &json!({}));
    assert_eq!(a.status, 200, "{}", a.body);
    let applied: Vec<&str> = a.body["applied"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        applied.contains(&"limits.burst") && applied.contains(&"log.filter"),
        "{}",
        a.body
    );
    assert_eq!(
        a.body["needs_restart"],
        json!(["executor.slots"]),
        "{}",
        a.body
    );
    assert!(limited_of(&node, 10) >= 5, "the tight limit applies again");
}
