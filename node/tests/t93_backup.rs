//! Backups and restore on a real 3-node cluster, damaged files refused, scheduled backups
//! rotated, and a damaged data directory stopping the node with what to do (and `edgerun
//! doctor` saying the same).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn edgerun(args: &[&str]) -> Output {
    edgerun_cli(args)
}

fn restore(from: &Path, data: &Path, id: u64) -> Output {
    edgerun(&[
        "restore",
        "--from",
        &from.display().to_string(),
        "--data-dir",
        &data.display().to_string(),
        "--id",
        &id.to_string(),
    ])
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).map_or(true, |mut d| d.next().is_none())
}

#[test]
fn a_backup_restores_a_whole_cluster_and_damaged_files_are_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut c = Cluster::must_start(dir.path(), 3, &[]);
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let tasks: Vec<Value> = (0..200)
        .map(|i| json!({"kernel": "stats", "input": {"values": [i, 1, 2]}, "cache": false}))
        .collect();
    let ids = c.node(leader).must_submit_batch(&tasks);
    let mut results = Vec::new();
    for id in &ids {
        let t = c
            .node(leader)
            .wait_for_task_end(*id, Duration::from_secs(60));
        assert_eq!(t["status"], "succeeded", "{t}");
        results.push(t["result"].clone());
    }
    let stuck = c.node(leader).must_post(
        "/v1/tasks",
        &json!({"kernel": "stats", "input": {"values": [1]}, "constraints": {"tier": "edge"}}),
    );
    let stuck = stuck.body["id"].as_u64().unwrap_or(0);
    let job = c.node(leader).must_post(
        "/v1/jobs",
        &json!({"name": "nightly", "schedule": "0 0 3 * * *",
                "task": {"kernel": "stats", "input": {"values": [1]}}}),
    );
    assert_eq!(job.status, 201, "{}", job.body);
    let job_id = job.body["id"].as_u64().unwrap_or(0);

    // The backup, through a follower (it reads after a barrier: everything above is in it).
    let file = dir.path().join("cluster.backup");
    let follower = (1..=3).find(|i| *i != leader).unwrap_or(1);
    let o = edgerun(&[
        "backup",
        "--out",
        &file.display().to_string(),
        "--url",
        &c.node(follower).url,
        "-o",
        "json",
    ]);
    assert!(o.status.success(), "{}", said(&o));
    let info: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", said(&o)));
    assert_eq!(info["backup"]["tasks"], 201, "{info}");
    println!(
        "backup: {} tasks, {} bytes in {:.3} s",
        info["backup"]["tasks"],
        info["file_bytes"],
        info["seconds"].as_f64().unwrap_or(0.0)
    );
    let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{e}"));

    // Damaged copies are refused and write nothing.
    let bad = |name: &str, content: &[u8], want: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, content).unwrap_or_else(|e| panic!("{e}"));
        let target = dir.path().join(format!("restore-{name}"));
        let o = restore(&f, &target, 1);
        assert!(!o.status.success(), "{name} was accepted: {}", said(&o));
        assert!(said(&o).contains(want), "{name}: {}", said(&o));
        assert!(is_empty_dir(&target), "{name}: something was written");
    };
    bad("truncated", &bytes[..bytes.len() / 2], "truncated");
    let mut flipped = bytes.clone();
    let at = flipped.len() - 10;
    flipped[at] ^= 0x5a;
    bad("flipped", &flipped, "checksum does not match");
    bad("garbage", b"hello world", "not an edgerun backup");
    let mut long = bytes.clone();
    long.extend_from_slice(b"more");
    bad("long", &long, "not one backup");
    let o = restore(&file, &dir.path().join("stranger"), 9);
    assert!(said(&o).contains("not a member"), "{}", said(&o));

    // Every node stops, loses its data, and is restored from the one file.
    for n in c.nodes.iter_mut() {
        n.kill9();
    }
    for n in &c.nodes {
        let data = n.dir.join("data");
        let o = restore(&file, &data, n.id);
        assert!(!o.status.success(), "restored over an existing database");
        assert!(
            said(&o).contains("already holds a database"),
            "{}",
            said(&o)
        );
        let db = data.join("db");
        std::fs::rename(&db, n.dir.join("old-db")).unwrap_or_else(|e| panic!("{e}"));
        let o = restore(&file, &data, n.id);
        assert!(o.status.success(), "{}", said(&o));
    }
    let started = Instant::now();
    for n in c.nodes.iter_mut() {
        n.must_restart_no_wait();
    }
    for n in c.nodes.iter_mut() {
        n.must_be_ready();
    }
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    println!(
        "restored cluster ready in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    for n in &c.nodes {
        for (id, want) in ids.iter().zip(&results) {
            let t = n.must_get(&format!("/v1/tasks/{id}")).body;
            assert_eq!(
                (&t["status"], &t["result"]),
                (&json!("succeeded"), want),
                "node {}: {t}",
                n.id
            );
        }
        assert_eq!(
            n.must_get(&format!("/v1/tasks/{stuck}")).body["status"],
            "pending"
        );
        assert_eq!(n.must_get(&format!("/v1/jobs/{job_id}")).status, 200);
    }
    // And it works on: a new task gets a new id and runs.
    let t = c.node(leader).must_post(
        "/v1/tasks",
        &json!({"kernel": "stats", "input": {"values": [7]}}),
    );
    let new_id = t.body["id"].as_u64().unwrap_or(0);
    assert!(
        new_id > stuck,
        "ids restart after the restored ones: {new_id}"
    );
    assert_eq!(
        c.node(leader)
            .wait_for_task_end(new_id, Duration::from_secs(60))["status"],
        "succeeded"
    );
}

#[test]
fn scheduled_backups_rotate_and_a_damaged_data_dir_stops_the_node() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut node = Node::must_start(
        dir.path(),
        &["backup.schedule=\"* * * * * *\"", "backup.keep=2"],
    );
    let id = node
        .must_post(
            "/v1/tasks",
            &json!({"kernel": "stats", "input": {"values": [1, 2]}}),
        )
        .body["id"]
        .as_u64()
        .unwrap_or(0);
    node.wait_for_task_end(id, Duration::from_secs(30));
    let backups = dir.path().join("data").join("backups");
    wait_until(
        "three scheduled backups, two kept",
        Duration::from_secs(30),
        || {
            let written = node.log().matches("scheduled backup written").count();
            let kept = backups_in(&backups).len();
            if written >= 3 && kept == 2 {
                Ok(())
            } else {
                Err(format!("{written} written, {kept} kept"))
            }
        },
    );
    let newest = backups_in(&backups).pop().unwrap_or_default();
    let bytes = std::fs::read(&newest).unwrap_or_else(|e| panic!("{e}"));
    let o = restore(&newest, &dir.path().join("from-scheduled"), 1);
    assert!(
        o.status.success(),
        "a scheduled backup restores: {}",
        said(&o)
    );
    assert!(bytes.starts_with(b"EDGERUN-BACKUP 1\n"));

    // doctor on the stopped node: whole.
    node.terminate();
    node.wait_exit(Duration::from_secs(30));
    let data = dir.path().join("data");
    let o = edgerun(&[
        "doctor",
        "--data-dir",
        &data.display().to_string(),
        "-o",
        "json",
    ]);
    assert!(o.status.success(), "{}", said(&o));
    let r: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", said(&o)));
    assert!(r["log_last_index"].as_u64() >= Some(3), "{r}");
    assert!(r["space_amplification"].as_f64() > Some(0.0), "{r}");
    assert_eq!(r["problems"], json!([]));

    // A damaged log entry (one byte of the last segment's first record flipped): doctor
    // says so, the node refuses to start and says how to recover.
    {
        let mut segs: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segs.sort();
        let seg = segs.last().unwrap_or_else(|| panic!("no log segment"));
        let mut bytes = std::fs::read(seg).unwrap_or_else(|e| panic!("{e}"));
        // 8 bytes of file header, 16 of record header, then the entry.
        assert!(bytes.len() > 30, "{} bytes", bytes.len());
        bytes[26] ^= 0xff;
        std::fs::write(seg, &bytes).unwrap_or_else(|e| panic!("{e}"));
    }
    let o = edgerun(&["doctor", "--data-dir", &data.display().to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", said(&o));
    assert!(
        said(&o).contains("PROBLEM") && said(&o).contains("does not decode"),
        "{}",
        said(&o)
    );
    node.must_restart_no_wait();
    let st = node.wait_exit(Duration::from_secs(30));
    assert!(!st.success());
    let log = node.log();
    assert!(
        log.contains("is damaged") && log.contains("edgerun restore") && log.contains("new member"),
        "{log}"
    );
}
