//! Process isolation: every attempt is a child process with limits; exec tasks; timeouts kill
//! the whole process group; the mode used is recorded on every result. As root the child runs
//! as `executor.task_user` without capabilities, under the containers' seccomp profile, in a
//! cgroup that is emptied when the attempt ends.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{big_result_task, no_process_matches, wait_until, Node, CLONE_PROBE};
use serde_json::{json, Value};

fn run(node: &Node, body: Value) -> Value {
    let a = node.must_post("/v1/tasks", &body);
    assert_eq!(a.status, 201, "{}", a.body);
    node.wait_for_task_end(a.body["id"].as_u64().unwrap_or(0), Duration::from_secs(60))
}

fn sh(script: &str) -> Value {
    json!({ "exec": { "argv": ["sh", "-c", script] }, "retry": { "max_attempts": 1 } })
}

fn stdout(t: &Value) -> String {
    t["result"]["stdout"].as_str().unwrap_or("").to_string()
}

/// A node with process isolation and exec tasks allowed, whose data dir holds the secrets an
/// authenticated node makes (a first start with auth on), started again with auth off.
fn exec_node(dir: &Path, extra: &[&str]) -> Node {
    let first = Node::must_start(
        dir,
        &["executor.isolation=\"process\"", "auth.enabled=true"],
    );
    drop(first);
    let mut sets = vec![
        "executor.isolation=\"process\"",
        "executor.allow_exec_without_container=true",
    ];
    sets.extend_from_slice(extra);
    Node::must_start(dir, &sets)
}

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
    // ?view=full shows what was submitted, but never an env value.
    let full = node.must_get(&format!("/v1/tasks/{}?view=full", t["id"]));
    assert_eq!(full.status, 200, "{}", full.body);
    assert_eq!(
        full.body["submitted"]["exec"]["argv"][2], "echo hello $NAME; echo oops >&2",
        "{}",
        full.body
    );
    assert_eq!(
        full.body["submitted"]["exec"]["env"]["NAME"], "(hidden)",
        "{}",
        full.body
    );
    assert!(
        !full.body.to_string().contains("\"edge\""),
        "an env value shows: {}",
        full.body
    );
    assert!(node
        .must_get(&format!("/v1/tasks/{}", t["id"]))
        .body
        .get("submitted")
        .is_none());
    assert_eq!(
        node.must_get(&format!("/v1/tasks/{}?view=all", t["id"]))
            .status,
        400
    );
    let k = node.must_post(
        "/v1/tasks",
        &json!({ "kernel": "stats", "input": { "values": [2, 4] } }),
    );
    let kid = k.body["id"].as_u64().unwrap_or(0);
    let full = node.must_get(&format!("/v1/tasks/{kid}?view=full"));
    assert_eq!(full.body["submitted"]["kernel"], "stats", "{}", full.body);
    assert_eq!(
        full.body["submitted"]["input"]["values"],
        json!([2, 4]),
        "{}",
        full.body
    );

    // A failing command is retried by its policy, then dead-lettered (API.md).
    let t = run(
        json!({ "exec": { "argv": ["sh", "-c", "echo partial; exit 7"] },
                        "retry": { "max_attempts": 3, "backoff_ms": 10 } }),
    );
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "nonzero_exit");
    assert_eq!(
        t["attempt"], 3,
        "a failing command gets its 3 attempts: {t}"
    );
    let dlq = node.must_get("/v1/dlq").body;
    assert!(
        dlq.to_string().contains(&format!("\"id\":{}", t["id"])),
        "task {} is not in the DLQ: {dlq}",
        t["id"]
    );
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

#[test]
fn process_tasks_run_as_an_unprivileged_user_without_capabilities_under_seccomp() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = exec_node(dir.path(), &[]);
    assert!(
        node.log().contains("executor: process (") && node.log().contains("seccomp"),
        "the node says what process isolation provides:\n{}",
        node.log()
    );

    let t = run(
        &node,
        sh("id -u; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; pwd"),
    );
    assert_eq!(t["status"], "succeeded", "{t}");
    let out = stdout(&t);
    let uid: u32 = out.lines().next().unwrap_or("").trim().parse().unwrap_or(0);
    assert!(uid != 0, "the task runs as root: {t}");
    for want in [
        "CapEff:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(out.contains(want), "missing {want:?}: {t}");
    }
    assert!(out.ends_with("/\n"), "cwd is /: {t}");

    // The node's secrets are out of reach.
    let data = dir.path().join("data");
    for file in ["cluster.secret", "jwt.secret", "admin.key"] {
        let path = data.join(file);
        assert!(
            path.is_file(),
            "{} should exist for this test",
            path.display()
        );
        let t = run(
            &node,
            sh(&format!("cat {} 2>&1; echo rc=$?", path.display())),
        );
        let out = stdout(&t);
        assert!(
            out.contains("Permission denied") && !out.contains("rc=0"),
            "the task read {file}: {t}"
        );
    }

    // No namespaces, no mounts: unshare and mount fail.
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap_or_else(|e| panic!("{e}"));
    let t = run(
        &node,
        sh(&format!(
            "unshare -n true 2>&1; echo net=$?; unshare -U true 2>&1; echo user=$?; \
             mount -t tmpfs none {m} 2>&1; r=$?; umount {m} 2>/dev/null; echo mount=$r",
            m = mnt.display()
        )),
    );
    let out = stdout(&t);
    for refused in ["net=", "user=", "mount="] {
        assert!(
            out.contains(refused) && !out.contains(&format!("{refused}0")),
            "{refused} succeeded: {t}"
        );
    }

    // clone with namespace flags is refused (EPERM), clone3 answers ENOSYS, a fork works.
    let t = run(
        &node,
        json!({ "exec": { "argv": ["/usr/bin/python3", "-c", CLONE_PROBE] }, "retry": { "max_attempts": 1 } }),
    );
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(
        stdout(&t).trim(),
        "clone=Operation not permitted clone3=Function not implemented fork=ok",
        "{t}"
    );
}

#[test]
fn nothing_a_process_task_starts_outlives_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = exec_node(dir.path(), &[]);
    // Markers of this run only (a process left by another run must not count).
    let (m1, m2) = (
        format!("1000.{}1", std::process::id()),
        format!("1000.{}3", std::process::id()),
    );
    // A new session escapes the process group; the attempt's cgroup still holds it.
    let t = run(
        &node,
        sh(&format!("setsid sleep {m1} >/dev/null 2>&1 & echo started")),
    );
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(stdout(&t), "started\n", "{t}");
    wait_until(
        "the setsid child of an ended task to be gone",
        Duration::from_secs(10),
        || no_process_matches(&format!("sleep {m1}")),
    );
    // The same, holding the task's stdout, and past the task's timeout.
    let mut slow = sh(&format!("setsid sleep {m2} & sleep 60"));
    slow["timeout_ms"] = json!(500);
    let t = run(&node, slow);
    assert_eq!(t["status"], "timed_out", "{t}");
    wait_until(
        "the setsid child of a timed-out task to be gone",
        Duration::from_secs(10),
        || no_process_matches(&format!("sleep {m2}")),
    );
    // No attempt cgroup is left behind.
    let parent = node
        .cgroup_parent()
        .unwrap_or_else(|| panic!("no cgroup parent in the log:\n{}", node.log()));
    wait_until(
        "the attempts' cgroups to be removed",
        Duration::from_secs(10),
        || {
            let left: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|root| {
                    std::fs::read_dir(root.path().join(parent.trim_start_matches('/'))).ok()
                })
                .flat_map(|d| d.flatten().map(|e| e.path().display().to_string()))
                .filter(|p| p.contains("/p-t"))
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
}

#[test]
fn process_tasks_are_held_to_their_disk_and_result_limits() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = exec_node(dir.path(), &["executor.max_result_mb=1"]);
    // A file over resources.disk_mb: killed by RLIMIT_FSIZE, failed disk_limit.
    let file = format!("/tmp/edgerun-t60-{}", std::process::id());
    let mut big = sh(&format!("dd if=/dev/zero of={file} bs=1M count=100 2>&1"));
    big["resources"] = json!({ "disk_mb": 8 });
    let t = run(&node, big);
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&file);
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "disk_limit", "{t}");
    assert!(size <= 8 * 1024 * 1024, "{size} bytes written: {t}");

    // A kernel result over executor.max_result_mb (1 MiB): failed, not retried.
    let t = run(&node, big_result_task());
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "result_too_large", "{t}");
    assert_eq!(t["attempt"], 1, "not retried: {t}");
    let msg = t["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("executor.max_result_mb"), "{t}");
}
