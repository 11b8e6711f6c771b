//! Alerts on a real cluster: pending over a threshold and a node killed fire (GET
//! /v1/alerts on any node, `edgerun_alerts_firing`, a log line and one webhook POST each
//! from the leader), and resolve when the condition ends.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A tiny HTTP server that keeps every JSON body POSTed to it.
fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "http://{}/hook",
        l.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                keep.lock().unwrap_or_else(|p| p.into_inner()).push(v);
            }
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

fn posted(got: &Arc<Mutex<Vec<Value>>>, name: &str, state: &str) -> usize {
    got.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|v| v["alert"]["name"] == name && v["state"] == state)
        .count()
}

#[test]
fn pending_and_node_down_alerts_fire_and_resolve() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (url, got) = webhook();
    let hook = format!("alerts.webhook_url=\"{url}\"");
    let mut c = Cluster::must_start(
        dir.path(),
        3,
        &[&hook, "alerts.pending_over=2", "cluster.lease_ms=1500"],
    );
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(20));
    // Three tasks no node can take: pending stays at 3 > 2.
    let stuck: Vec<Value> = (0..3)
        .map(|i| json!({"kernel": "stats", "input": {"values": [i]}, "constraints": {"tier": "edge"}}))
        .collect();
    let ids = c.node(leader).must_submit_batch(&stuck);
    let follower = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap_or(1);
    for n in [leader, follower] {
        wait_until("the pending alert", Duration::from_secs(15), || {
            let a = c.node(n).must_get("/v1/alerts").body;
            let names: Vec<String> = a["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x["name"].as_str().map(String::from))
                .collect();
            if names.iter().any(|x| x == "pending") {
                Ok(())
            } else {
                Err(format!("node {n}: {a}"))
            }
        });
    }
    assert_eq!(
        c.node(leader)
            .metric("edgerun_alerts_firing{alert=\"pending\"}"),
        Some(1.0)
    );
    wait_until(
        "the webhook to get the pending alert",
        Duration::from_secs(10),
        || match posted(&got, "pending", "firing") {
            1 => Ok(()),
            n => Err(format!("{n} posts")),
        },
    );

    // A follower dies: node_down fires, posted once (by the leader only).
    let victim = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap_or(1);
    c.node_mut(victim).kill9();
    let name = format!("node_down:{victim}");
    wait_until(
        "the node_down alert on the webhook",
        Duration::from_secs(20),
        || match posted(&got, &name, "firing") {
            0 => Err("not yet".into()),
            n => Ok(n),
        },
    );
    assert!(
        c.node(leader)
            .log()
            .contains(&format!("ALERT firing: node {victim}")),
        "the leader logs the alert"
    );

    // Cancelling the stuck tasks resolves the pending alert.
    for id in ids {
        c.node(leader)
            .must_post(&format!("/v1/tasks/{id}/cancel"), &json!({}));
    }
    wait_until(
        "the pending alert to resolve",
        Duration::from_secs(15),
        || match posted(&got, "pending", "resolved") {
            0 => Err("not yet".into()),
            _ => Ok(()),
        },
    );
    assert_eq!(
        c.node(leader)
            .metric("edgerun_alerts_firing{alert=\"pending\"}"),
        Some(0.0)
    );
    // One post per change, however many nodes saw it.
    assert_eq!(posted(&got, "pending", "firing"), 1);
    assert_eq!(posted(&got, &name, "firing"), 1);
}
