//! Container isolation (youki's libcontainer): limits, namespaces, read-only root, seccomp,
//! timeouts, and nothing left behind. Needs root and cgroups; where the node cannot make
//! containers these tests say so and check that it fell back to process isolation.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{big_result_task, no_process_matches, wait_until, Node, CLONE_PROBE};
use serde_json::{json, Value};

/// A node with container isolation, or `None` (after checking the fallback) if this machine
/// cannot make containers.
#[track_caller]
fn container_node(dir: &Path, extra: &[&str]) -> Option<Node> {
    let mut sets = vec!["executor.isolation=\"auto\""];
    sets.extend_from_slice(extra);
    let node = Node::must_start(dir, &sets);
    if node.log().contains("executor: container") {
        return Some(node);
    }
    assert!(
        node.log()
            .contains("because containers cannot be made here"),
        "auto must say why it fell back:\n{}",
        node.log()
    );
    let caller = std::panic::Location::caller();
    common::skipped(
        &format!("t70_containers ({}:{})", caller.file(), caller.line()),
        "this machine cannot make containers (not root or no cgroups); only the process fallback was checked",
    );
    None
}

fn run(node: &Node, body: Value) -> Value {
    let a = node.must_post("/v1/tasks", &body);
    assert_eq!(a.status, 201, "{}", a.body);
    node.wait_for_task_end(a.body["id"].as_u64().unwrap_or(0), Duration::from_secs(60))
}

fn sh(script: &str) -> Value {
    json!({ "exec": { "argv": ["sh", "-c", script] }, "retry": { "max_attempts": 1 } })
}

#[test]
fn a_container_task_is_isolated() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let Some(node) = container_node(dir.path(), &[]) else {
        return;
    };

    let t = run(
        &node,
        json!({ "kernel": "stats", "input": { "values": [1, 2, 3] } }),
    );
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(t["isolation"], "container");

    // Only its own processes: the shell and ps itself.
    let t = run(&node, sh("ps -e -o pid= | wc -l"));
    assert_eq!(t["status"], "succeeded", "{t}");
    let n: u32 = t["result"]["stdout"]
        .as_str()
        .unwrap_or("")
        .trim()
        .parse()
        .unwrap_or(99);
    assert!(n <= 3, "the task sees {n} processes: {t}");

    // No network: only the loopback device exists.
    let t = run(&node, sh("grep : /proc/net/dev | cut -d: -f1 | tr -d ' '"));
    assert_eq!(t["result"]["stdout"], "lo\n", "{t}");

    // The root is read-only; /work is writable.
    let t = run(
        &node,
        sh("touch /usr/x 2>&1; touch /x 2>&1; touch /work/ok && echo work-ok"),
    );
    let out = t["result"]["stdout"].as_str().unwrap_or("").to_string();
    assert!(
        out.contains("Read-only file system") && out.contains("work-ok"),
        "{t}"
    );

    // It cannot reach or raise its cgroup limits: no cgroupfs inside, and mounting one fails.
    let t = run(&node, sh("ls /sys/fs/cgroup 2>&1; mkdir -p /tmp/cg; mount -t cgroup -o memory none /tmp/cg 2>&1; echo rc=$?"));
    let out = t["result"]["stdout"].as_str().unwrap_or("").to_string();
    assert!(out.contains("No such file") && !out.contains("rc=0"), "{t}");

    // A syscall the seccomp profile blocks fails (unshare needs no capability, only seccomp stops it).
    let t = run(&node, sh("unshare -U true 2>&1; echo rc=$?"));
    let out = t["result"]["stdout"].as_str().unwrap_or("").to_string();
    assert!(
        out.contains("Operation not permitted") && !out.contains("rc=0"),
        "{t}"
    );
}

#[test]
fn memory_pids_and_time_limits_hold() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let Some(node) = container_node(dir.path(), &["executor.default_pids=32"]) else {
        return;
    };

    // An allocation bomb over its memory limit is killed: failed, oom_killed.
    let mut bomb = sh("head -c 400000000 /dev/zero | tail");
    bomb["resources"] = json!({ "memory_mb": 32 });
    let t = run(&node, bomb);
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "oom_killed", "{t}");

    // A fork bomb stops at the pids limit.
    let t = run(&node, sh("i=0; while [ $i -lt 100 ]; do sleep 5 & i=$((i+1)); done 2>&1; echo started; kill $(jobs -p) 2>/dev/null; true"));
    let out = format!("{}{}", t["result"]["stdout"], t["result"]["stderr"]);
    assert!(
        out.contains("fork") || out.contains("Resource temporarily unavailable"),
        "the fork bomb was not stopped: {t}"
    );

    // A timeout kills the container and everything in it.
    let mut slow = sh("sleep 43.25 & sleep 44.25");
    slow["timeout_ms"] = json!(500);
    let t = run(&node, slow);
    assert_eq!(t["status"], "timed_out", "{t}");
    wait_until(
        "the timed-out container's processes to be gone",
        Duration::from_secs(10),
        || no_process_matches("sleep 4[34].25"),
    );
}

/// The cgroup directories of this node's containers that still exist.
fn cgroups_left(node: &Node) -> Vec<String> {
    let Some(parent) = node.cgroup_parent() else {
        return vec!["(no cgroup parent in the log)".into()];
    };
    let rel = parent.trim_start_matches('/');
    let mut left = Vec::new();
    for root in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(children) = std::fs::read_dir(root.path().join(rel)) {
            left.extend(
                children
                    .flatten()
                    .filter(|c| c.path().is_dir())
                    .map(|c| c.path().display().to_string()),
            );
        }
    }
    left
}

#[test]
fn two_hundred_container_tasks_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let Some(node) = container_node(dir.path(), &[]) else {
        return;
    };
    let batch: Vec<Value> = (0..200)
        .map(|i| json!({ "kernel": "stats", "input": { "values": [i, i + 1] } }))
        .collect();
    let ids = node.must_submit_batch(&batch);
    for id in &ids {
        let t = node.wait_for_task_end(*id, Duration::from_secs(120));
        assert_eq!(t["status"], "succeeded", "{t}");
        assert_eq!(t["isolation"], "container");
    }
    let sandbox = dir.path().join("data").join("sandbox");
    let left = |sub: &str| {
        std::fs::read_dir(sandbox.join(sub))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    wait_until(
        "no container state, bundle, cgroup or mount left",
        Duration::from_secs(20),
        || {
            let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
            let ours = mounts
                .lines()
                .filter(|l| l.contains(&*sandbox.to_string_lossy()))
                .count();
            let cgroups = cgroups_left(&node);
            match (left("state"), left("bundles"), ours) {
                (0, 0, 0) if cgroups.is_empty() => Ok(()),
                other => Err(format!(
                    "state/bundles/mounts = {other:?}, cgroups = {cgroups:?}"
                )),
            }
        },
    );
}

#[test]
fn the_network_is_opt_in_per_task_and_per_node() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let Some(node) = container_node(dir.path(), &[]) else {
        return;
    };
    let mut ask = sh("grep -c : /proc/net/dev");
    ask["resources"] = json!({ "network": true });
    let t = run(&node, ask.clone());
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "network_not_allowed", "{t}");
    drop(node);

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let Some(node) = container_node(dir.path(), &["executor.allow_network=true"]) else {
        return;
    };
    let t = run(&node, ask);
    assert_eq!(t["status"], "succeeded", "{t}");
    let devices: u32 = t["result"]["stdout"]
        .as_str()
        .unwrap_or("")
        .trim()
        .parse()
        .unwrap_or(0);
    let host: u32 = std::fs::read_to_string("/proc/net/dev")
        .map(|s| s.lines().filter(|l| l.contains(':')).count() as u32)
        .unwrap_or(0);
    assert_eq!(devices, host, "the task shares the host's network: {t}");
    // A task that does not ask still gets only loopback on this node.
    let t = run(&node, sh("grep : /proc/net/dev | cut -d: -f1 | tr -d ' '"));
    assert_eq!(t["result"]["stdout"], "lo\n", "{t}");
}

#[test]
fn a_container_task_cannot_make_namespaces_with_clone() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let Some(node) = container_node(dir.path(), &[]) else {
        return;
    };
    let t = run(
        &node,
        json!({ "exec": { "argv": ["/usr/bin/python3", "-c", CLONE_PROBE] }, "retry": { "max_attempts": 1 } }),
    );
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(
        t["result"]["stdout"].as_str().unwrap_or("").trim(),
        "clone=Operation not permitted clone3=Function not implemented fork=ok",
        "{t}"
    );
}

/// Bytes under `dir`, walking it (files only).
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Run `body` while watching how much `bundles` holds; the task and the most seen.
fn run_watching(node: &Node, body: Value, bundles: &Path) -> (Value, u64) {
    let a = node.must_post("/v1/tasks", &body);
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["id"].as_u64().unwrap_or(0);
    let mut most = 0;
    let t = wait_until("the task to end", Duration::from_secs(120), || {
        most = most.max(du(bundles));
        let t = node.must_get(&format!("/v1/tasks/{id}")).body;
        match t["status"].as_str() {
            Some("succeeded" | "failed" | "timed_out" | "cancelled") => Ok(t),
            _ => Err(format!("{t}")),
        }
    });
    (t, most)
}

#[test]
fn container_tasks_cannot_fill_the_nodes_disk() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let Some(node) = container_node(dir.path(), &[]) else {
        return;
    };
    let bundles = dir.path().join("data").join("sandbox").join("bundles");

    // Writing past resources.disk_mb in /work: failed disk_limit, nothing on the node's disk.
    let mut big = sh("dd if=/dev/zero of=/work/big bs=1M count=600");
    big["resources"] = json!({ "disk_mb": 64, "memory_mb": 256 });
    let (t, most) = run_watching(&node, big, &bundles);
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "disk_limit", "{t}");
    assert!(most < 1024 * 1024, "the bundles held {most} bytes: {t}");

    // Many small files fill the tmpfs: the same.
    let mut many = sh("i=0; while [ $i -lt 100 ]; do dd if=/dev/zero of=/work/f$i bs=1M count=1 2>/dev/null || { echo full >&2; dd if=/dev/zero of=/work/g bs=1M count=1; exit 1; }; i=$((i+1)); done; echo fits");
    many["resources"] = json!({ "disk_mb": 16 });
    let (t, most) = run_watching(&node, many, &bundles);
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "disk_limit", "{t}");
    assert!(most < 1024 * 1024, "the bundles held {most} bytes: {t}");

    // 200 MB on stdout: 64 KiB kept, and never more than that on the node's disk.
    let (t, most) = run_watching(&node, sh("yes | head -c 200000000; sleep 2"), &bundles);
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(t["result"]["truncated"], true, "{t}");
    assert_eq!(
        t["result"]["stdout"].as_str().map(|s| s.len()),
        Some(64 * 1024),
        "{t}"
    );
    assert!(most < 1024 * 1024, "the bundles held {most} bytes: {t}");
}

#[test]
fn a_container_kernel_result_over_the_cap_fails() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let Some(node) = container_node(dir.path(), &["executor.max_result_mb=1"]) else {
        return;
    };
    let t = run(&node, big_result_task());
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "result_too_large", "{t}");
    assert_eq!(t["attempt"], 1, "not retried: {t}");
    // One that fits still works.
    let t = run(
        &node,
        json!({ "kernel": "stats", "input": { "values": [1, 2, 3] } }),
    );
    assert_eq!(t["status"], "succeeded", "{t}");
}
