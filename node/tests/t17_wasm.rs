//! WebAssembly tasks on real nodes: the example modules (examples/wasm, C compiled here with
//! Debian's clang for wasm32-wasi) uploaded, run across a 3-node cluster, and modules that
//! loop, hog memory or reach for files stopped with the right error while the node stays up.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{wait_until, Cluster, Node, FAST_FAILOVER};
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Build the examples (examples/wasm/build.sh) into `out`; the module bytes by name.
fn examples(out: &Path) -> (Vec<u8>, Vec<u8>) {
    let o = std::process::Command::new(repo().join("examples/wasm/build.sh"))
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("examples/wasm/build.sh: {e}"));
    assert!(
        o.status.success(),
        "building the examples (run ./scripts/setup): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let read = |m: &str| std::fs::read(out.join(m)).unwrap_or_else(|e| panic!("{m}: {e}"));
    (read("anomaly.wasm"), read("scale.wasm"))
}

/// A C module compiled for the test.
fn c_module(dir: &Path, name: &str, src: &str) -> Vec<u8> {
    let c = dir.join(format!("{name}.c"));
    let out = dir.join(format!("{name}.wasm"));
    std::fs::write(&c, src).unwrap_or_else(|e| panic!("{e}"));
    let o = std::process::Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-Wl,--strip-all", "-o"])
        .arg(&out)
        .arg(&c)
        .output()
        .unwrap_or_else(|e| panic!("clang (run ./scripts/setup): {e}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(&out).unwrap_or_else(|e| panic!("{e}"))
}

fn upload(node: &Node, name: &str, bytes: &[u8]) -> common::Answer {
    node.try_post_raw(&format!("/v1/modules?name={name}"), bytes)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// What scale.wasm answers for `values` with factor 1.8 and offset 32.
fn scaled(values: &[f64]) -> Vec<f64> {
    values.iter().map(|v| v * 1.8 + 32.0).collect()
}

#[test]
fn uploaded_modules_run_as_tasks_across_a_cluster_and_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (anomaly, scale) = examples(&dir.path().join("wasm"));
    let mut cluster = Cluster::must_start_with(dir.path(), 3, FAST_FAILOVER, |id| {
        vec![format!("node.labels={{ name = \"n{id}\" }}")]
    });
    let leader = cluster.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let first = cluster.node(1);

    // Uploads: checked, content-addressed; the same bytes again are the same module.
    let a = upload(first, "scale", &scale);
    assert_eq!(a.status, 201, "{}", a.body);
    let scale_id = a.body["id"].as_str().unwrap_or("").to_string();
    assert!(
        scale_id.starts_with("sha256:") && scale_id.len() == 71,
        "{}",
        a.body
    );
    assert_eq!(a.body["size"].as_u64(), Some(scale.len() as u64));
    let again = upload(cluster.node(2), "scale", &scale);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["id"], a.body["id"]);
    let b = upload(cluster.node(3), "anomaly", &anomaly);
    assert_eq!(b.status, 201, "{}", b.body);
    // Not wasm, not a command, no name: refused, nothing stored.
    let not = upload(first, "sh", b"#!/bin/sh\necho hi\n");
    assert_eq!(not.status, 400, "{}", not.body);
    assert_eq!(not.body["error"]["code"], "invalid_module");
    let no_name = first
        .try_post_raw("/v1/modules", &scale)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(no_name.status, 400, "{}", no_name.body);
    let list = first.must_get("/v1/modules");
    assert_eq!(
        list.body["modules"].as_array().map(Vec::len),
        Some(2),
        "{}",
        list.body
    );
    let by_name = first.must_get("/v1/modules/anomaly");
    assert_eq!(by_name.body["id"], b.body["id"]);

    // 1,000 tasks by name, in batches through every node: each result right.
    let mut want = Vec::new();
    let mut ids = Vec::new();
    for batch in 0..10u64 {
        let node = cluster.node(batch % 3 + 1);
        let tasks: Vec<Value> = (0..100u64)
            .map(|i| {
                let n = batch * 100 + i;
                let values: Vec<f64> = (0..5).map(|k| (n + k) as f64 * 0.5).collect();
                want.push(scaled(&values));
                json!({ "wasm": { "module": "scale", "args": ["1.8", "32"] },
                        "input": { "values": values }, "timeout_ms": 10000 })
            })
            .collect();
        ids.extend(node.must_submit_batch(&tasks));
    }
    let mut nodes_used = std::collections::BTreeSet::new();
    for (id, want) in ids.iter().zip(&want) {
        let t = cluster
            .node(leader)
            .wait_for_task_end(*id, Duration::from_secs(120));
        assert_eq!(t["status"], "succeeded", "{t}");
        assert_eq!(t["isolation"], "wasm", "{t}");
        let got: Vec<f64> = t["result"]["values"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        assert_eq!(&got, want, "task {id}: {t}");
        nodes_used.insert(t["node"].as_u64().unwrap_or(0));
    }
    assert_eq!(nodes_used.len(), 3, "ran on {nodes_used:?}");
    // The anomaly detector finds the spike.
    let mut values: Vec<f64> = (0..40).map(|i| 20.0 + (i % 3) as f64 * 0.1).collect();
    values[30] = 35.0;
    let p = first.must_post(
        "/v1/tasks",
        &json!({ "wasm": { "module": b.body["id"] }, "input": { "values": values, "window": 8, "threshold": 4.0 } }),
    );
    assert_eq!(p.status, 201, "{}", p.body);
    let t = first.wait_for_task_end(p.body["id"].as_u64().unwrap_or(0), Duration::from_secs(60));
    assert_eq!(t["result"]["count"], 40, "{t}");
    assert_eq!(t["result"]["anomalies"][0]["index"], 30, "{t}");
    assert_eq!(
        t["result"]["anomalies"].as_array().map(Vec::len),
        Some(1),
        "{t}"
    );

    // A module is deleted by id, not while a job uses it; an unknown module is a 400.
    // A cron job runs the module too: a slot fires a wasm task that succeeds.
    let job = first.must_post(
        "/v1/jobs",
        &json!({ "name": "every-second", "schedule": "* * * * * *",
                 "task": { "wasm": { "module": "anomaly" }, "input": { "values": [1, 2, 3] } } }),
    );
    assert_eq!(job.status, 201, "{}", job.body);
    let job_id = job.body["id"].as_u64().unwrap_or(0);
    let fired = wait_until("the job to fire", Duration::from_secs(30), || {
        let j = first.must_get(&format!("/v1/jobs/{job_id}"));
        j.body["last_task"].as_u64().ok_or(j.body.to_string())
    });
    let t = first.wait_for_task_end(fired, Duration::from_secs(60));
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(t["isolation"], "wasm", "{t}");
    assert_eq!(t["result"]["count"], 3, "{t}");
    // ... and holds it: not deleted while the job exists.
    let anomaly_id = b.body["id"].as_str().unwrap_or("");
    let busy = first.agent_delete(&format!("/v1/modules/{anomaly_id}"));
    assert_eq!(busy.status, 409, "{}", busy.body);
    assert_eq!(busy.body["error"]["code"], "module_in_use");
    let unknown = first.must_post(
        "/v1/tasks",
        &json!({ "wasm": { "module": "nope" }, "input": {} }),
    );
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert_eq!(unknown.body["error"]["code"], "unknown_module");

    // Upload through a node and kill it at once: the others still run the module.
    let fresh = c_module(
        dir.path(),
        "hello",
        "#include <stdio.h>\nint main(void) { puts(\"{\\\"hello\\\":\\\"wasm\\\"}\"); return 0; }",
    );
    let victim = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap_or(1);
    let up = upload(cluster.node(victim), "hello", &fresh);
    assert_eq!(up.status, 201, "{}", up.body);
    cluster.node_mut(victim).kill9();
    let alive: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != victim).collect();
    let leader = cluster.wait_for_leader(&alive, Duration::from_secs(30));
    for n in &alive {
        let p = cluster.node(leader).must_post(
            "/v1/tasks",
            &json!({ "wasm": { "module": "hello" }, "constraints": { "labels": { "name": format!("n{n}") } } }),
        );
        assert_eq!(p.status, 201, "{}", p.body);
        let t = cluster
            .node(leader)
            .wait_for_task_end(p.body["id"].as_u64().unwrap_or(0), Duration::from_secs(60));
        assert_eq!(t["status"], "succeeded", "on node {n}: {t}");
        assert_eq!(t["result"]["hello"], "wasm", "{t}");
        assert_eq!(t["node"].as_u64(), Some(*n));
    }
}

#[test]
fn loops_memory_hogs_and_file_access_are_stopped_and_the_node_goes_on() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(&dir.path().join("n1"), &[]);
    let spin = c_module(
        dir.path(),
        "spin",
        "int main(void) { volatile unsigned long x = 0; for (;;) x++; return 0; }",
    );
    let hog = c_module(
        dir.path(),
        "hog",
        r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static char *keep[4096];
int main(void) {
  size_t got = 0;
  for (; got < 4096; got++) {
    char *p = malloc(1 << 20);
    if (!p) break;
    memset(p, (int)got, 1 << 20);
    keep[got] = p;
  }
  long sum = 0;
  for (size_t i = 0; i < got; i++) sum += keep[i][i];
  fprintf(stderr, "malloc failed after %zu MiB (%ld)\n", got, sum);
  return 1;
}
"#,
    );
    let peek = c_module(
        dir.path(),
        "peek",
        r#"
#include <stdio.h>
#include <errno.h>
#include <string.h>
int main(void) {
  FILE *f = fopen("/etc/passwd", "r");
  char line[256] = "";
  if (f && fgets(line, sizeof line, f)) { printf("{\"read\":\"%s\"}", strtok(line, ":")); return 0; }
  printf("{\"opened\":%s,\"error\":\"%s\"}", f ? "true" : "false", strerror(errno));
  return 0;
}
"#,
    );
    for (name, bytes) in [("spin", &spin), ("hog", &hog), ("peek", &peek)] {
        let a = upload(&node, name, bytes);
        assert_eq!(a.status, 201, "{name}: {}", a.body);
    }
    let run = |body: Value| {
        let p = node.must_post("/v1/tasks", &body);
        assert_eq!(p.status, 201, "{}", p.body);
        node.wait_for_task_end(p.body["id"].as_u64().unwrap_or(0), Duration::from_secs(60))
    };
    // A loop is stopped at its timeout, and retried by its policy (2 attempts here).
    let t = run(json!({ "wasm": { "module": "spin" }, "timeout_ms": 300,
                        "retry": { "max_attempts": 2, "backoff_ms": 10 } }));
    assert_eq!(t["status"], "timed_out", "{t}");
    assert_eq!(t["attempt"], 2, "{t}");
    assert_eq!(t["isolation"], "wasm", "{t}");
    // Memory past resources.memory_mb: wasm_oom, with what the module said.
    let t = run(
        json!({ "wasm": { "module": "hog" }, "resources": { "memory_mb": 16 },
                        "retry": { "max_attempts": 1 } }),
    );
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "wasm_oom", "{t}");
    assert!(
        t["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("malloc failed after"),
        "{t}"
    );
    // A file of the host: WASI has no directory to open it from.
    let t = run(json!({ "wasm": { "module": "peek" } }));
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(t["result"]["opened"], false, "{t}");
    assert!(t["result"].get("read").is_none(), "{t}");
    // The node is fine and runs the next task.
    let h = node.must_get("/healthz");
    assert_eq!(h.status, 200, "{}", h.body);
    let t = run(json!({ "kernel": "stats", "input": { "values": [1, 2, 3] } }));
    assert_eq!(t["status"], "succeeded", "{t}");
    // An upload over executor.max_module_bytes is refused with 413.
    let big = node
        .try_post_raw("/v1/modules?name=big", &vec![0u8; 9 * 1024 * 1024])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(big.status, 413, "{}", big.body);
    // The compiled modules are cached on disk, private to the node.
    let cache = dir.path().join("n1/data/wasm-cache");
    let found = wait_until(
        "compiled modules in the cache",
        Duration::from_secs(5),
        || {
            let n = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
            if n >= 3 {
                Ok(n)
            } else {
                Err(format!("{n} in {}", cache.display()))
            }
        },
    );
    assert!(found >= 3);
}
