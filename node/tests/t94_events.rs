//! GET /v1/events (Server-Sent Events) and the CLI on top of it: a task's changes arrive in
//! order as they are applied; `edgerun task watch` follows one task and exits 0 or 1 by its
//! end; bad filters are 400.

mod common;

use std::io::BufRead;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Open the stream in a thread; (kind, data) pairs come out of the channel.
fn subscribe(url: &str, query: &str) -> mpsc::Receiver<(String, Value)> {
    let (tx, rx) = mpsc::channel();
    let url = format!("{url}/v1/events{query}");
    let (opened_tx, opened_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let resp = ureq::get(&url).call().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.content_type(), "text/event-stream");
        let _ = opened_tx.send(());
        let mut kind = String::new();
        for line in std::io::BufReader::new(resp.into_reader()).lines() {
            let Ok(line) = line else { return };
            if let Some(k) = line.strip_prefix("event: ") {
                kind = k.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(d).unwrap_or(Value::Null);
                if tx.send((kind.clone(), v)).is_err() {
                    return;
                }
            }
        }
    });
    opened_rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the event stream did not open: {e}"));
    rx
}

fn edgerun(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgerun"))
        .args(args)
        .args(["--url", url])
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn task_changes_stream_in_order_and_watch_follows_one_task() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(dir.path(), &[]);
    let all = subscribe(&node.url, "");
    let id = node
        .must_post(
            "/v1/tasks",
            &json!({"kernel": "stats", "input": {"values": [1, 2, 3]}}),
        )
        .body["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id"));
    let order = ["pending", "scheduled", "running", "succeeded"];
    let mut seen: Vec<String> = Vec::new();
    let mut leader_seen = false;
    while seen.last().map(String::as_str) != Some("succeeded") {
        let (kind, data) = all
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("no event for task {id} ({e}); seen {seen:?}"));
        match kind.as_str() {
            "leader" => leader_seen = data["leader"].as_u64() == Some(1),
            "task" if data["id"].as_u64() == Some(id) => {
                seen.push(data["status"].as_str().unwrap_or("?").to_string())
            }
            _ => {}
        }
    }
    assert!(leader_seen, "no leader event before the task's");
    let ranks: Vec<usize> = seen
        .iter()
        .map(|s| order.iter().position(|o| o == s).unwrap_or(99))
        .collect();
    assert!(
        ranks.windows(2).all(|w| w[0] <= w[1]) && ranks[0] == 0,
        "task {id} changes out of order: {seen:?}"
    );

    // Filtered to one status: only failures come (none here), not this success.
    let failures = subscribe(&node.url, "?status=failed,timed_out&kinds=task");
    let ok = node
        .must_post(
            "/v1/tasks",
            &json!({"kernel": "stats", "input": {"values": [4]}}),
        )
        .body["id"]
        .as_u64()
        .unwrap_or(0);
    node.wait_for_task_end(ok, Duration::from_secs(30));
    assert!(
        failures.recv_timeout(Duration::from_millis(500)).is_err(),
        "a success came through a failures-only stream"
    );

    // The CLI: watch a task to success (exit 0) ...
    let id2 = node
        .must_post(
            "/v1/tasks",
            &json!({"kernel": "stats", "input": {"values": [5, 6]}}),
        )
        .body["id"]
        .as_u64()
        .unwrap_or(0);
    let out = edgerun(&node.url, &["task", "watch", &id2.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("task {id2}: succeeded")), "{text}");

    // ... and one that is cancelled while watched (exit 1, saying so).
    let stuck = node
        .must_post(
            "/v1/tasks",
            &json!({"kernel": "stats", "input": {"values": [1]}, "constraints": {"tier": "edge"}}),
        )
        .body["id"]
        .as_u64()
        .unwrap_or(0);
    let url = node.url.clone();
    let watcher = std::thread::spawn(move || edgerun(&url, &["task", "watch", &stuck.to_string()]));
    let events = subscribe(&node.url, &format!("?task={stuck}&kinds=task"));
    // Cancel once the watcher's stream is open: the fourth stream this node has answered
    // (this test's three and the watcher's).
    wait_until(
        "the watcher to be connected",
        Duration::from_secs(10),
        || {
            let m = node.must_get_text("/metrics");
            let n = m
                .lines()
                .find(|l| l.starts_with("edgerun_http_requests_total{route=\"/v1/events\""))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            if n >= 4.0 {
                Ok(())
            } else {
                Err(format!("{n} event streams answered"))
            }
        },
    );
    let a = node.must_post(&format!("/v1/tasks/{stuck}/cancel"), &json!({}));
    assert_eq!(a.status, 200, "{}", a.body);
    let (kind, data) = events
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("no event for the cancel: {e}"));
    assert_eq!(
        (kind.as_str(), data["status"].as_str()),
        ("task", Some("cancelled"))
    );
    let out = watcher.join().unwrap_or_else(|_| panic!("watcher thread"));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cancelled"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Bad filters: 400 with the usual body.
    for q in ["?status=bogus", "?kinds=weather", "?task=0", "?nope=1"] {
        let a = node.must_get(&format!("/v1/events{q}"));
        assert_eq!(a.status, 400, "{q}: {}", a.body);
    }
}
