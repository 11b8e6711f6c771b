//! The CLI against a real 3-node cluster: tables and `--output json`, batches with --count and
//! JSON lines files waited for with a summary, `top`, and the exit codes `edgerun --help`
//! promises (0 ok, 1 a task did not succeed, 2 invalid, 3 not found, 4 denied, 5 unavailable).

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn edgerun(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgerun"))
        .args(args)
        .args(["--url", url])
        .env_remove("EDGERUN_TOKEN")
        .env_remove("EDGERUN_API_KEY")
        .env_remove("EDGERUN_OUTPUT")
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn must_exit(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
}

#[test]
fn the_cli_prints_tables_or_json_waits_for_batches_and_exits_meaningfully() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c = Cluster::must_start(dir.path(), 3, &[]);
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let url = c.node(1).url.clone();

    // cluster status: a table with the leader starred, and the same as JSON.
    let o = edgerun(&url, &["cluster", "status"]);
    must_exit(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("NODE") && out.contains("ROLE") && out.contains("LOAD"),
        "{out}"
    );
    assert!(
        out.contains(&format!("\n{leader} *")),
        "leader not starred: {out}"
    );
    assert_eq!(out.matches("voter").count(), 3, "{out}");
    assert!(out.contains("tasks: "), "{out}");
    let o = edgerun(&url, &["cluster", "status", "-o", "json"]);
    must_exit(&o, 0);
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(v["members"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["leader"], leader);

    // --count: 50 copies in a batch, waited for, summarised.
    let o = edgerun(
        &url,
        &[
            "task",
            "submit",
            "--kernel",
            "stats",
            "--input",
            r#"{"values": [1, 2, 3]}"#,
            "--count",
            "50",
            "--wait",
        ],
    );
    must_exit(&o, 0);
    assert!(
        stdout(&o).contains("50 tasks in") && stdout(&o).contains("50 succeeded"),
        "{}",
        text(&o)
    );

    // A JSON lines file with one task that fails: exit 1, the summary names it.
    let file = dir.path().join("tasks.jsonl");
    std::fs::write(
        &file,
        concat!(
            "{\"kernel\": \"stats\", \"input\": {\"values\": [1]}}\n",
            "\n",
            "{\"kernel\": \"stats\", \"input\": {\"values\": [2]}}\n",
            "{\"exec\": {\"argv\": [\"sh\", \"-c\", \"exit 3\"]}, \"retry\": {\"max_attempts\": 1}}\n",
            "{\"kernel\": \"stats\", \"input\": {\"values\": [3]}}\n",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let path = file.display().to_string();
    let o = edgerun(
        &url,
        &["task", "submit", "--file", &path, "--wait", "-o", "json"],
    );
    must_exit(&o, 1);
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(v["ids"].as_array().map(Vec::len), Some(4), "{v}");
    assert_eq!(
        v["ended"]["succeeded"].as_array().map(Vec::len),
        Some(3),
        "{v}"
    );
    let failed = v["ended"]["failed"][0]
        .as_u64()
        .unwrap_or_else(|| panic!("{v}"));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("1 of 4 tasks did not succeed"),
        "{}",
        text(&o)
    );
    // Its story in text, and `task wait` on it exits 1.
    let o = edgerun(&url, &["task", "wait", &failed.to_string()]);
    must_exit(&o, 1);
    assert!(
        stdout(&o).contains(&format!("task {failed}: failed")),
        "{}",
        text(&o)
    );
    assert!(stdout(&o).contains("error: nonzero_exit"), "{}", text(&o));
    assert!(stdout(&o).contains("trace: "), "{}", text(&o));

    // A list as a table.
    let o = edgerun(&url, &["task", "list", "--limit", "5"]);
    must_exit(&o, 0);
    let out = stdout(&o);
    assert!(
        out.starts_with("ID") && out.contains("STATUS") && out.contains("KERNEL"),
        "{out}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("stats") || l.contains("exec"))
            .count(),
        5,
        "{out}"
    );
    assert!(out.contains("more: --after"), "{out}");

    // top: one frame as text, then two as JSON lines with a rate between them.
    let o = edgerun(&url, &["top", "--once"]);
    must_exit(&o, 0);
    assert!(
        stdout(&o).contains("finished/s") && stdout(&o).contains(&format!("{leader} *")),
        "{}",
        text(&o)
    );
    let o = edgerun(
        &url,
        &["top", "--frames", "2", "--interval", "200ms", "-o", "json"],
    );
    must_exit(&o, 0);
    let frames: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(frames.len(), 2, "{}", text(&o));
    assert_eq!(
        frames[1]["cluster"]["members"].as_array().map(Vec::len),
        Some(3)
    );
    assert!(
        frames[1]["finished_per_second"].is_number(),
        "{}",
        frames[1]
    );
    assert!(frames[0]["cluster"]["tasks"]["succeeded"].as_u64() >= Some(53));

    // Exit codes.
    std::fs::write(
        &file,
        "{\"kernel\": \"stats\", \"input\": {}}\n{\"kernel\": \"stats\",\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = edgerun(&url, &["task", "submit", "--file", &path]);
    must_exit(&o, 2);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("line 2"),
        "{}",
        text(&o)
    );
    let o = edgerun(
        &url,
        &[
            "task",
            "submit",
            "--kernel",
            "no-such-kernel",
            "--input",
            "{}",
        ],
    );
    must_exit(&o, 2);
    let o = edgerun(&url, &["task", "get", "999999"]);
    must_exit(&o, 3);
    let o = edgerun(&url, &["top", "--interval", "1ms"]);
    must_exit(&o, 2);
    let o = edgerun(
        &format!("http://127.0.0.1:{}", free_port()),
        &["cluster", "status"],
    );
    must_exit(&o, 5);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is a node running"),
        "{}",
        text(&o)
    );
    let o = Command::new(env!("CARGO_BIN_EXE_edgerun"))
        .args(["task", "frobnicate"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    must_exit(&o, 2);
    let o = Command::new(env!("CARGO_BIN_EXE_edgerun"))
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    must_exit(&o, 0);
    assert!(
        stdout(&o).contains("Exit codes") && stdout(&o).contains("Examples"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_missing_token_exits_4() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(dir.path(), &["auth.enabled=true"]);
    let o = edgerun(&node.url, &["task", "list"]);
    must_exit(&o, 4);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("HTTP 401"),
        "{}",
        text(&o)
    );
    // The error says how to give credentials.
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("EDGERUN_API_KEY"),
        "{}",
        text(&o)
    );
    // A stale token beside a good API key: the key wins (a token is traded for it).
    let key = std::fs::read_to_string(dir.path().join("data").join("admin.key"))
        .unwrap_or_else(|e| panic!("the admin key: {e}"));
    let o = Command::new(env!("CARGO_BIN_EXE_edgerun"))
        .args(["task", "list", "--url", &node.url])
        .env("EDGERUN_TOKEN", "eyJhbGciOiJIUzI1NiJ9.e30.stale")
        .env("EDGERUN_API_KEY", key.trim())
        .env_remove("EDGERUN_OUTPUT")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    must_exit(&o, 0);
}

/// The README's bulk commands against 3 nodes with auth on and the default limits (200
/// requests/s, burst 400 per subject): waiting for thousands of tasks must not trip them.
#[test]
fn bulk_submissions_are_waited_for_within_the_default_limits() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key = "ops-bulk-0123456789abcdef-key";
    let key_file = dir.path().join("operator.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap_or_else(|e| panic!("{e}"));
    let sets = [
        "auth.enabled=true".to_string(),
        format!(
            "auth.jwt_secret_file=\"{}\"",
            dir.path().join("jwt.secret").display()
        ),
        format!(
            "auth.api_keys=[{{ key_file = \"{}\", role = \"operator\" }}]",
            key_file.display()
        ),
        // The defaults, over the harness's own.
        "limits.requests_per_second=200".into(),
        "limits.burst=400".into(),
        "limits.address_requests_per_second=1000".into(),
        "limits.address_burst=2000".into(),
        "executor.isolation=\"inproc\"".into(),
    ];
    let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    let c = Cluster::must_start(dir.path(), 3, &refs);
    c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let url = c.node(2).url.clone();
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_edgerun"))
            .args(args)
            .args(["--url", &url])
            .env_remove("EDGERUN_TOKEN")
            .env_remove("EDGERUN_OUTPUT")
            .env("EDGERUN_API_KEY", key)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let o = cli(&[
        "task",
        "submit",
        "--kernel",
        "stats",
        "--input",
        r#"{"values":[1,2,3]}"#,
        "--count",
        "1000",
        "--wait",
    ]);
    must_exit(&o, 0);
    assert!(stdout(&o).contains("1000 succeeded"), "{}", text(&o));

    // The same task 3,000 times from a file (their results come from the cache).
    let file = dir.path().join("same.jsonl");
    let line = r#"{"kernel":"stats","input":{"values":[4,5,6]}}"#;
    std::fs::write(&file, format!("{line}\n").repeat(3000)).unwrap_or_else(|e| panic!("{e}"));
    let o = cli(&[
        "task",
        "submit",
        "--file",
        &file.display().to_string(),
        "--wait",
    ]);
    must_exit(&o, 0);
    assert!(stdout(&o).contains("3000 succeeded"), "{}", text(&o));
}
