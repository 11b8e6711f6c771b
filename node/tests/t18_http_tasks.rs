//! HTTP tasks on a real node against an HTTP server this test runs: method, body, headers and
//! status arrive as sent; a 503 is retried; an address not in `executor.http_allow` (the
//! node's own API, a redirect elsewhere) fails at once with `http_denied`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Node;
use serde_json::{json, Value};

/// A small HTTP/1.1 server (one request per connection) on 127.0.0.1.
struct Server {
    port: u16,
    /// Calls of /flaky, and requests of any kind.
    flaky: Arc<AtomicU32>,
    hits: Arc<AtomicU32>,
}

fn answer(stream: &mut std::net::TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

impl Server {
    fn start(elsewhere: u16) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
        let flaky = Arc::new(AtomicU32::new(0));
        let hits = Arc::new(AtomicU32::new(0));
        let (f, n) = (flaky.clone(), hits.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                n.fetch_add(1, Ordering::SeqCst);
                let mut r = BufReader::new(match s.try_clone() {
                    Ok(c) => c,
                    Err(_) => continue,
                });
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                );
                let mut headers = serde_json::Map::new();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.trim().split_once(':') {
                        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                        if k == "content-length" {
                            len = v.parse().unwrap_or(0);
                        }
                        headers.insert(k, json!(v));
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                match path.as_str() {
                    "/echo" => {
                        let b = json!({
                            "method": method,
                            "headers": headers,
                            "body": String::from_utf8_lossy(&body),
                        });
                        answer(
                            &mut s,
                            201,
                            &[("x-reply", "yes".into())],
                            b.to_string().as_bytes(),
                        )
                    }
                    "/flaky" => {
                        if f.fetch_add(1, Ordering::SeqCst) < 2 {
                            answer(&mut s, 503, &[], b"busy")
                        } else {
                            answer(&mut s, 200, &[], b"{\"ok\":true}")
                        }
                    }
                    "/teapot" => answer(&mut s, 418, &[], b"no"),
                    "/away" => answer(
                        &mut s,
                        302,
                        &[("location", format!("http://127.0.0.1:{elsewhere}/echo"))],
                        b"",
                    ),
                    "/big" => answer(&mut s, 200, &[], &vec![b'x'; 2 * 1024 * 1024]),
                    _ => answer(&mut s, 404, &[], b"?"),
                }
            }
        });
        Server { port, flaky, hits }
    }
}

#[test]
fn http_tasks_call_allowed_hosts_only_and_retry_server_errors() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Another server the redirect points at: running, but not allowed.
    let other = Server::start(1);
    let server = Server::start(other.port);
    let allow = format!("executor.http_allow=[\"127.0.0.1:{}\"]", server.port);
    let node = Node::must_start(
        &dir.path().join("n1"),
        &[&allow, "executor.max_result_mb=1"],
    );
    let url = |p: &str| format!("http://127.0.0.1:{}{p}", server.port);
    let run = |body: Value| {
        let p = node.must_post("/v1/tasks", &body);
        assert_eq!(p.status, 201, "{}", p.body);
        node.wait_for_task_end(p.body["id"].as_u64().unwrap_or(0), Duration::from_secs(60))
    };
    // Method, headers and body arrive; status, headers and the JSON body come back.
    let t = run(json!({ "http": { "method": "PUT", "url": url("/echo"),
        "headers": { "X-Token": "t0k" }, "body": { "n": 1 } } }));
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(t["isolation"], "http", "{t}");
    let r = &t["result"];
    assert_eq!(r["status"], 201, "{t}");
    assert_eq!(r["headers"]["x-reply"], "yes", "{t}");
    assert_eq!(r["body"]["method"], "PUT", "{t}");
    assert_eq!(r["body"]["headers"]["x-token"], "t0k", "{t}");
    assert_eq!(
        r["body"]["headers"]["content-type"], "application/json",
        "{t}"
    );
    assert_eq!(r["body"]["body"], "{\"n\":1}", "{t}");
    // A header value is not shown back in the task's view.
    let full = node.must_get(&format!("/v1/tasks/{}?view=full", t["id"]));
    let submitted = &full.body["submitted"]["http"];
    assert_eq!(submitted["headers"]["X-Token"], "(hidden)", "{}", full.body);
    assert!(!submitted.to_string().contains("t0k"), "{}", full.body);
    // 503 twice, then 200: retried under the task's policy.
    let t = run(json!({ "http": { "url": url("/flaky") },
        "retry": { "max_attempts": 3, "backoff_ms": 10 } }));
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(t["attempt"], 3, "{t}");
    assert_eq!(server.flaky.load(Ordering::SeqCst), 3);
    // Another status outside expect_status: failed at once, the answer kept.
    let t = run(json!({ "http": { "url": url("/teapot") }, "retry": { "max_attempts": 3 } }));
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "http_status", "{t}");
    assert_eq!(t["attempt"], 1, "{t}");
    // ... unless the task expects it.
    let t = run(json!({ "http": { "url": url("/teapot"), "expect_status": [418, 418] } }));
    assert_eq!(t["status"], "succeeded", "{t}");
    // Not allowed: the node's own API, and a redirect to a running server elsewhere.
    let own = format!("{}/v1/cluster", node.url);
    for target in [own, url("/away")] {
        let t = run(json!({ "http": { "url": target }, "retry": { "max_attempts": 3 } }));
        assert_eq!(t["status"], "failed", "{t}");
        assert_eq!(t["error"]["code"], "http_denied", "{t}");
        assert_eq!(t["attempt"], 1, "denied is not retried: {t}");
        assert!(
            t["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("executor.http_allow"),
            "{t}"
        );
    }
    assert_eq!(
        other.hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    // A body over executor.max_result_mb.
    let t = run(json!({ "http": { "url": url("/big") } }));
    assert_eq!(t["error"]["code"], "result_too_large", "{t}");
    // Bad specs are refused at submission.
    for (bad, field) in [
        (json!({ "http": { "url": "ftp://x/" } }), "http.url"),
        (
            json!({ "http": { "url": url("/echo"), "method": "BREW" } }),
            "http.method",
        ),
        (
            json!({ "http": { "url": url("/echo"), "headers": { "a b": "c" } } }),
            "http.headers",
        ),
        (
            json!({ "http": { "url": url("/echo"), "expect_status": [300, 200] } }),
            "http.expect_status",
        ),
        (
            json!({ "http": { "url": url("/echo") }, "input": {} }),
            "input",
        ),
    ] {
        let a = node.must_post("/v1/tasks", &bad);
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert_eq!(a.body["error"]["details"]["field"], field, "{}", a.body);
    }
}
