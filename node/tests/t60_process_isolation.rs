//! Process isolation: every attempt is a child process with limits; exec tasks; timeouts kill
//! the whole process group; the mode used is recorded on every result.

mod common;

use std::time::Duration;

use common::{no_process_matches, wait_until, Node};
use serde_json::json;

#[test]
fn kernels_run_in_child_processes_within_their_memory_limit() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(dir.path(), &["executor.isolation=\"process\""]);
    let ok = node.must_post(
        "/v1/tasks",
        &json!({ "kernel": "stats", "input": { "values": [1, 2, 3, 4] } }),
    );
    let t = node.wait_for_task_end(ok.body["id"].as_u64().unwrap_or(0), Duration::from_secs(30));
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(t["isolation"], "process");
    assert_eq!(t["result"]["mean"], 2.5);

    // A 3000x3000 result (36 MB of floats, more as JSON) cannot fit in 16 MiB.
    let col: Vec<Vec<f32>> = (0..3000).map(|i| vec![i as f32]).collect();
    let row: Vec<Vec<f32>> = vec![(0..3000).map(|i| i as f32).collect()];
    let big = node.must_post(
        "/v1/tasks",
        &json!({ "kernel": "matmul", "input": { "a": col, "b": row }, "resources": { "memory_mb": 16 } }),
    );
    assert_eq!(big.status, 201, "{}", big.body);
    let t = node.wait_for_task_end(
        big.body["id"].as_u64().unwrap_or(0),
        Duration::from_secs(60),
    );
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "oom_killed", "{t}");
    assert_eq!(t["attempt"], 1, "out of memory is not retried: {t}");
    // The node is fine and keeps working.
    let again = node.must_post(
        "/v1/tasks",
        &json!({ "kernel": "stats", "input": { "values": [5] } }),
    );
    let t = node.wait_for_task_end(
        again.body["id"].as_u64().unwrap_or(0),
        Duration::from_secs(30),
    );
    assert_eq!(t["status"], "succeeded", "{t}");
}

#[test]
fn exec_tasks_need_an_explicit_opt_in_without_containers() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(dir.path(), &["executor.isolation=\"process\""]);
    let a = node.must_post("/v1/tasks", &json!({ "exec": { "argv": ["true"] } }));
    assert_eq!(a.status, 201, "{}", a.body);
    let t = node.wait_for_task_end(a.body["id"].as_u64().unwrap_or(0), Duration::from_secs(30));
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "unsupported", "{t}");
}

#[test]
fn exec_tasks_capture_output_and_exit_codes_and_timeouts_kill_the_process_group() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(
        dir.path(),
        &[
            "executor.isolation=\"process\"",
            "executor.allow_exec_without_container=true",
        ],
    );
    let run = |body: serde_json::Value| {
        let a = node.must_post("/v1/tasks", &body);
        assert_eq!(a.status, 201, "{}", a.body);
        node.wait_for_task_end(a.body["id"].as_u64().unwrap_or(0), Duration::from_secs(60))
    };
    let t = run(
        json!({ "exec": { "argv": ["sh", "-c", "echo hello $NAME; echo oops >&2"], "env": { "NAME": "edge" } } }),
    );
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(t["isolation"], "process");
    assert_eq!(t["result"]["exit_code"], 0);
    assert_eq!(t["result"]["stdout"], "hello edge\n");
    assert_eq!(t["result"]["stderr"], "oops\n");
    assert_eq!(t["result"]["truncated"], false);

    let t = run(json!({ "exec": { "argv": ["sh", "-c", "echo partial; exit 7"] } }));
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "nonzero_exit");
    assert_eq!(
        t["result"]["exit_code"], 7,
        "the output of a failed command is kept: {t}"
    );
    assert_eq!(t["result"]["stdout"], "partial\n");

    let t =
        run(json!({ "exec": { "argv": ["sh", "-c", "head -c 200000 /dev/zero | tr '\\\\0' x"] } }));
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(t["result"]["truncated"], true);
    assert_eq!(
        t["result"]["stdout"].as_str().map(|s| s.len()),
        Some(64 * 1024)
    );

    let t = run(json!({ "exec": { "argv": ["no-such-program-xyz"] } }));
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "exec_failed");

    // A command that forks a grandchild and outlives its timeout: the whole group dies.
    let t = run(json!({
        "exec": { "argv": ["sh", "-c", "sleep 41.5 & sleep 42.5; wait"] },
        "timeout_ms": 300,
        "retry": { "max_attempts": 1 },
    }));
    assert_eq!(t["status"], "timed_out", "{t}");
    wait_until(
        "the timed-out process group to be gone",
        Duration::from_secs(10),
        || no_process_matches("sleep 41.5").and_then(|_| no_process_matches("sleep 42.5")),
    );
}

#[test]
fn inproc_isolation_is_available_for_benchmarks() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(dir.path(), &["executor.isolation=\"inproc\""]);
    let a = node.must_post(
        "/v1/tasks",
        &json!({ "kernel": "stats", "input": { "values": [2, 4] } }),
    );
    let t = node.wait_for_task_end(a.body["id"].as_u64().unwrap_or(0), Duration::from_secs(30));
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(t["isolation"], "inproc");
    let e = node.must_post("/v1/tasks", &json!({ "exec": { "argv": ["true"] } }));
    let t = node.wait_for_task_end(e.body["id"].as_u64().unwrap_or(0), Duration::from_secs(30));
    assert_eq!(t["error"]["code"], "unsupported", "{t}");
}
