//! Edge autonomy: a node cut off from the leader keeps running what it was given, keeps its
//! completions in its on-disk outbox, and delivers them when it can reach the cluster again,
//! even after a restart in between; nothing is run or recorded twice.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[test]
fn a_cut_off_node_keeps_finished_work_in_its_outbox_across_a_restart_and_delivers_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // A long lease: the leader does not give the tasks away while the node is cut off, so
    // the delivered results are the ones recorded.
    let mut c = Cluster::must_start_with(
        dir.path(),
        3,
        &[
            "debug.fault_injection=true",
            "debug.kernel_delay_ms=1500",
            "cluster.lease_ms=60000",
        ],
        |id| vec![format!("node.labels={{ name = \"n{id}\" }}")],
    );
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let victim = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap_or(3);
    let members = c.node(leader).must_get("/v1/cluster").body["members"].clone();
    let rpc_of = |id: u64| -> String {
        members
            .as_array()
            .and_then(|m| m.iter().find(|x| x["id"].as_u64() == Some(id)))
            .and_then(|x| x["rpc"].as_str())
            .unwrap_or_else(|| panic!("no rpc address for node {id}: {members}"))
            .to_string()
    };
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != victim).collect();
    let tasks: Vec<Value> = (0..3u64)
        .map(|i| {
            json!({
                "kernel": "stats",
                "input": { "values": [i, i + 1, i + 2] },
                "constraints": { "labels": { "name": format!("n{victim}") } },
            })
        })
        .collect();
    let ids = c.node(leader).must_submit_batch(&tasks);
    wait_until(
        "the tasks to run on the victim",
        Duration::from_secs(30),
        || {
            let running = ids
                .iter()
                .filter(|id| {
                    c.node(leader).must_get(&format!("/v1/tasks/{id}")).body["status"] == "running"
                })
                .count();
            if running == ids.len() {
                Ok(())
            } else {
                Err(format!("{running} running"))
            }
        },
    );

    // Cut the victim off both ways.
    let a = c.node(victim).must_put(
        "/v1/debug/net",
        &json!({ "drop_to": others.iter().map(|o| rpc_of(*o)).collect::<Vec<_>>() }),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    for o in &others {
        let a = c
            .node(*o)
            .must_put("/v1/debug/net", &json!({ "drop_to": [rpc_of(victim)] }));
        assert_eq!(a.status, 200, "{}", a.body);
    }
    // It finishes them anyway and keeps the completions.
    wait_until(
        "the victim's outbox to hold its three completions",
        Duration::from_secs(30),
        || {
            let n = c
                .node(victim)
                .metric("edgerun_worker_outbox")
                .unwrap_or(0.0);
            if n >= 3.0 {
                Ok(())
            } else {
                Err(format!("outbox {n}"))
            }
        },
    );
    for id in &ids {
        let t = c.node(leader).must_get(&format!("/v1/tasks/{id}")).body;
        assert_eq!(t["status"], "running", "the cluster cannot know yet: {t}");
    }
    // A crash while cut off: the outbox is on disk. The restarted node has no fault filter
    // (it lives in memory), so it reaches the cluster again at once.
    for o in &others {
        c.node(*o).must_put("/v1/debug/net", &json!({}));
    }
    c.node_mut(victim).kill9();
    c.node_mut(victim).must_restart();
    for id in &ids {
        let t = c
            .node(leader)
            .wait_for_task_end(*id, Duration::from_secs(60));
        assert_eq!(t["status"], "succeeded", "{t}");
        assert_eq!(
            t["attempt"], 1,
            "run once, delivered after the restart: {t}"
        );
        assert_eq!(t["node"], victim, "{t}");
    }
    let log = c.node(victim).log();
    assert!(
        log.contains("delivering a completion kept in the outbox"),
        "the restarted node did not deliver from its outbox"
    );
    wait_until("the outbox to empty", Duration::from_secs(30), || {
        let n = c
            .node(victim)
            .metric("edgerun_worker_outbox")
            .unwrap_or(-1.0);
        if n == 0.0 {
            Ok(())
        } else {
            Err(format!("outbox {n}"))
        }
    });
}
