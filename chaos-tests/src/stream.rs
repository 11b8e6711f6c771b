//! A stream job under the faults: a feeder POSTs numbered batches of records (with batch ids)
//! through every node in turn, retrying each batch until it is acknowledged, as a client
//! would; at the end the checker reads the job's `results` sink and asks: is each window there
//! once, and does every window whose batches were all acknowledged hold exactly the reference
//! values (count, sum, max) computed from those batches?
//!
//! The job never lets an idle source move the watermark (a batch retried after an outage
//! carries its old event times and would be late, rightly): a last batch far ahead in event
//! time closes the windows instead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::check::Verdict;
use crate::cluster::{answer, Cluster};

/// Event time of batch 0.
const T0: i64 = 1_700_000_000_000;
const PER_BATCH: i64 = 10;
const KEYS: i64 = 4;
/// Event time between batches (10 batches per 1 s window).
const BATCH_SPAN_MS: i64 = 100;
const WINDOW_MS: i64 = 1000;

fn records(b: i64) -> Vec<Value> {
    (0..PER_BATCH)
        .map(|j| {
            json!({"k": format!("k{}", j % KEYS), "ts": T0 + b * BATCH_SPAN_MS + j * 10, "v": (b * PER_BATCH + j) as f64})
        })
        .collect()
}

/// What the feeder did.
#[derive(Debug, Default)]
pub struct Fed {
    pub job: u64,
    /// Batches acknowledged (202), in order.
    pub acked: BTreeSet<i64>,
    /// Batches sent and never acknowledged (given up).
    pub unacked: BTreeSet<i64>,
}

pub struct Feeder {
    stop: Arc<AtomicBool>,
    fed: Arc<Mutex<Fed>>,
    thread: Option<JoinHandle<()>>,
}

/// Create the job (retrying through every node) and start feeding it.
pub fn start(c: &Cluster, timeout: Duration) -> anyhow::Result<Feeder> {
    let job = json!({
        "name": "chaos-stream",
        "source": { "type": "http" },
        "time": { "field": "ts", "max_delay_ms": 0, "idle_ms": 86_400_000 },
        "pipeline": [
            { "key_by": "k" },
            { "window": { "type": "tumbling", "size_ms": WINDOW_MS },
              "aggregate": { "n": { "count": "*" }, "sum": { "sum": "v" }, "hi": { "max": "v" } } }
        ],
        "sink": { "type": "results" },
        "checkpoint_ms": 200,
        "max_results": 100000
    });
    let started = Instant::now();
    let id = loop {
        let mut last = String::new();
        let mut created = None;
        for n in c.ids() {
            match c.send(n, "POST", "/v1/streams", &job) {
                Ok(a) if a.status == 201 => {
                    created = a.body["id"].as_u64();
                    if created.is_some() {
                        break;
                    }
                    last = format!("no id in {}", a.body);
                }
                Ok(a) => last = format!("node {n}: {} {}", a.status, a.body),
                Err(e) => last = format!("node {n}: {e}"),
            }
        }
        if let Some(id) = created {
            break id;
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "creating the stream job: {last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let stop = Arc::new(AtomicBool::new(false));
    let fed = Arc::new(Mutex::new(Fed {
        job: id,
        ..Fed::default()
    }));
    let urls = c.urls();
    let (s, f) = (stop.clone(), fed.clone());
    let thread = std::thread::spawn(move || feed(id, urls, s, f));
    Ok(Feeder {
        stop,
        fed,
        thread: Some(thread),
    })
}

fn feed(id: u64, urls: Vec<(u64, String)>, stop: Arc<AtomicBool>, fed: Arc<Mutex<Fed>>) {
    let http = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .build();
    let mut turn = 0usize;
    let mut b = 0i64;
    while !stop.load(Ordering::SeqCst) {
        let body = Value::from(records(b));
        let first = Instant::now();
        let acked = loop {
            let (_, url) = &urls[turn % urls.len()];
            turn += 1;
            let r = answer(
                http.post(&format!("{url}/v1/streams/{id}/records?batch_id=b{b}"))
                    .send_json(&body),
            );
            if matches!(&r, Ok(a) if a.status == 202) {
                break true;
            }
            // Retried (another node, after a pause) for as long as a client would.
            if first.elapsed() > Duration::from_secs(30) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if let Ok(mut f) = fed.lock() {
            if acked {
                f.acked.insert(b);
            } else {
                f.unacked.insert(b);
            }
        }
        b += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The key of the last batch, whose window stays open.
const CLOSING_KEY: &str = "end";

impl Feeder {
    /// Stop feeding (the batch in flight is finished first).
    pub fn finish(mut self) -> Fed {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.fed
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default()
    }
}

/// Send the batch that closes every window (far ahead in event time), through every node in
/// turn for up to `timeout`.
pub fn close(urls: &[(u64, String)], fed: &Fed, timeout: Duration) {
    let last = fed
        .acked
        .iter()
        .chain(fed.unacked.iter())
        .max()
        .copied()
        .unwrap_or(0);
    let closing = json!([{ "k": CLOSING_KEY, "ts": T0 + (last + 100) * BATCH_SPAN_MS, "v": 0.0 }]);
    let http = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let started = Instant::now();
    let mut turn = 0;
    while started.elapsed() < timeout && !urls.is_empty() {
        let (_, url) = &urls[turn % urls.len()];
        turn += 1;
        let r = answer(
            http.post(&format!(
                "{url}/v1/streams/{}/records?batch_id=closing",
                fed.job
            ))
            .send_json(&closing),
        );
        if matches!(&r, Ok(a) if a.status == 202) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Win {
    n: u64,
    sum: f64,
    hi: f64,
}

/// Check the job's results against what was fed; wait (up to `timeout`) for the windows of
/// the acknowledged batches to be closed and committed.
pub fn check(c: &Cluster, fed: &Fed, timeout: Duration, verdict: &mut Verdict) -> String {
    // The reference, and which windows had a batch that was not acknowledged.
    let mut want: BTreeMap<(String, i64), Win> = BTreeMap::new();
    let mut uncertain: BTreeSet<i64> = BTreeSet::new();
    for b in &fed.unacked {
        uncertain.insert((b * BATCH_SPAN_MS).div_euclid(WINDOW_MS) * WINDOW_MS + T0);
    }
    for b in &fed.acked {
        for r in records(*b) {
            let ts = r["ts"].as_i64().unwrap_or(0);
            let start = (ts - T0).div_euclid(WINDOW_MS) * WINDOW_MS + T0;
            let w = want
                .entry((r["k"].as_str().unwrap_or("").to_string(), start))
                .or_insert(Win {
                    n: 0,
                    sum: 0.0,
                    hi: f64::MIN,
                });
            let v = r["v"].as_f64().unwrap_or(0.0);
            w.n += 1;
            w.sum += v;
            w.hi = w.hi.max(v);
        }
    }
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    let results = loop {
        match read_results(c, fed.job) {
            Ok(r) => {
                let have: BTreeSet<(String, i64)> = r
                    .iter()
                    .map(|x| {
                        (
                            x["key"].as_str().unwrap_or("").to_string(),
                            x["window_start"].as_i64().unwrap_or(0),
                        )
                    })
                    .collect();
                if want.keys().all(|k| have.contains(k)) {
                    break Some(r);
                }
                last = format!("{} of {} windows", have.len(), want.len());
            }
            Err(e) => last = e,
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let Some(results) = results else {
        let job = c
            .ids()
            .into_iter()
            .find_map(|n| c.get(n, &format!("/v1/streams/{}", fed.job)).ok())
            .map(|a| a.body.to_string())
            .unwrap_or_default();
        verdict.other.push(format!(
            "stream job {}: the windows of the acknowledged batches did not all appear within {timeout:?} ({last}); the job: {job}",
            fed.job
        ));
        return format!(
            "stream: {} batches acked; windows missing ({last})",
            fed.acked.len()
        );
    };
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut checked = 0;
    for r in &results {
        *seen
            .entry(r["result_id"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
        let key = (
            r["key"].as_str().unwrap_or("").to_string(),
            r["window_start"].as_i64().unwrap_or(0),
        );
        if uncertain.contains(&key.1) || key.0 == CLOSING_KEY {
            continue;
        }
        match want.get(&key) {
            None => verdict.wrong_results.push(format!(
                "stream window {key:?} holds records no acknowledged batch sent: {r}"
            )),
            Some(w) => {
                checked += 1;
                let ok = r["n"].as_u64() == Some(w.n)
                    && r["sum"].as_f64().is_some_and(|s| (s - w.sum).abs() < 1e-6)
                    && r["hi"].as_f64() == Some(w.hi);
                if !ok {
                    verdict.wrong_results.push(format!(
                        "stream window {key:?}: {r}, the acknowledged batches make {w:?}"
                    ));
                }
            }
        }
    }
    for (id, n) in seen {
        if n > 1 {
            verdict
                .duplicates
                .push(format!("stream result {id} is there {n} times"));
        }
    }
    format!(
        "stream: {} batches acked, {} given up; {} windows, {checked} checked against the reference",
        fed.acked.len(),
        fed.unacked.len(),
        results.len()
    )
}

fn read_results(c: &Cluster, job: u64) -> Result<Vec<Value>, String> {
    let mut last = String::from("no node");
    'nodes: for n in c.ids() {
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let a = match c.get(
                n,
                &format!("/v1/streams/{job}/results?after={after}&limit=10000"),
            ) {
                Ok(a) if a.status == 200 => a,
                Ok(a) => {
                    last = format!("node {n}: {} {}", a.status, a.body);
                    continue 'nodes;
                }
                Err(e) => {
                    last = format!("node {n}: {e}");
                    continue 'nodes;
                }
            };
            let page = a.body["results"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return Ok(out);
            }
            out.extend(page);
            match a.body["next"].as_u64() {
                Some(x) => after = x,
                None => return Ok(out),
            }
        }
    }
    Err(last)
}
