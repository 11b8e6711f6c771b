//! Tasks end to end through the real binary: a batch of 1,000 `stats` tasks and 100 `matmul`
//! tasks one by one, every result checked against a Rust reference.

mod common;

use std::time::Duration;

use common::{Node, Rng};
use serde_json::{json, Value};

fn reference_stats(v: &[f64]) -> [f64; 8] {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        let rank = p * (s.len() - 1) as f64;
        let lo = rank.floor() as usize;
        let hi = (lo + 1).min(s.len() - 1);
        s[lo] + (s[hi] - s[lo]) * (rank - lo as f64)
    };
    [
        n,
        mean,
        s[0],
        s[s.len() - 1],
        var.sqrt(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
    ]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn check_stats(task: &Value, input: &[f64]) {
    assert_eq!(task["status"], "succeeded", "{task}");
    let r = &task["result"];
    let want = reference_stats(input);
    let got: Vec<f64> = ["count", "mean", "min", "max", "std", "p50", "p90", "p99"]
        .iter()
        .map(|k| r[k].as_f64().unwrap_or(f64::NAN))
        .collect();
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        assert!(
            close(*g, *w),
            "task {} field {i}: got {g}, want {w}",
            task["id"]
        );
    }
}

fn matrix(rng: &mut Rng, rows: usize, cols: usize) -> Vec<Vec<f32>> {
    (0..rows)
        .map(|_| {
            (0..cols)
                .map(|_| (rng.next_u64() % 21) as f32 - 10.0)
                .collect()
        })
        .collect()
}

fn reference_matmul(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let (n, k, m) = (a.len(), b.len(), b[0].len());
    (0..n)
        .map(|i| {
            (0..m)
                .map(|j| (0..k).map(|x| a[i][x] * b[x][j]).sum())
                .collect()
        })
        .collect()
}

#[test]
fn a_batch_of_1000_stats_and_100_matmuls_all_succeed_with_correct_results() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(dir.path(), &[]);
    let mut rng = Rng(0x5eed);

    // 1,000 stats tasks in one batch call
    let inputs: Vec<Vec<f64>> = (0..1000)
        .map(|i| (0..(1 + i % 200)).map(|_| rng.value()).collect())
        .collect();
    // A generous timeout: one attempt each is asserted below, and on a starved machine (a
    // loaded CI host) an attempt may take longer than the default 30 s without being wrong.
    let tasks: Vec<Value> = inputs
        .iter()
        .map(|v| json!({ "kernel": "stats", "input": { "values": v }, "timeout_ms": 600_000 }))
        .collect();
    let ids = node.must_submit_batch(&tasks);
    assert_eq!(ids.len(), 1000);
    let mut sorted = ids.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 1000, "ids are unique");

    // 100 matmul tasks, one call each, various shapes
    let mut mats = Vec::new();
    for i in 0..100 {
        let (n, k, m) = (1 + i % 7, 1 + (i * 3) % 11, 1 + (i * 5) % 9);
        let (x, y) = (matrix(&mut rng, n, k), matrix(&mut rng, k, m));
        let a = node.must_post(
            "/v1/tasks",
            &json!({ "kernel": "matmul", "input": { "a": x, "b": y }, "priority": 1 }),
        );
        assert_eq!(a.status, 201, "{}", a.body);
        assert_eq!(a.body["kernel"], "matmul");
        let id = a.body["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no id: {}", a.body));
        mats.push((id, reference_matmul(&x, &y)));
    }

    for (id, input) in ids.iter().zip(&inputs) {
        let t = node.wait_for_task_end(*id, Duration::from_secs(120));
        check_stats(&t, input);
        // auto: containers where the node can make them (root, cgroups), else processes
        assert!(
            t["isolation"] == "container" || t["isolation"] == "process",
            "{t}"
        );
        assert_eq!(t["attempt"], 1, "{t}\n{}", node.log());
        assert!(t["finished_at"].as_u64() >= t["created_at"].as_u64());
    }
    for (id, want) in &mats {
        let t = node.wait_for_task_end(*id, Duration::from_secs(60));
        assert_eq!(t["status"], "succeeded", "{t}");
        let got: Vec<Vec<f32>> = serde_json::from_value(t["result"]["c"].clone())
            .unwrap_or_else(|e| panic!("task {id}: {e}: {t}"));
        assert_eq!(&got, want, "task {id}");
    }
    let all = node.must_list_all();
    assert_eq!(all.len(), 1100);
    assert!(all.iter().all(|t| t["status"] == "succeeded"));
    // pages are newest first
    assert!(all
        .windows(2)
        .all(|w| w[0]["id"].as_u64() > w[1]["id"].as_u64()));
}

#[test]
fn idempotency_key_cancel_and_wait_behave_as_documented() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(dir.path(), &["executor.slots=1"]);
    let t = json!({ "kernel": "stats", "input": { "values": [1, 2, 3] }, "idempotency_key": "order-42" });
    let first = node.must_post("/v1/tasks", &t);
    assert_eq!(first.status, 201, "{}", first.body);
    let again = node.must_post("/v1/tasks", &t);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["id"], first.body["id"]);
    let id = first.body["id"].as_u64().unwrap_or(0);
    let done = node.wait_for_task_end(id, Duration::from_secs(30));
    assert_eq!(done["result"]["mean"], 2.0);
    // cancelling an ended task is a conflict and changes nothing
    let c = node.must_post(&format!("/v1/tasks/{id}/cancel"), &json!({}));
    assert_eq!(c.status, 409, "{}", c.body);
    assert_eq!(c.body["error"]["code"], "already_ended");
    assert_eq!(
        node.must_get(&format!("/v1/tasks/{id}")).body["status"],
        "succeeded"
    );
    // a task that cannot be placed (no edge node) waits pending; cancel ends it
    let p = node.must_post("/v1/tasks", &json!({ "kernel": "stats", "input": { "values": [1] }, "constraints": { "tier": "edge" } }));
    let pid = p.body["id"].as_u64().unwrap_or(0);
    let w = node.must_get(&format!("/v1/tasks/{pid}/wait?timeout=300ms"));
    assert_eq!(w.status, 200);
    assert_eq!(
        w.body["status"], "pending",
        "wait returns the task as it is at the timeout"
    );
    let c = node.must_post(&format!("/v1/tasks/{pid}/cancel"), &json!({}));
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.body["status"], "cancelled");
    let kernels = node.must_get("/v1/kernels");
    let names: Vec<&str> = kernels.body["kernels"]
        .as_array()
        .map(|v| v.iter().filter_map(|k| k["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        vec![
            "stats",
            "matmul",
            "conv2d",
            "sobel",
            "fft",
            "window_agg",
            "sha256",
            "sort"
        ]
    );
    assert!(kernels.body["kernels"].as_array().is_some_and(|k| k
        .iter()
        .all(|k| k["input_schema"].is_object() && k["version"] == 1)));
    let cluster = node.must_get("/v1/cluster");
    assert_eq!(cluster.body["leader"], 1);
    assert_eq!(cluster.body["members"][0]["role"], "voter");
}

#[test]
fn every_kernel_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(dir.path(), &[]);
    let cases = [
        (
            json!({ "kernel": "sha256", "input": { "data_b64": "YWJj" } }),
            "/hex",
            json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ),
        (
            json!({ "kernel": "sort", "input": { "values": [3, 1, 2] } }),
            "/values",
            json!([1.0, 2.0, 3.0]),
        ),
        (
            json!({ "kernel": "fft", "input": { "values": [1, 1, 1, 1] } }),
            "/magnitude",
            json!([4.0, 0.0, 0.0]),
        ),
        (
            json!({ "kernel": "conv2d", "input": { "image": [[1, 2], [3, 4]], "kernel": [[0, 0, 0], [0, 2, 0], [0, 0, 0]] } }),
            "/image",
            json!([[2.0, 4.0], [6.0, 8.0]]),
        ),
        (
            json!({ "kernel": "sobel", "input": { "image": [[0, 0, 0], [0, 0, 0], [0, 0, 0]] } }),
            "/image",
            json!([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
        ),
        (
            json!({ "kernel": "window_agg", "input": { "points": [{ "t": 0, "v": 1 }, { "t": 5, "v": 3 }, { "t": 12, "v": 7 }], "window_ms": 10, "aggs": ["count", "mean"] } }),
            "/windows",
            json!([{ "start": 0, "end": 10, "count": 2, "mean": 2.0 }, { "start": 10, "end": 20, "count": 1, "mean": 7.0 }]),
        ),
    ];
    for (task, pointer, want) in cases {
        let a = node.must_post("/v1/tasks", &task);
        assert_eq!(a.status, 201, "{task}: {}", a.body);
        let t = node.wait_for_task_end(a.body["id"].as_u64().unwrap_or(0), Duration::from_secs(30));
        assert_eq!(t["status"], "succeeded", "{t}");
        assert_eq!(t["result"].pointer(pointer), Some(&want), "{task}: {t}");
    }
    let bad = node.must_post(
        "/v1/tasks",
        &json!({ "kernel": "fft", "input": { "values": [1, 2, 3] } }),
    );
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(
        bad.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("power of two"),
        "{}",
        bad.body
    );
}
