//! Data at rest is private to the node's user (SECURITY.md, "Data at rest"): after a run with
//! tasks, stored results, scheduled backups and `edgerun backup --out`, nothing under the data
//! directory, nor the backup file, has a group or other permission bit; a data directory made
//! looser by hand is tightened at start; `edgerun backup --out` never replaces a file; and
//! `edgerun doctor` names what others can read, with the chmod that fixes it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn edgerun(args: &[&str]) -> Output {
    edgerun_cli(args)
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every path at or under `root` (symlinks not followed) with a group or other bit, with its
/// mode; and how many paths were looked at.
fn offenders(root: &Path) -> (Vec<String>, usize) {
    let mut bad = Vec::new();
    let mut seen = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.file_type().is_symlink() {
            continue;
        }
        seen += 1;
        let mode = m.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            bad.push(format!("{:04o} {}", mode, p.display()));
        }
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    bad.sort();
    (bad, seen)
}

fn submit_and_wait(node: &Node, task: &Value) {
    let a = node.must_post("/v1/tasks", task);
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["id"].as_u64().unwrap_or(0);
    let t = node.wait_for_task_end(id, Duration::from_secs(60));
    assert_eq!(t["status"], "succeeded", "{t}");
}

#[test]
fn nothing_under_the_data_dir_nor_a_backup_is_readable_by_others() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().join("data");
    // Made looser by hand (or by an earlier edgerun): the node tightens it.
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
    chmod(&data, 0o755);
    let mut node = Node::must_start(
        dir.path(),
        &[
            "backup.schedule=\"* * * * * *\"",
            "backup.keep=3",
            // Results past 256 bytes are kept off-Raft, in the node's database.
            "retention.inline_result_max_bytes=256",
        ],
    );
    for i in 0..5 {
        submit_and_wait(
            &node,
            &json!({"kernel": "stats", "input": {"values": [i, 1, 2]}, "cache": false}),
        );
    }
    // A large result: stored beside the database (sled keeps big values as blob files).
    let values: Vec<u64> = (0..50_000u64).rev().collect();
    submit_and_wait(
        &node,
        &json!({"kernel": "sort", "input": {"values": values}, "cache": false}),
    );
    let backups = data.join("backups");
    wait_until("two scheduled backups", Duration::from_secs(30), || {
        let n = backups_in(&backups).len();
        if n >= 2 {
            Ok(())
        } else {
            Err(format!("{n} backups in {}", backups.display()))
        }
    });
    // Into a directory that does not exist yet: made 0700.
    let out = dir.path().join("saved").join("cluster.backup");
    let o = edgerun(&[
        "backup",
        "--out",
        &out.display().to_string(),
        "--url",
        &node.url,
    ]);
    assert!(o.status.success(), "{}", said(&o));

    node.terminate();
    node.wait_exit(Duration::from_secs(30));
    let (mut bad, seen) = offenders(&data);
    let (more, _) = offenders(&dir.path().join("saved"));
    bad.extend(more);
    assert!(
        bad.is_empty(),
        "{} of {seen} paths under {} (and the backup) are open to group or others:\n{}",
        bad.len(),
        data.display(),
        bad.join("\n")
    );
    assert!(seen > 10, "only {seen} paths under the data directory");
    let log = node.log();
    assert!(
        log.contains("the data directory was mode 0755; now 0700"),
        "no line about tightening the data directory:\n{log}"
    );
    let blobs = std::fs::read_dir(data.join("db").join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(blobs > 0, "the large result did not reach db/blobs");
    assert_eq!(mode(&out), 0o600);
    assert_eq!(mode(&data), 0o700);
}

#[test]
fn a_backup_never_replaces_an_existing_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut node = Node::must_start(dir.path(), &[]);
    submit_and_wait(
        &node,
        &json!({"kernel": "stats", "input": {"values": [1, 2]}}),
    );
    let keep = dir.path().join("yesterday.backup");
    std::fs::write(&keep, b"yesterday's backup").unwrap_or_else(|e| panic!("{e}"));
    let o = edgerun(&[
        "backup",
        "--out",
        &keep.display().to_string(),
        "--url",
        &node.url,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", said(&o));
    assert!(said(&o).contains("already exists"), "{}", said(&o));
    assert_eq!(
        std::fs::read(&keep).unwrap_or_default(),
        b"yesterday's backup",
        "the existing file was changed"
    );
    // A dangling symlink is not followed either.
    let link = dir.path().join("link.backup");
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link)
        .unwrap_or_else(|e| panic!("{e}"));
    let o = edgerun(&[
        "backup",
        "--out",
        &link.display().to_string(),
        "--url",
        &node.url,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", said(&o));
    assert!(!dir.path().join("elsewhere").exists());
    // A new name works, and nothing temporary is left beside it.
    let fresh = dir.path().join("today.backup");
    let o = edgerun(&[
        "backup",
        "--out",
        &fresh.display().to_string(),
        "--url",
        &node.url,
    ]);
    assert!(o.status.success(), "{}", said(&o));
    assert_eq!(mode(&fresh), 0o600);
    let partial: Vec<_> = std::fs::read_dir(dir.path())
        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(partial.is_empty(), "left behind: {partial:?}");
    node.terminate();
    node.wait_exit(Duration::from_secs(30));
}

#[test]
fn doctor_names_what_others_can_read_and_the_chmod_that_fixes_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut node = Node::must_start(dir.path(), &[]);
    node.terminate();
    node.wait_exit(Duration::from_secs(30));
    let data = dir.path().join("data");
    let doctor = |extra: &[&str]| {
        let mut args = vec![
            "doctor".to_string(),
            "--data-dir".into(),
            data.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        edgerun(&args)
    };
    let o = doctor(&[]);
    assert!(o.status.success(), "{}", said(&o));
    assert!(!said(&o).contains("WARNING"), "{}", said(&o));

    let notes = data.join("notes.txt");
    std::fs::write(&notes, b"x").unwrap_or_else(|e| panic!("{e}"));
    chmod(&notes, 0o644);
    chmod(&data.join("log"), 0o755);
    let o = doctor(&[]);
    // A warning, not a failure.
    assert!(o.status.success(), "{}", said(&o));
    let text = said(&o);
    for want in [
        format!(
            "file {} is mode 0644: group or others can reach it; fix: chmod go= {}",
            notes.display(),
            notes.display()
        ),
        format!(
            "directory {} is mode 0755: group or others can reach it; fix: chmod go= {}",
            data.join("log").display(),
            data.join("log").display()
        ),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    let o = doctor(&["-o", "json"]);
    let r: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", said(&o)));
    assert_eq!(
        r["warnings"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r["warnings"]
    );
    assert_eq!(r["problems"], json!([]));

    // Many: the first 20 named, then a count and the recursive fix.
    for i in 0..25 {
        let f = data.join(format!("loose-{i:02}"));
        std::fs::write(&f, b"x").unwrap_or_else(|e| panic!("{e}"));
        chmod(&f, 0o604);
    }
    let o = doctor(&[]);
    assert!(o.status.success(), "{}", said(&o));
    let text = said(&o);
    assert_eq!(text.matches("WARNING").count(), 21, "{text}");
    assert!(
        text.contains(&format!(
            "and 7 more paths like these; fix all under the data directory: chmod -R go= {}",
            data.display()
        )),
        "{text}\n{:?}",
        offenders(&data)
    );

    // With the config: a secret it keeps outside the data directory.
    let secret = dir.path().join("shared").join("cluster.secret");
    std::fs::create_dir_all(dir.path().join("shared")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&secret, b"s3cret").unwrap_or_else(|e| panic!("{e}"));
    chmod(&secret, 0o640);
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\ndata_dir = {:?}\n[cluster]\nsecret_file = {:?}\n",
            data.display().to_string(),
            secret.display().to_string()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = edgerun(&["doctor", "--config", &cfg.display().to_string()]);
    assert!(o.status.success(), "{}", said(&o));
    assert!(
        said(&o).contains(&format!(
            "file {} is mode 0640: group or others can reach it; fix: chmod go= {}",
            secret.display(),
            secret.display()
        )),
        "{}",
        said(&o)
    );

    // Fixed as told: no warning left.
    Command::new("chmod")
        .args(["-R", "go="])
        .arg(&data)
        .arg(&secret)
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    let o = edgerun(&["doctor", "--config", &cfg.display().to_string()]);
    assert!(o.status.success(), "{}", said(&o));
    assert!(!said(&o).contains("WARNING"), "{}", said(&o));
}
