//! /metrics on a real 3-node cluster after real work: every metric the operators' issue
//! names is there, with its labels, and Prometheus' own linter (`promtool check metrics`)
//! finds nothing wrong with the exposition.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running promtool: {e} (./scripts/setup installs it)"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn metrics_are_complete_and_pass_promtool() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c = Cluster::must_start(dir.path(), 3, &[]);
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(20));
    let tasks: Vec<_> = (0..12)
        .map(|i| json!({"kernel": "stats", "input": {"values": [i, 2, 3]}, "priority": i % 3}))
        .collect();
    let ids = c.node(leader).must_submit_batch(&tasks);
    for id in &ids {
        c.node(leader)
            .wait_for_task_end(*id, Duration::from_secs(60));
    }
    let _ = c.node(leader).must_get("/v1/tasks/999999");
    // One task no node can take (no edge node here): pending at priority 7.
    let stuck = c.node(leader).must_post(
        "/v1/tasks",
        &json!({"kernel": "stats", "input": {"values": [1]}, "priority": 7, "constraints": {"tier": "edge"}}),
    );
    assert_eq!(stuck.status, 201, "{}", stuck.body);

    // Gauges come from the Monitor's tick: wait until the leader exports the Raft ones.
    let text = wait_until(
        "the leader's Raft and node gauges",
        Duration::from_secs(20),
        || {
            let t = c.node(leader).must_get_text("/metrics");
            if t.contains("edgerun_node_up{node=\"3\"} 1")
                && t.contains("edgerun_raft_replication_lag{")
                && t.contains("edgerun_scheduler_pending{priority=\"7\"} 1")
                && t.contains("edgerun_tasks{status=\"succeeded\"} 12")
            {
                Ok(t)
            } else {
                Err(t
                    .lines()
                    .filter(|l| {
                        l.contains("edgerun_node_up")
                            || l.contains("replication")
                            || l.contains("pending")
                            || l.starts_with("edgerun_tasks{")
                    })
                    .collect::<Vec<_>>()
                    .join(" | "))
            }
        },
    );
    for want in [
        "edgerun_tasks_submitted_total 13",
        "edgerun_tasks{status=\"succeeded\"} 12",
        "edgerun_scheduler_pending{",
        "edgerun_raft_term ",
        &format!("edgerun_raft_leader {leader}"),
        "edgerun_raft_is_leader 1",
        "edgerun_raft_commit_index ",
        "edgerun_raft_replication_lag{peer=",
        "edgerun_node_up{node=\"1\"} 1",
        "edgerun_http_requests_total{route=\"/v1/tasks/batch\",method=\"POST\",status=\"201\"} 1",
        "edgerun_http_requests_total{route=\"/v1/tasks/{id}\",method=\"GET\",status=\"404\"} 1",
        "edgerun_http_request_duration_seconds_bucket{route=\"/v1/tasks/batch\"",
        "# HELP edgerun_actor_restarts_total",
        "# TYPE edgerun_http_request_duration_seconds histogram",
    ] {
        assert!(
            text.contains(want),
            "the leader's /metrics lacks {want:?}:\n{text}"
        );
    }
    let (ok, said) = promtool(&text);
    assert!(ok, "promtool check metrics on the leader:\n{said}");

    // Cluster-wide gauges come from the leader only: what Prometheus would compute as
    // sum(edgerun_tasks{status="succeeded"}) over the three nodes is 12, not 36.
    wait_until(
        "sum over the nodes of edgerun_tasks{status=\"succeeded\"} to be 12",
        Duration::from_secs(20),
        || {
            let texts: Vec<String> = c
                .nodes
                .iter()
                .map(|n| n.must_get_text("/metrics"))
                .collect();
            let sum: f64 = texts
                .iter()
                .flat_map(|t| t.lines())
                .filter_map(|l| l.strip_prefix("edgerun_tasks{status=\"succeeded\"} "))
                .filter_map(|v| v.trim().parse::<f64>().ok())
                .sum();
            let exporting = texts
                .iter()
                .filter(|t| t.contains("edgerun_node_up{"))
                .count();
            if sum == 12.0 && exporting == 1 {
                Ok(())
            } else {
                Err(format!(
                    "sum {sum}, {exporting} nodes export edgerun_node_up"
                ))
            }
        },
    );
    for n in c.nodes.iter().filter(|n| n.id != leader) {
        let t = n.must_get_text("/metrics");
        let (ok, said) = promtool(&t);
        assert!(ok, "promtool check metrics on node {}:\n{said}", n.id);
    }

    // The attempts ran somewhere: across the nodes, 12 finished, with durations by kernel,
    // and where they ran in containers, the containers' start times.
    let isolation = c
        .node(leader)
        .must_get(&format!("/v1/tasks/{}", ids[0]))
        .body["isolation"]
        .clone();
    let mut container_starts = 0.0;
    let mut finished = 0.0;
    for n in &c.nodes {
        let t = n.must_get_text("/metrics");
        let (ok, said) = promtool(&t);
        assert!(ok, "promtool check metrics on node {}:\n{said}", n.id);
        finished += n
            .metric("edgerun_tasks_finished_total{status=\"succeeded\"}")
            .unwrap_or(0.0);
        container_starts += n
            .metric("edgerun_container_start_seconds_count")
            .unwrap_or(0.0);
        if t.contains("edgerun_tasks_finished_total") {
            assert!(
                t.contains("edgerun_task_duration_seconds_bucket{kernel=\"stats\",isolation=")
                    && t.contains("edgerun_task_queue_wait_seconds_count"),
                "node {} ran tasks but has no duration or queue-wait histogram:\n{t}",
                n.id
            );
        }
    }
    assert_eq!(finished, 12.0, "finished attempts across the nodes");
    if isolation == "container" {
        // The 12 attempts and each node's start-up probe of the container runtime.
        assert_eq!(
            container_starts, 15.0,
            "container start times across the nodes"
        );
    } else {
        assert_eq!(
            container_starts, 0.0,
            "no containers ({isolation}), yet start times"
        );
    }
    // The database's and the log's sizes are exported within their 10 s period.
    wait_until(
        "edgerun_sled_disk_bytes and edgerun_raft_log_bytes",
        Duration::from_secs(15),
        || {
            let n = c.node(leader);
            match (
                n.metric("edgerun_sled_disk_bytes"),
                n.metric("edgerun_raft_log_bytes"),
            ) {
                (Some(a), Some(b)) if a > 0.0 && b > 0.0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
}

/// A scrape right after the node says it is ready already has the Raft and task gauges
/// (they used to appear only after the Monitor's first tick, a second later).
#[test]
fn the_gauges_are_there_from_the_first_scrape() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(dir.path(), &[]);
    let text = node.must_get_text("/metrics");
    for name in [
        "edgerun_raft_term",
        "edgerun_raft_is_leader",
        "edgerun_tasks{",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} is not in the first scrape:\n{text}"
        );
    }
}
