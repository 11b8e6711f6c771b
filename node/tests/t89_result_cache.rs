//! Result memoization with a real Redis shared by three nodes, and the in-process cache of a
//! node without Redis: a repeated deterministic kernel run completes from the cache
//! (`cached: true`, same result); `"cache": false` and exec tasks always run; Redis going away
//! never fails a task, and caching resumes when it is back.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn run(node: &Node, task: Value) -> Value {
    let a = node.must_post("/v1/tasks", &task);
    assert!(a.status == 201 || a.status == 200, "{}", a.body);
    let id = a.body["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("{}", a.body));
    let t = node.wait_for_task_end(id, Duration::from_secs(60));
    assert_eq!(t["status"], "succeeded", "{t}");
    t
}

fn stats(values: &[i64]) -> Value {
    json!({"kernel": "stats", "input": {"values": values}})
}

/// Submit `tasks` in one batch and wait for all: (cached count, the tasks).
fn batch(node: &Node, tasks: &[Value]) -> (usize, Vec<Value>) {
    let ids = node.must_submit_batch(tasks);
    let done: Vec<Value> = ids
        .iter()
        .map(|id| node.wait_for_task_end(*id, Duration::from_secs(120)))
        .collect();
    for t in &done {
        assert_eq!(t["status"], "succeeded", "{t}");
    }
    (done.iter().filter(|t| t["cached"] == true).count(), done)
}

#[test]
fn three_nodes_share_results_through_redis_and_run_on_without_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut redis = RedisServer::must_start(&dir.path().join("redis"));
    let url = format!("redis.url=\"{}\"", redis.url());
    let c = Cluster::must_start(dir.path(), 3, &[&url]);
    c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));

    // First run computes, the second (through another node) comes from the cache.
    let first = run(c.node(1), stats(&[3, 1, 4, 1, 5]));
    assert_eq!(first["cached"], false, "{first}");
    let second = run(c.node(2), stats(&[3, 1, 4, 1, 5]));
    assert_eq!(second["cached"], true, "{second}");
    assert_eq!(second["result"], first["result"]);
    // Opting out runs the kernel; exec tasks are never cached.
    let mut no = stats(&[3, 1, 4, 1, 5]);
    no["cache"] = json!(false);
    assert_eq!(run(c.node(3), no)["cached"], false);
    let exec = json!({"exec": {"argv": ["echo", "hi"]}});
    run(c.node(1), exec.clone());
    assert_eq!(run(c.node(1), exec)["cached"], false);

    // A repeated workload: 60 tasks over 6 inputs, twice.
    let work: Vec<Value> = (0..60).map(|i| stats(&[i % 6, 100, 200])).collect();
    let (hits_first, first_batch) = batch(c.node(3), &work);
    let (hits_again, again) = batch(c.node(1), &work);
    println!("repeated workload (60 tasks, 6 inputs, 3 nodes): {hits_first}/60 from the cache the first time, {hits_again}/60 the second");
    assert_eq!(hits_again, 60, "every input is cached by now");
    for (a, b) in first_batch.iter().zip(&again) {
        assert_eq!(
            a["result"], b["result"],
            "a cached result differs from the computed one"
        );
    }
    let hits: f64 = c
        .nodes
        .iter()
        .filter_map(|n| n.metric("edgerun_cache_hits_total"))
        .sum();
    assert!(
        hits >= 61.0,
        "edgerun_cache_hits_total over the nodes: {hits}"
    );

    // Redis goes away: tasks still succeed, computed; each node says so once.
    redis.kill();
    for i in 0..6 {
        let t = run(&c.nodes[i % 3], stats(&[3, 1, 4, 1, 5]));
        assert_eq!(t["cached"], false, "no cache without Redis: {t}");
    }
    wait_until(
        "a warning that the cache is unavailable",
        Duration::from_secs(10),
        || {
            let warned = c
                .nodes
                .iter()
                .filter(|n| n.log().contains("the result cache is unavailable"))
                .count();
            if warned >= 1 {
                Ok(())
            } else {
                Err("no node has warned yet".into())
            }
        },
    );
    // Back (empty): results are kept and found again.
    redis.must_restart();
    wait_until("the cache to work again", Duration::from_secs(30), || {
        run(c.node(2), stats(&[2, 7, 1, 8]));
        let t = run(c.node(3), stats(&[2, 7, 1, 8]));
        if t["cached"] == true {
            Ok(())
        } else {
            Err(format!("not cached: {t}"))
        }
    });
}

#[test]
fn without_redis_a_node_caches_in_process_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(&dir.path().join("a"), &[]);
    assert_eq!(run(&node, stats(&[9, 9]))["cached"], false);
    let t = run(&node, stats(&[9, 9]));
    assert_eq!(t["cached"], true, "{t}");
    // Another kernel, or other input: a miss.
    assert_eq!(run(&node, stats(&[9, 8]))["cached"], false);
    assert_eq!(
        run(
            &node,
            json!({"kernel": "sort", "input": {"values": [9, 9]}})
        )["cached"],
        false
    );

    let off = Node::must_start(&dir.path().join("b"), &["cache.enabled=false"]);
    run(&off, stats(&[9, 9]));
    assert_eq!(run(&off, stats(&[9, 9]))["cached"], false);

    // A bad cache setting stops a node before it starts.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_edgerun"))
        .args(["node", "--check-config", "--set", "cache.ttl_secs=0"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cache.ttl_secs"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
