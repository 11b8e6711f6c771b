//! The dashboard at `/`, in a real headless Chromium driven through WebDriver (chromedriver,
//! both from Debian's packages, installed by ./scripts/setup), against a 3-node cluster with
//! authentication on: before sign-in the page shows only the sign-in (no empty panels that
//! would look like a healthy, empty cluster); it signs in with a viewer key, shows the three
//! members with the leader marked, counts tasks by state, draws finished tasks live from
//! /v1/events on a time axis, lists the cluster's failed tasks (also one that failed before the
//! page was opened) with their errors, opens a task by id with what it was submitted with, and
//! follows a leader change. A screenshot is saved to target/dashboard.png.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const VIEWER_KEY: &str = "viw-dashboard-0123456789abcdef";
const ADMIN_KEY: &str = "adm-dashboard-0123456789abcdef";

/// chromedriver, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(prog: &str) -> PathBuf {
    ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"]
        .iter()
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{prog} is not installed: run ./scripts/setup (Debian packages chromium, chromium-driver)"))
}

fn start_driver(dir: &Path) -> Driver {
    let port = free_port();
    let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(find("chromedriver"))
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("starting chromedriver: {e}"));
    let d = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_until(
        "chromedriver to be ready",
        Duration::from_secs(30),
        || match ureq::get(&format!("{}/status", d.url)).call() {
            Ok(r) => {
                let v: Value = r.into_json().map_err(|e| e.to_string())?;
                if v["value"]["ready"] == true {
                    Ok(())
                } else {
                    Err(v.to_string())
                }
            }
            Err(e) => Err(e.to_string()),
        },
    );
    d
}

/// One WebDriver session.
struct Browser {
    base: String,
}

impl Browser {
    fn open(d: &Driver) -> Browser {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": find("chromium").display().to_string(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu",
                         "--disable-background-networking", "--disable-dev-shm-usage",
                         "--window-size=1280,900"]
            }
        }}});
        let v = call(ureq::post(&format!("{}/session", d.url)), Some(caps));
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"));
        Browser {
            base: format!("{}/session/{id}", d.url),
        }
    }

    fn post(&self, path: &str, body: Value) -> Value {
        call(ureq::post(&format!("{}{path}", self.base)), Some(body))
    }

    fn go(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }

    /// Run `script` (a function body) in the page; its return value.
    fn js(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
    }

    fn element(&self, css: &str) -> String {
        let v = self.post("/element", json!({"using": "css selector", "value": css}));
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.post(&format!("/element/{e}/value"), json!({ "text": text }));
    }

    fn click(&self, css: &str) {
        let e = self.element(css);
        self.post(&format!("/element/{e}/click"), json!({}));
    }

    fn screenshot(&self) -> Vec<u8> {
        let v = call(ureq::get(&format!("{}/screenshot", self.base)), None);
        decode_base64(v.as_str().unwrap_or_else(|| panic!("no screenshot: {v}")))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(&self.base).call();
    }
}

/// A WebDriver call; its `value`.
fn call(req: ureq::Request, body: Option<Value>) -> Value {
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let v: Value = match res {
        Ok(r) => r.into_json().unwrap_or_else(|e| panic!("{e}")),
        Err(ureq::Error::Status(code, r)) => {
            panic!(
                "WebDriver answered {code}: {}",
                r.into_string().unwrap_or_default()
            )
        }
        Err(e) => panic!("WebDriver: {e}"),
    };
    v["value"].clone()
}

fn decode_base64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("the screenshot is not base64: {e}"))
}

/// Wait until the page's `script` returns something `ok` accepts.
fn wait_page(b: &Browser, what: &str, script: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_until(what, Duration::from_secs(30), || {
        let v = b.js(script);
        if ok(&v) {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
}

#[test]
fn the_dashboard_shows_the_cluster_live_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    std::fs::write(d.join("viewer.key"), VIEWER_KEY).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(d.join("admin.key"), ADMIN_KEY).unwrap_or_else(|e| panic!("{e}"));
    let sets = [
        "auth.enabled=true".to_string(),
        format!("auth.jwt_secret_file=\"{}\"", d.join("jwt.secret").display()),
        format!(
            "auth.api_keys=[{{ key_file = \"{}\", role = \"viewer\" }}, {{ key_file = \"{}\", role = \"admin\" }}]",
            d.join("viewer.key").display(),
            d.join("admin.key").display()
        ),
    ];
    let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    let mut c = Cluster::must_start(&d.join("cluster"), 3, &refs);
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let entry = (1..=3).find(|i| *i != leader).unwrap_or(1);
    let admin = must_token(c.node(entry), ADMIN_KEY);

    // A task that failed before anyone opened the page.
    let early = c.node(entry).must_call(
        "POST",
        "/v1/tasks",
        Some(&admin),
        Some(&json!({"exec": {"argv": ["sh", "-c", "echo early >&2; exit 4"]}, "retry": {"max_attempts": 1}})),
    );
    assert_eq!(early.status, 201, "{}", early.body);
    let early = early.body["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("{}", early.body));
    let w = c.node(entry).must_call(
        "GET",
        &format!("/v1/tasks/{early}/wait?timeout=60s"),
        Some(&admin),
        None,
    );
    assert_eq!(w.body["status"], "failed", "{}", w.body);

    let driver = start_driver(d);
    let b = Browser::open(&driver);
    b.go(&format!("{}/", c.node(entry).url));
    // Auth is on: the page asks for a key; a viewer key signs in.
    wait_page(
        &b,
        "the sign-in form",
        "return getComputedStyle(document.getElementById('login')).display",
        |v| v == "block",
    );
    // ... and nothing else: no panels that would read as an empty, healthy cluster.
    let before = b.js(
        "return { main: getComputedStyle(document.getElementById('main')).display,
                  meta: document.getElementById('meta').textContent,
                  text: document.body.innerText };",
    );
    assert_eq!(before["main"], "none", "{before}");
    assert_eq!(before["meta"], "sign in to see the cluster", "{before}");
    let text = before["text"].as_str().unwrap_or_default();
    for absent in ["Recent failures", "Alerts", "Members", "none"] {
        assert!(
            !text.contains(absent),
            "before sign-in the page shows {absent:?}: {text}"
        );
    }
    b.type_into("#secret", VIEWER_KEY);
    b.click("#go");
    let members = wait_page(
        &b,
        "three members, one of them the leader, all up, and the event stream live",
        "const rows = [...document.querySelectorAll('#members tbody tr')];
         return { n: rows.length,
                  leaders: rows.filter(r => r.classList.contains('leader')).map(r => Number(r.dataset.node)),
                  up: rows.filter(r => r.dataset.state === 'up').length,
                  leaderText: (document.querySelector('#members tr.leader .badge') || {}).textContent,
                  live: document.getElementById('live').textContent };",
        |v| v["n"] == 3 && v["up"] == 3 && v["leaders"].as_array().is_some_and(|l| l.len() == 1) && v["live"] == "live",
    );
    assert_eq!(members["leaders"][0], leader, "{members}");
    assert_eq!(members["leaderText"], "leader");

    // Work through the API: 20 that succeed and one that fails.
    let mut tasks: Vec<Value> = (0..20)
        .map(|i| json!({"kernel": "stats", "input": {"values": [i, 1, 2]}}))
        .collect();
    tasks.push(json!({"exec": {"argv": ["sh", "-c", "exit 3"]}, "retry": {"max_attempts": 1}}));
    let a = c.node(entry).must_call(
        "POST",
        "/v1/tasks/batch",
        Some(&admin),
        Some(&json!({ "tasks": tasks })),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let failing = a.body["ids"][20]
        .as_u64()
        .unwrap_or_else(|| panic!("{}", a.body));
    let shown = wait_page(
        &b,
        "the task counts, the chart's rate and the failure with its error",
        &format!(
            "const n = s => Number((document.querySelector('.tile[data-status=\"' + s + '\"] .n') || {{}}).textContent);
             const f = document.querySelector('#failures li[data-task=\"{failing}\"]');
             return {{ succeeded: n('succeeded'), failed: n('failed'),
                      rate: document.getElementById('rate').textContent,
                      failure: f ? f.textContent : null }};"
        ),
        |v| {
            v["succeeded"] == 20
                && v["failed"] == 2
                && v["failure"].as_str().is_some_and(|f| f.contains("nonzero_exit"))
                && v["rate"].as_str().is_some_and(|r| !r.starts_with("· 0.0"))
        },
    );
    println!("dashboard shows: {shown}");

    // The failure from before the page opened is listed too, with its error; the chart has a
    // time axis with a tick every 15 s.
    let listed = wait_page(
        &b,
        "the earlier failure in the list and the chart's time axis",
        &format!(
            "const f = document.querySelector('#failures li[data-task=\"{early}\"]');
             return {{ early: f ? f.textContent : null,
                      ids: [...document.querySelectorAll('#failures li[data-task]')].map(l => Number(l.dataset.task)),
                      ticks: document.getElementById('chart').dataset.ticks }};"
        ),
        |v| v["early"].as_str().is_some_and(|f| f.contains("nonzero_exit")),
    );
    assert_eq!(
        listed["ids"],
        json!([failing, early]),
        "the newest failure first: {listed}"
    );
    let ticks: Vec<&str> = listed["ticks"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .collect();
    assert_eq!(ticks.len(), 4, "a tick every 15 s over 60 s: {listed}");
    for t in &ticks {
        let parts: Vec<&str> = t.split(':').collect();
        assert!(
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_digit())),
            "tick {t:?} is not a clock time: {listed}"
        );
    }

    // A task opened by id shows its error and what it was submitted with.
    b.type_into("#task-id", &early.to_string());
    b.click("#open");
    let opened = wait_page(
        &b,
        "the opened task",
        "const v = document.getElementById('task-view');
         const f = k => (v.querySelector('dd[data-field=\"' + k + '\"]') || {}).textContent;
         return { task: v.dataset.task, status: f('status'), error: f('error'), submitted: f('submitted') };",
        |v| v["task"].as_str() == Some(early.to_string().as_str()),
    );
    assert_eq!(opened["status"], "failed", "{opened}");
    assert!(
        opened["error"]
            .as_str()
            .is_some_and(|e| e.contains("nonzero_exit")),
        "{opened}"
    );
    assert!(
        opened["submitted"]
            .as_str()
            .is_some_and(|e| e.contains("exit 4")),
        "{opened}"
    );
    // An id that is not there says so.
    b.js("document.getElementById('task-id').value = ''; return null;");
    b.type_into("#task-id", "999999");
    b.click("#open");
    let missing = wait_page(
        &b,
        "the answer for a task that does not exist",
        "const v = document.getElementById('task-view'); return { cls: v.className, text: v.textContent };",
        |v| v["cls"] == "err",
    );
    assert!(
        missing["text"]
            .as_str()
            .is_some_and(|t| t.contains("999999")),
        "{missing}"
    );
    // Back to the failed task for the screenshot.
    b.js("document.getElementById('task-id').value = ''; return null;");
    b.type_into("#task-id", &early.to_string());
    b.click("#open");
    wait_page(
        &b,
        "the failed task opened again",
        "return document.getElementById('task-view').dataset.task;",
        |v| v.as_str() == Some(early.to_string().as_str()),
    );

    let png = b.screenshot();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is not a PNG"
    );
    let width = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    let height = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
    assert!(
        width >= 800 && height >= 600,
        "screenshot is {width}x{height}"
    );
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard.png");
    std::fs::write(&target, &png).unwrap_or_else(|e| panic!("{}: {e}", target.display()));

    // The leader dies: the page marks it down and shows the new leader.
    c.node_mut(leader).kill9();
    let others: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    let new_leader = c.wait_for_leader(&others, Duration::from_secs(30));
    let after = wait_page(
        &b,
        "the new leader marked and the old one down",
        "const rows = [...document.querySelectorAll('#members tbody tr')];
         return { leaders: rows.filter(r => r.classList.contains('leader')).map(r => Number(r.dataset.node)),
                  down: rows.filter(r => r.dataset.state === 'down').map(r => Number(r.dataset.node)) };",
        |v| v["leaders"] == json!([new_leader]) && v["down"] == json!([leader]),
    );
    println!("after the leader died: {after}");
}
