//! Authentication and roles on a real node: every route × {no token, expired, tampered,
//! too weak a role, the right role}; tokens from API keys; secrets stay out of the logs.

mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};

const KEYS: [(&str, &str); 3] = [
    ("admin", "adm-0123456789abcdef-secretkey"),
    ("operator", "ops-0123456789abcdef-secretkey"),
    ("viewer", "viw-0123456789abcdef-secretkey"),
];

fn start(dir: &Path) -> Node {
    let mut sets = vec![
        "auth.enabled=true".to_string(),
        "debug.fault_injection=true".to_string(),
        format!("auth.jwt_secret_file=\"{}\"", dir.join("secret").display()),
    ];
    let mut keys = Vec::new();
    for (role, key) in KEYS {
        let f = dir.join(format!("{role}.key"));
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&f, format!("{key}\n")).unwrap_or_else(|e| panic!("{e}"));
        keys.push(format!(
            "{{ key_file = \"{}\", role = \"{role}\" }}",
            f.display()
        ));
    }
    sets.push(format!("auth.api_keys=[{}]", keys.join(", ")));
    let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    Node::must_start(dir, &refs)
}

#[derive(serde::Serialize)]
struct Claims {
    sub: String,
    role: String,
    iat: u64,
    exp: u64,
}

#[test]
fn every_route_checks_its_role_and_tokens_are_verified() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = start(dir.path());
    // The secret was created, readable by the owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("secret"))
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    assert_eq!(mode, 0o600, "the JWT secret file mode is {mode:o}");

    let admin = must_token(&node, KEYS[0].1);
    let operator = must_token(&node, KEYS[1].1);
    let viewer = must_token(&node, KEYS[2].1);
    let bad = node.must_call(
        "POST",
        "/v1/auth/token",
        None,
        Some(&json!({ "api_key": "not-a-key-at-all-000" })),
    );
    assert_eq!(
        (bad.status, bad.body["error"]["code"].clone()),
        (401, json!("invalid_api_key"))
    );

    // An expired token signed with the node's own secret, and a tampered one.
    let secret = std::fs::read_to_string(dir.path().join("secret")).unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &Claims {
            sub: "key:test".into(),
            role: "admin".into(),
            iat: now - 7200,
            exp: now - 3600,
        },
        &jsonwebtoken::EncodingKey::from_secret(secret.trim().as_bytes()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tampered = {
        let mut t = admin.clone();
        let last = t.pop().unwrap_or('A');
        t.push(if last == 'A' { 'B' } else { 'A' });
        t
    };

    // A task to read, cancel and requeue.
    let a = node.must_call(
        "POST",
        "/v1/tasks",
        Some(&operator),
        Some(&json!({ "kernel": "stats", "input": { "values": [1, 2] } })),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["id"].as_u64().unwrap_or(0);
    // One that stays pending (no edge node here), to cancel.
    let a = node.must_call(
        "POST",
        "/v1/tasks",
        Some(&operator),
        Some(&json!({ "kernel": "stats", "input": { "values": [1] }, "constraints": { "tier": "edge" } })),
    );
    let stuck = a.body["id"].as_u64().unwrap_or(0);
    let task = json!({ "kernel": "stats", "input": { "values": [1, 2] } });
    let job = json!({ "name": "j", "schedule": "0 0 0 1 1 *", "task": task });

    // (method, path, body, role needed, wanted status with that role)
    let routes: Vec<(&str, String, Option<Value>, &str, u16)> = vec![
        ("GET", "/v1/tasks".into(), None, "viewer", 200),
        ("GET", format!("/v1/tasks/{id}"), None, "viewer", 200),
        (
            "GET",
            format!("/v1/tasks/{id}/wait?timeout=1ms"),
            None,
            "viewer",
            200,
        ),
        ("GET", "/v1/kernels".into(), None, "viewer", 200),
        ("GET", "/v1/cluster".into(), None, "viewer", 200),
        ("GET", "/v1/nodes".into(), None, "viewer", 200),
        ("GET", "/v1/dlq".into(), None, "viewer", 200),
        ("GET", "/v1/jobs".into(), None, "viewer", 200),
        (
            "POST",
            "/v1/tasks".into(),
            Some(task.clone()),
            "operator",
            201,
        ),
        (
            "POST",
            "/v1/tasks/batch".into(),
            Some(json!({ "tasks": [task] })),
            "operator",
            201,
        ),
        ("POST", "/v1/jobs".into(), Some(job), "operator", 201),
        ("DELETE", "/v1/jobs/1".into(), None, "operator", 200),
        (
            "POST",
            format!("/v1/tasks/{stuck}/cancel"),
            Some(json!({})),
            "operator",
            200,
        ),
        (
            "POST",
            format!("/v1/dlq/{id}/requeue"),
            Some(json!({})),
            "operator",
            409,
        ),
        ("GET", "/v1/debug/net".into(), None, "admin", 200),
        ("PUT", "/v1/debug/net".into(), Some(json!({})), "admin", 200),
        (
            "POST",
            "/v1/cluster/members/9/promote".into(),
            Some(json!({})),
            "admin",
            404,
        ),
        ("DELETE", "/v1/cluster/members/9".into(), None, "admin", 404),
        ("GET", "/v1/admin/log".into(), None, "admin", 200),
        (
            "PUT",
            "/v1/admin/log".into(),
            Some(json!({ "filter": "info" })),
            "admin",
            200,
        ),
    ];
    let order = ["viewer", "operator", "admin"];
    let token_of = |role: &str| match role {
        "admin" => admin.as_str(),
        "operator" => operator.as_str(),
        _ => viewer.as_str(),
    };
    for (method, path, body, need, want) in &routes {
        let call = |t: Option<&str>| node.must_call(method, path, t, body.as_ref());
        let a = call(None);
        assert_eq!(
            (a.status, a.body["error"]["code"].clone()),
            (401, json!("missing_token")),
            "{method} {path} without a token: {}",
            a.body
        );
        let a = call(Some(&expired));
        assert_eq!(
            (a.status, a.body["error"]["code"].clone()),
            (401, json!("token_expired")),
            "{method} {path} with an expired token"
        );
        let a = call(Some(&tampered));
        assert_eq!(
            (a.status, a.body["error"]["code"].clone()),
            (401, json!("invalid_token")),
            "{method} {path} with a tampered token"
        );
        let need_at = order.iter().position(|r| r == need).unwrap_or(0);
        for weaker in &order[..need_at] {
            let a = call(Some(token_of(weaker)));
            assert_eq!(a.status, 403, "{method} {path} as {weaker}: {}", a.body);
            assert_eq!(a.body["error"]["details"]["needs_role"], json!(need));
        }
        for enough in &order[need_at..] {
            // Writes are not repeated with each stronger role: the first must work.
            let a = call(Some(token_of(enough)));
            assert_eq!(a.status, *want, "{method} {path} as {enough}: {}", a.body);
            if *method != "GET" {
                break;
            }
        }
    }
    // Open routes need nothing (the dashboard page asks for a token itself).
    for path in ["/healthz", "/readyz", "/metrics", "/"] {
        assert_eq!(
            node.must_call("GET", path, None, None).status,
            200,
            "{path}"
        );
    }
    // Writes are audited, reads are not; refused writes too.
    let audit = std::fs::read_to_string(dir.path().join("data").join("audit.log"))
        .unwrap_or_else(|e| panic!("audit log: {e}"));
    let lines: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l}: {e}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["action"] == "POST /v1/tasks"
            && l["role"] == "operator"
            && l["outcome"] == "ok"
            && l["status"] == 201
            && l["subject"].as_str().is_some_and(|s| s.starts_with("key:"))),
        "no audited submission: {audit}"
    );
    assert!(
        lines.iter().any(|l| l["action"] == "POST /v1/tasks"
            && l["outcome"] == "denied"
            && l["reason"] == "missing_token"),
        "no audited refusal: {audit}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "POST /v1/auth/token" && l["status"] == 200),
        "token issues are audited: {audit}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["action"].as_str().is_some_and(|a| !a.starts_with("GET "))),
        "reads are not audited"
    );
    // No key, secret or token in the log, the audit log or the metrics; the cluster RPC
    // secret (created in the data dir) neither.
    let log = node.log();
    let metrics = node.must_get_text("/metrics");
    let cluster_secret = std::fs::read_to_string(dir.path().join("data").join("cluster.secret"))
        .unwrap_or_else(|e| panic!("the cluster secret was not created: {e}"));
    assert!(
        cluster_secret.trim().len() >= 32,
        "{}",
        cluster_secret.len()
    );
    for s in KEYS.iter().map(|(_, k)| k.to_string()).chain([
        secret.trim().to_string(),
        admin.clone(),
        cluster_secret.trim().to_string(),
    ]) {
        assert!(!log.contains(&s), "a secret is in the node's log");
        assert!(!audit.contains(&s), "a secret is in the audit log");
        assert!(!metrics.contains(&s), "a secret is in /metrics");
    }
}

#[test]
fn with_auth_off_everything_is_open_and_the_node_says_so() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(dir.path(), &["auth.enabled=false"]);
    let a = node.must_call(
        "POST",
        "/v1/tasks",
        None,
        Some(&json!({ "kernel": "stats", "input": { "values": [1] } })),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    assert!(node.log().contains("AUTHENTICATION IS OFF"));
    let t = node.must_call(
        "POST",
        "/v1/auth/token",
        None,
        Some(&json!({ "api_key": "x" })),
    );
    assert_eq!(t.body["error"]["code"], "auth_disabled", "{}", t.body);
}

#[test]
fn requests_over_the_rate_limit_get_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(
        dir.path(),
        &["limits.requests_per_second=5", "limits.burst=5"],
    );
    let answers: Vec<Answer> = (0..30)
        .map(|_| node.must_call("GET", "/v1/kernels", None, None))
        .collect();
    let limited: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert!(
        !limited.is_empty(),
        "30 quick calls at 5/s (burst 5) were all served"
    );
    assert!(
        answers.iter().take(5).all(|a| a.status == 200),
        "the burst is served"
    );
    for a in &limited {
        a.must_be_rate_limited();
    }
    // Health and metrics are never limited; the bucket refills.
    assert_eq!(node.must_call("GET", "/healthz", None, None).status, 200);
    wait_until(
        "the bucket to refill",
        std::time::Duration::from_secs(10),
        || {
            let a = node.must_call("GET", "/v1/kernels", None, None);
            if a.status == 200 {
                Ok(())
            } else {
                Err(format!("HTTP {}", a.status))
            }
        },
    );
}
