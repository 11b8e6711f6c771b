//! The circuit breaker on cluster RPC, on a real cluster: a task's large result is kept on
//! the node that ran it; that node is frozen (SIGSTOP: it accepts connections and answers
//! nothing). Reads of the result through another node first wait out their timeout, then the
//! circuit opens and they fail at once, saying so (503 `result_unavailable`, "circuit open");
//! the gauge and counter show it. Thawed, a probe gets through and reads work again.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn a_frozen_peer_opens_the_circuit_and_a_probe_closes_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut c = Cluster::must_start_with(
        dir.path(),
        3,
        &[
            "retention.inline_result_max_bytes=256",
            "raft.forward_timeout_ms=2000",
            "cluster.breaker_failures=3",
            "cluster.breaker_cooldown_ms=300",
        ],
        |id| vec![format!("node.labels={{ name = \"n{id}\" }}")],
    );
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let frozen = (1..=3).find(|i| *i != leader).unwrap_or(1);
    let values: Vec<i64> = (0..200).rev().collect();
    let a = c.node(leader).must_post(
        "/v1/tasks",
        &json!({"kernel": "sort", "input": {"values": values},
                "constraints": {"labels": {"name": [format!("n{frozen}")]}}}),
    );
    let id = a.body["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("{}", a.body));
    let t = c
        .node(leader)
        .wait_for_task_end(id, Duration::from_secs(60));
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(
        t["result_stored"]["node"], frozen,
        "the result is kept on its node: {t}"
    );
    let path = format!("/v1/tasks/{id}");
    assert_eq!(c.node(leader).must_get(&path).status, 200);

    c.node(frozen).signal("STOP");
    let peer = c.node(frozen).rpc_addr();
    let mut timings = Vec::new();
    let fast = wait_until(
        "reads of the frozen node's result to fail at once (circuit open)",
        Duration::from_secs(60),
        || {
            let t0 = Instant::now();
            let a = c.node(leader).must_get(&path);
            timings.push((t0.elapsed().as_millis(), a.status));
            let msg = a.body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if a.status == 503 && msg.contains("circuit open") {
                assert_eq!(a.body["error"]["code"], "result_unavailable", "{}", a.body);
                Ok(msg)
            } else {
                Err(format!("{} {}", a.status, a.body))
            }
        },
    );
    println!("reads while the peer is frozen (ms, status): {timings:?}; then: {fast}");
    let open = c
        .node(leader)
        .metric(&format!("edgerun_rpc_circuit_open{{peer=\"{peer}\"}}"));
    assert_eq!(open, Some(1.0), "the open gauge for {peer}");
    let opened = c
        .node(leader)
        .metric(&format!(
            "edgerun_rpc_circuit_opened_total{{peer=\"{peer}\"}}"
        ))
        .unwrap_or(0.0);
    assert!(opened >= 1.0, "opened_total = {opened}");
    assert!(c.node(leader).log().contains("cluster RPC circuit opened"));
    // The cluster itself carries on meanwhile: two of three voters.
    let a = c.node(leader).must_post(
        "/v1/tasks",
        &json!({"kernel": "stats", "input": {"values": [1, 2]}}),
    );
    let other = a.body["id"].as_u64().unwrap_or(0);
    assert_eq!(
        c.node(leader)
            .wait_for_task_end(other, Duration::from_secs(60))["status"],
        "succeeded"
    );

    c.node_mut(frozen).signal("CONT");
    wait_until(
        "a probe to close the circuit and the read to work again",
        Duration::from_secs(60),
        || {
            let a = c.node(leader).must_get(&path);
            if a.status == 200 && a.body["result"]["values"].is_array() {
                Ok(())
            } else {
                Err(format!("{} {}", a.status, a.body))
            }
        },
    );
    wait_until(
        "the open gauge back to 0",
        Duration::from_secs(10),
        || match c
            .node(leader)
            .metric(&format!("edgerun_rpc_circuit_open{{peer=\"{peer}\"}}"))
        {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(c.node(leader).log().contains("cluster RPC circuit closed"));
}
