//! Bad input of every kind gets a clear 4xx in API.md's shape and leaves stored state as it
//! was; bad config stops the node at start with the key, the value and what is accepted.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{free_port, Node};
use serde_json::{json, Value};

fn assert_error(a: &common::Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["error"]["code"], code, "{}", a.body);
    assert!(
        !a.body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{}",
        a.body
    );
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(dir.path(), &["api.max_body_bytes=65536"]);
    let ok = node.must_post(
        "/v1/tasks",
        &json!({ "kernel": "stats", "input": { "values": [1, 2, 3] } }),
    );
    assert_eq!(ok.status, 201);
    node.wait_for_task_end(ok.body["id"].as_u64().unwrap_or(0), Duration::from_secs(30));
    let before: Vec<Value> = node.must_list_all();

    let raw = |b: &[u8]| {
        node.try_post_raw("/v1/tasks", b)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let a = raw(b"{\"kernel\": \"stats\", ");
    assert_error(&a, 400, "invalid_json");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("EOF"),
        "the parser's message: {}",
        a.body
    );
    assert_error(&raw(b"[1, 2]"), 400, "invalid_json");
    assert_error(&raw(b""), 400, "invalid_json");
    // wrong types and unknown fields
    assert_error(
        &node.must_post(
            "/v1/tasks",
            &json!({ "kernel": "stats", "input": { "values": [1] }, "priority": "high" }),
        ),
        400,
        "invalid_json",
    );
    assert_error(
        &node.must_post(
            "/v1/tasks",
            &json!({ "kernel": "stats", "input": { "values": [1] }, "colour": 1 }),
        ),
        400,
        "invalid_json",
    );
    assert_error(
        &node.must_post("/v1/tasks", &json!({ "input": { "values": [1] } })),
        400,
        "invalid_task",
    );
    assert_error(
        &node.must_post(
            "/v1/tasks",
            &json!({ "kernel": "stats", "input": { "values": [1] }, "timeout_ms": 0 }),
        ),
        400,
        "invalid_task",
    );
    // A timeout too short to enforce is refused, not silently exceeded.
    let a = node.must_post(
        "/v1/tasks",
        &json!({ "kernel": "stats", "input": { "values": [1] }, "timeout_ms": 1 }),
    );
    assert_error(&a, 400, "invalid_task");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("timeout_ms") && m.contains("10..=")),
        "{}",
        a.body
    );
    // unknown kernel and wrong shapes: 422
    let a = node.must_post("/v1/tasks", &json!({ "kernel": "quicksort", "input": {} }));
    assert_error(&a, 422, "unknown_kernel");
    assert_eq!(a.body["error"]["details"]["field"], "kernel", "{}", a.body);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("matmul"),
        "names the known kernels: {}",
        a.body
    );
    assert_error(
        &node.must_post(
            "/v1/tasks",
            &json!({ "kernel": "stats", "input": { "values": [] } }),
        ),
        422,
        "invalid_input",
    );
    assert_error(
        &node.must_post(
            "/v1/tasks",
            &json!({ "kernel": "stats", "input": { "values": ["a"] } }),
        ),
        422,
        "invalid_input",
    );
    let a = node.must_post(
        "/v1/tasks",
        &json!({ "kernel": "matmul", "input": { "a": [[1, 2], [3]], "b": [[1], [2]] } }),
    );
    assert_error(&a, 422, "invalid_input");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("ragged"),
        "{}",
        a.body
    );
    assert_error(
        &node.must_post(
            "/v1/tasks",
            &json!({ "kernel": "matmul", "input": { "a": [[1, 2]], "b": [[1, 2]] } }),
        ),
        422,
        "invalid_input",
    );
    // one bad task fails the whole batch, naming its index
    let a = node.must_post(
        "/v1/tasks/batch",
        &json!({ "tasks": [
        { "kernel": "stats", "input": { "values": [1] } },
        { "kernel": "stats", "input": { "values": [] } },
    ] }),
    );
    assert_error(&a, 422, "invalid_input");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("tasks[1]"),
        "{}",
        a.body
    );
    assert_error(
        &node.must_post("/v1/tasks/batch", &json!({ "tasks": [] })),
        400,
        "invalid_batch",
    );
    // a huge body
    let big = format!(
        "{{\"kernel\":\"stats\",\"input\":{{\"values\":[{}1]}}}}",
        "1,".repeat(70_000)
    );
    assert_error(&raw(big.as_bytes()), 413, "payload_too_large");
    // JSON nested far deeper than any schema: refused by the parser's depth limit, no crash
    // (in the body itself and inside a kernel's input)
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    assert_error(&raw(deep.as_bytes()), 400, "invalid_json");
    let deep_input = format!(
        "{{\"kernel\":\"stats\",\"input\":{{\"values\":{}{}}}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let a = raw(deep_input.as_bytes());
    assert!(
        a.status == 400 || a.status == 422,
        "deeply nested kernel input: HTTP {} {}",
        a.status,
        a.body
    );
    // unknown and malformed ids, bad query parameters, unknown routes
    assert_error(&node.must_get("/v1/tasks/999999"), 404, "not_found");
    assert_error(&node.must_get("/v1/tasks/abc"), 400, "invalid_id");
    assert_error(
        &node.must_post("/v1/tasks/999999/cancel", &json!({})),
        404,
        "not_found",
    );
    assert_error(
        &node.must_get("/v1/tasks?status=done"),
        400,
        "invalid_status",
    );
    assert_error(&node.must_get("/v1/tasks?limit=0"), 400, "invalid_limit");
    assert_error(&node.must_get("/v1/tasks?limit=x"), 400, "invalid_query");
    assert_error(
        &node.must_get("/v1/tasks/1/wait?timeout=forever"),
        400,
        "invalid_timeout",
    );
    assert_error(&node.must_get("/v1/nothing"), 404, "not_found");

    let after: Vec<Value> = node.must_list_all();
    assert_eq!(before, after, "bad requests changed the stored tasks");
}

fn start_fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().join("data").display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_edgerun"))
        .args(["node", "--data-dir", &data, "--api-listen", "127.0.0.1:1"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !out.status.success(),
        "start must fail for {args:?} {env:?}"
    );
    assert!(
        !dir.path().join("data").join("db").exists(),
        "nothing is written when the config is bad"
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn bad_config_is_refused_at_start_naming_key_value_and_accepted() {
    let e = start_fails(&["--set", "executor.slots=0"], &[]);
    assert!(
        e.contains("executor.slots") && e.contains("\"0\"") && e.contains("1 to 1024"),
        "{e}"
    );
    let e = start_fails(&[], &[("EDGERUN_EXECUTOR_ISOLATION", "vm")]);
    assert!(
        e.contains("executor.isolation")
            && e.contains("vm")
            && e.contains("EDGERUN_EXECUTOR_ISOLATION"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "[node]\nid = 1\nflavour = \"x\"\n").unwrap_or_else(|e| panic!("{e}"));
    let e = start_fails(&["--config", &file.display().to_string()], &[]);
    assert!(e.contains("flavour") && e.contains("node.toml"), "{e}");
    let e = start_fails(&["--set", "nonsense"], &[]);
    assert!(e.contains("key=value"), "{e}");
}

#[test]
fn a_corrupt_data_dir_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("data").join("db");
    std::fs::create_dir_all(&db).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(db.join("conf"), b"\x00garbage\xff").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(db.join("db"), b"not a sled file at all").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_edgerun"))
        .args([
            "node",
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--api-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--set",
            &format!("cluster.listen=\"127.0.0.1:{}\"", free_port()),
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("opening the database") && e.contains("db"),
        "{e}"
    );
    // the files are left as they were for the operator to inspect
    assert_eq!(
        std::fs::read(db.join("db")).unwrap_or_default(),
        b"not a sled file at all"
    );
}

#[test]
fn a_taken_port_is_named_first_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().join("fresh");
    // Something else holds the API port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = taken.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_edgerun"))
        .args([
            "node",
            "--data-dir",
            &data.display().to_string(),
            "--api-listen",
            &addr.to_string(),
            "--set",
            &format!("cluster.listen=\"127.0.0.1:{}\"", free_port()),
        ])
        .env("EDGERUN_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    let first = e.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(
        first.contains(&format!("api.listen {addr} is already in use")),
        "the first line does not name the key, the address and the cause:\n{e}"
    );
    assert!(
        !data.exists(),
        "the data dir was made before the port was checked"
    );
}

#[test]
fn edgerun_dev_names_a_taken_port_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().join("dev");
    // Node 2's REST port is taken (node i gets port + i - 1).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = taken
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_edgerun"))
        .args([
            "dev",
            "--nodes",
            "3",
            "--no-demo",
            "--port",
            &(port - 1).to_string(),
            "--dir",
            &data.display().to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains(&format!(
            "node 2 api.listen 127.0.0.1:{port} is already in use"
        )),
        "{e}"
    );
    assert!(
        !e.contains("admin key"),
        "a misleading follow-up error: {e}"
    );
    assert!(
        !data.exists(),
        "something was made before the ports were checked"
    );
}

/// A base port whose cluster port (+100) is free too.
fn dev_port() -> u16 {
    for _ in 0..50 {
        let p = free_port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 100)).is_ok() {
            return p;
        }
    }
    panic!("no free pair of ports (p, p + 100)");
}

#[test]
fn edgerun_dev_without_dir_uses_a_fresh_scratch_dir_and_never_removes_a_foreign_one() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let port = dev_port();
    let scratch = tmp.path().join(format!("edgerun-dev-{port}"));
    let dev = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_edgerun"));
        c.args([
            "dev",
            "--nodes",
            "1",
            "--no-demo",
            "--port",
            &port.to_string(),
        ])
        .env("TMPDIR", tmp.path())
        .env("EDGERUN_LOG", "warn");
        c
    };
    // A directory of that name that edgerun dev did not make is left alone.
    std::fs::create_dir_all(&scratch).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(scratch.join("precious"), "keep me").unwrap_or_else(|e| panic!("{e}"));
    let out = dev().output().unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("was not made by edgerun dev"), "{e}");
    assert_eq!(
        std::fs::read_to_string(scratch.join("precious")).unwrap_or_default(),
        "keep me"
    );
    // One left by a killed run (it carries the mark) is made fresh, and removed on Ctrl-C.
    std::fs::write(scratch.join(".edgerun-dev"), "").unwrap_or_else(|e| panic!("{e}"));
    let mut child = dev()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("http://127.0.0.1:{port}");
    common::wait_until("the dev node to be ready", Duration::from_secs(60), || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("edgerun dev exited: {st}");
        }
        ureq::get(&format!("{url}/readyz"))
            .call()
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    assert!(
        !scratch.join("precious").exists(),
        "the old run's files are still there"
    );
    assert!(
        scratch.join("admin.key").is_file(),
        "no admin key in {}",
        scratch.display()
    );
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    common::wait_until(
        "edgerun dev to stop on SIGINT",
        Duration::from_secs(30),
        || match child.try_wait() {
            Ok(Some(st)) => Ok(st),
            _ => Err("still running".to_string()),
        },
    );
    assert!(
        !scratch.exists(),
        "{} is left after Ctrl-C",
        scratch.display()
    );
}

/// `--check-config` checks what a start checks besides the values (backup schedule and time
/// zone, Redis URL, TLS files), names the key, and writes nothing.
#[test]
fn check_config_finds_what_the_start_would_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().join("data");
    let data_set = format!("node.data_dir=\"{}\"", data.display());
    let check = |sets: &[&str]| {
        let mut args = vec!["node", "--check-config", "--set", data_set.as_str()];
        for s in sets {
            args.push("--set");
            args.push(s);
        }
        common::edgerun_cli(&args)
    };
    let ok = check(&[]);
    assert!(ok.status.success(), "{}", common::said(&ok));
    assert!(
        common::said(&ok).contains("config ok"),
        "{}",
        common::said(&ok)
    );
    let missing_cert = dir.path().join("no-such-cert.pem");
    let cert = format!("api.tls_cert_file=\"{}\"", missing_cert.display());
    let key = format!("api.tls_key_file=\"{}\"", missing_cert.display());
    for (sets, names) in [
        (vec!["backup.schedule=\"0 0 25 * * *\""], "backup.schedule"),
        (
            vec![
                "backup.schedule=\"0 0 3 * * *\"",
                "backup.timezone=\"Mars/Olympus_Mons\"",
            ],
            "Mars/Olympus_Mons",
        ),
        (vec!["redis.url=\"redis://cache:notaport\""], "redis.url"),
        (vec![cert.as_str(), key.as_str()], "no-such-cert.pem"),
    ] {
        let o = check(&sets);
        assert!(
            !o.status.success(),
            "{sets:?} was accepted: {}",
            common::said(&o)
        );
        assert!(
            common::said(&o).contains(names),
            "{sets:?}: the error does not name {names}: {}",
            common::said(&o)
        );
    }
    assert!(!data.exists(), "--check-config wrote the data directory");
}
