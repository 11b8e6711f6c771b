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
        "api.body_timeout_ms=1000".to_string(),
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
    // Writes are audited, and admin reads; reads otherwise not; refused writes too.
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
        lines.iter().all(
            |l| l["action"].as_str().is_some_and(|a| !a.starts_with("GET ")
                || a.starts_with("GET /v1/admin/")
                || a.starts_with("GET /v1/debug/"))
        ),
        "reads are not audited, but for admin routes: {audit}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "GET /v1/admin/log" && l["status"] == 200),
        "an admin read is audited: {audit}"
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

/// One HTTP/1.1 request written byte for byte (like `curl --path-as-is`): the path goes out
/// exactly as given. The status, and the body as text.
fn raw_call(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting: {e}"));
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body = if method == "GET" || method == "DELETE" {
        ""
    } else {
        "{}"
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status in {text:?}"));
    (status, text)
}

/// Spellings of `path` that a router might take for it: each segment percent-encoded
/// (one byte of it), double-encoded, and in mixed case. The first is the plain path.
fn spellings(path: &str) -> Vec<(String, &'static str)> {
    let segs: Vec<&str> = path.split('/').collect();
    let mut out = vec![(path.to_string(), "plain")];
    for (i, seg) in segs.iter().enumerate() {
        let Some(c) = seg.chars().next() else {
            continue;
        };
        let rest = &seg[c.len_utf8()..];
        let with = |s: String| {
            let mut v: Vec<String> = segs.iter().map(|x| x.to_string()).collect();
            v[i] = s;
            v.join("/")
        };
        out.push((with(format!("%{:02X}{rest}", c as u32)), "encoded"));
        out.push((with(format!("%{:02x}{rest}", c as u32)), "encoded"));
        out.push((with(format!("%25{:02X}{rest}", c as u32)), "double-encoded"));
        let mixed: String = seg
            .chars()
            .enumerate()
            .map(|(j, c)| {
                if j % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        if mixed != *seg {
            out.push((with(mixed), "mixed case"));
        }
    }
    out
}

#[test]
fn roles_are_decided_by_the_matched_route_whatever_the_path_spelling() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = start(dir.path());
    let operator = must_token(&node, KEYS[1].1);
    let viewer = must_token(&node, KEYS[2].1);
    let admin = must_token(&node, KEYS[0].1);
    // Every route of the table, with its id filled in.
    let routes: &[(&str, &str, &str)] = &[
        ("POST", "/v1/tasks", "operator"),
        ("GET", "/v1/tasks", "viewer"),
        ("POST", "/v1/tasks/batch", "operator"),
        ("POST", "/v1/tasks/wait", "viewer"),
        ("GET", "/v1/tasks/1", "viewer"),
        ("GET", "/v1/tasks/1/wait", "viewer"),
        ("POST", "/v1/tasks/1/cancel", "operator"),
        ("GET", "/v1/dlq", "viewer"),
        ("POST", "/v1/dlq/1/requeue", "operator"),
        ("POST", "/v1/jobs", "operator"),
        ("GET", "/v1/jobs", "viewer"),
        ("GET", "/v1/jobs/1", "viewer"),
        ("DELETE", "/v1/jobs/1", "operator"),
        ("GET", "/v1/events", "viewer"),
        ("GET", "/v1/kernels", "viewer"),
        ("GET", "/v1/cluster", "viewer"),
        ("POST", "/v1/cluster/learners", "admin"),
        ("POST", "/v1/cluster/members/1/promote", "admin"),
        ("DELETE", "/v1/cluster/members/9", "admin"),
        ("GET", "/v1/nodes", "viewer"),
        ("GET", "/v1/alerts", "viewer"),
        ("GET", "/v1/admin/log", "admin"),
        ("PUT", "/v1/admin/log", "admin"),
        ("POST", "/v1/admin/reload", "admin"),
        ("GET", "/v1/admin/snapshot", "admin"),
        ("POST", "/v1/debug/fail/monitor", "admin"),
        ("PUT", "/v1/debug/net", "admin"),
        ("GET", "/v1/debug/net", "admin"),
    ];
    let mut checked = 0;
    for (method, path, need) in routes {
        let weaker: Vec<(&str, &str)> = match *need {
            "admin" => vec![("viewer", viewer.as_str()), ("operator", operator.as_str())],
            "operator" => vec![("viewer", viewer.as_str())],
            _ => vec![],
        };
        for (spelled, how) in spellings(path) {
            // No token: a spelling that reaches the route is refused 401; one that does not
            // reach any route is 404/405. Nothing else, ever.
            let (status, text) = raw_call(node.port, method, &spelled, None);
            let reaches = status == 401;
            assert!(
                reaches || status == 404 || status == 405,
                "{method} {spelled} ({how}) without a token: {status}\n{text}"
            );
            if how == "plain" || how == "encoded" {
                // The router decodes %XX: an encoded segment is the same route.
                assert!(
                    reaches,
                    "{method} {spelled} ({how}) did not reach its route: {status}"
                );
            }
            for (role, token) in &weaker {
                let (status, text) = raw_call(node.port, method, &spelled, Some(token));
                let want = if reaches { 403 } else { status };
                assert!(
                    status == want && (status == 403 || status == 404 || status == 405),
                    "{method} {spelled} ({how}) as {role} (needs {need}): {status}\n{text}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 150, "only {checked} refusals checked");
    // The open routes stay open in every spelling that reaches them.
    let (status, _) = raw_call(node.port, "GET", "/v1/openapi%2Ejson", None);
    assert_eq!(status, 200);
    // An admin's snapshot download (a read) is audited; so are refusals of a valid token,
    // with its subject.
    let (status, _) = raw_call(node.port, "GET", "/v1/%61dmin/snapshot", Some(&admin));
    assert_eq!(status, 200);
    let audit = std::fs::read_to_string(dir.path().join("data").join("audit.log"))
        .unwrap_or_else(|e| panic!("audit log: {e}"));
    let lines: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        lines.iter().any(|l| l["action"] == "GET /v1/admin/snapshot"
            && l["status"] == 200
            && l["role"] == "admin"
            && l["path"] == "/v1/%61dmin/snapshot"),
        "the snapshot download is not audited: {audit}"
    );
    assert!(
        lines.iter().any(|l| l["action"] == "GET /v1/admin/snapshot"
            && l["status"] == 403
            && l["role"] == "viewer"
            && l["subject"].as_str().is_some_and(|s| s.starts_with("key:"))),
        "a viewer's refused snapshot is not audited with its subject: {audit}"
    );
    assert!(
        lines.iter().any(|l| l["action"] == "POST /v1/tasks"
            && l["status"] == 403
            && l["reason"] == "forbidden"
            && l["subject"].as_str().is_some_and(|s| s.starts_with("key:"))),
        "a viewer's refused write is not audited with its subject: {audit}"
    );
}

#[test]
fn unauthenticated_floods_cannot_grow_the_audit_log() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = start(dir.path());
    let audit_path = dir.path().join("data").join("audit.log");
    let before = std::fs::metadata(&audit_path).map_or(0, |m| m.len());
    let long = format!("/v1/tasks/{}/cancel", "A".repeat(4000));
    let mut refused = 0;
    for _ in 0..2000 {
        let (status, _) = raw_call(node.port, "POST", &long, None);
        assert!(status == 401 || status == 429, "{status}");
        refused += 1;
    }
    let after = std::fs::metadata(&audit_path).map_or(0, |m| m.len());
    assert!(
        after - before < 4096,
        "{refused} refused calls grew the audit log by {} bytes",
        after - before
    );
    let audit = std::fs::read_to_string(&audit_path).unwrap_or_default();
    let line = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["action"] == "POST /v1/tasks/{id}/cancel")
        .unwrap_or_else(|| panic!("the refusal is not audited at all: {audit}"));
    assert_eq!(line["reason"], "missing_token", "{line}");
    assert!(
        line["path"].as_str().is_some_and(|p| p.len() < 400),
        "the path is kept whole: {line}"
    );
}

#[test]
fn the_address_limit_comes_before_any_token_is_looked_at() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut sets = vec![
        "auth.enabled=true".to_string(),
        "limits.address_requests_per_second=5".to_string(),
        "limits.address_burst=5".to_string(),
    ];
    sets.push(format!(
        "auth.jwt_secret_file=\"{}\"",
        dir.path().join("secret").display()
    ));
    let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    let node = Node::must_start(dir.path(), &refs);
    let statuses: Vec<u16> = (0..40)
        .map(|_| raw_call(node.port, "GET", "/v1/tasks", Some("not.a.token")).0)
        .collect();
    assert!(
        statuses.iter().take(5).all(|s| *s == 401),
        "the burst reaches authentication: {statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "40 quick calls at 5/s from one address were all looked at: {statuses:?}"
    );
    // Health and metrics stay reachable.
    assert_eq!(raw_call(node.port, "GET", "/healthz", None).0, 200);
}

#[test]
fn a_removed_api_key_revokes_its_tokens_at_the_next_reload() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = start(dir.path());
    let admin = must_token(&node, KEYS[0].1);
    let operator = must_token(&node, KEYS[1].1);
    assert_eq!(
        node.must_call("GET", "/v1/tasks", Some(&operator), None)
            .status,
        200
    );
    // The operator's key is replaced; the configuration is read again.
    std::fs::write(
        dir.path().join("operator.key"),
        "ops-a-brand-new-key-0123456789\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = node.must_call("POST", "/v1/admin/reload", Some(&admin), Some(&json!({})));
    assert_eq!(r.status, 200, "{}", r.body);
    let a = node.must_call("GET", "/v1/tasks", Some(&operator), None);
    assert_eq!(
        (a.status, a.body["error"]["code"].clone()),
        (401, json!("token_revoked")),
        "{}",
        a.body
    );
    // The new key works; the admin's token was not touched.
    let fresh = must_token(&node, "ops-a-brand-new-key-0123456789");
    assert_eq!(
        node.must_call("GET", "/v1/tasks", Some(&fresh), None)
            .status,
        200
    );
    assert_eq!(
        node.must_call("GET", "/v1/tasks", Some(&admin), None)
            .status,
        200
    );
}

#[test]
fn hostile_queries_and_slow_bodies_get_clear_errors() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = start(dir.path());
    let _ = node.must_call(
        "POST",
        "/v1/auth/token",
        None,
        Some(&json!({ "api_key": "x" })),
    );
    let viewer = must_token(&node, KEYS[2].1);
    let operator = must_token(&node, KEYS[1].1);
    // A max_secs that would overflow the clock: 400, and no panic in the log.
    let a = node.must_call(
        "GET",
        "/v1/events?max_secs=18446744073709551615",
        Some(&viewer),
        None,
    );
    assert_eq!(
        (a.status, a.body["error"]["code"].clone()),
        (400, json!("invalid_query")),
        "{}",
        a.body
    );
    assert!(!node.log().contains("panicked"), "{}", node.log());
    // A learner whose rpc address points at a metadata service is refused.
    let admin = must_token(&node, KEYS[0].1);
    let a = node.must_call(
        "POST",
        "/v1/cluster/learners",
        Some(&admin),
        Some(&json!({ "id": 4, "rpc": "169.254.169.254:80", "api": "127.0.0.1:7104" })),
    );
    assert_eq!(
        (a.status, a.body["error"]["code"].clone()),
        (400, json!("invalid_member")),
        "{}",
        a.body
    );
    // A body that trickles: 408 once api.body_timeout_ms (1 s here) is up, and the
    // connection is closed.
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap_or_else(|e| panic!("{e}"));
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {operator}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    s.write_all(head.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    // (Without the deadline the read below gives up after its own 30 s with nothing.)
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
}

#[test]
fn a_valid_token_flooding_over_its_limit_is_counted_in_the_audit_log_not_written_each_time() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut sets = vec![
        "auth.enabled=true".to_string(),
        "limits.requests_per_second=5".to_string(),
        "limits.burst=5".to_string(),
        format!(
            "auth.jwt_secret_file=\"{}\"",
            dir.path().join("secret").display()
        ),
    ];
    let key = dir.path().join("viewer.key");
    std::fs::write(&key, format!("{}\n", KEYS[2].1)).unwrap_or_else(|e| panic!("{e}"));
    sets.push(format!(
        "auth.api_keys=[{{ key_file = \"{}\", role = \"viewer\" }}]",
        key.display()
    ));
    let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    let node = Node::must_start(dir.path(), &refs);
    let viewer = must_token(&node, KEYS[2].1);
    let limited = (0..60)
        .map(|_| node.must_call("GET", "/v1/tasks", Some(&viewer), None))
        .filter(|a| a.status == 429)
        .count();
    assert!(
        limited > 20,
        "only {limited} of 60 quick calls were limited"
    );
    let audit = std::fs::read_to_string(dir.path().join("data").join("audit.log"))
        .unwrap_or_else(|e| panic!("audit log: {e}"));
    let lines: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &Value| l["status"] == 429)
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{limited} refusals gave {} lines: {audit}",
        lines.len()
    );
    assert_eq!(lines[0]["role"], "viewer", "{}", lines[0]);
    assert!(
        lines[0]["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("key:")),
        "{}",
        lines[0]
    );
}
