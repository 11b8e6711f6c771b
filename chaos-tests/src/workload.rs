//! The workload: clients that submit through every node with idempotency keys and retry as a
//! real client would, readers of task status, and a monitor of who claims to lead. Every
//! operation is recorded with its invoke and completion times (ms since the run started).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::cluster::answer;

/// How an operation ended.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum End {
    /// A 2xx answer.
    Ok { status: u16 },
    /// A definite answer that is not a success (4xx/5xx); nothing was done unless 5xx.
    Fail { status: u16, code: String },
    /// No answer: the operation may or may not have taken effect.
    Timeout { error: String },
}

/// A submission attempt (one HTTP request).
#[derive(Debug, Clone, Serialize)]
pub struct SubmitOp {
    pub client: u32,
    pub key: String,
    pub node: u64,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub end: End,
    /// The task id answered.
    pub id: Option<u64>,
}

/// A status read.
#[derive(Debug, Clone, Serialize)]
pub struct ReadOp {
    pub id: u64,
    pub node: u64,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub end: End,
    pub status: Option<String>,
    pub attempt: Option<u32>,
}

/// One node's view of the leadership at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct LeaderObs {
    pub at_ms: u64,
    pub node: u64,
    pub term: u64,
    pub leader: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct History {
    pub submits: Vec<SubmitOp>,
    pub reads: Vec<ReadOp>,
    pub leaders: Vec<LeaderObs>,
    /// Keys whose submission was acknowledged, with the id, in ack order.
    pub acked: Vec<(String, u64, u64)>,
    /// Keys given up on without an ack (the client stopped retrying).
    pub abandoned: Vec<String>,
}

/// The input of the task behind `key`: three consecutive values from a base the key fixes,
/// so the checker knows what the result must be.
pub fn base_of(client: u32, seq: u64) -> u64 {
    u64::from(client) * 1_000_000 + seq
}

pub fn task_for(key: &str, base: u64) -> Value {
    json!({
        "kernel": "stats",
        "input": { "values": [base, base + 1, base + 2] },
        "idempotency_key": key,
        "retry": { "max_attempts": 5, "backoff_ms": 50 },
    })
}

/// Parse a key back into its base.
pub fn base_of_key(key: &str) -> Option<u64> {
    let rest = key.strip_prefix('c')?;
    let (c, s) = rest.split_once('-')?;
    Some(base_of(c.parse().ok()?, s.parse().ok()?))
}

pub struct Workload {
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
    threads: Vec<JoinHandle<()>>,
}

pub struct Params {
    pub clients: u32,
    pub readers: u32,
    /// Pause between a client's submissions.
    pub think: Duration,
    /// A client gives a key up after retrying it this long.
    pub give_up: Duration,
    /// Read with `?stale=true` (local, not linearizable): a self-test of the checker.
    pub stale_reads: bool,
}

fn ms(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_millis(500))
        .timeout(Duration::from_secs(3))
        .build()
}

fn end_of(res: &Result<crate::cluster::Answer, String>) -> End {
    match res {
        Ok(a) if (200..300).contains(&a.status) => End::Ok { status: a.status },
        Ok(a) => End::Fail {
            status: a.status,
            code: a.body["error"]["code"].as_str().unwrap_or("").to_string(),
        },
        Err(e) => End::Timeout { error: e.clone() },
    }
}

impl Workload {
    /// Start clients and readers against `urls` (node id, base URL). `t0` is time zero of the
    /// history; `seed` fixes the readers' choices.
    pub fn start(urls: Vec<(u64, String)>, p: Params, t0: Instant, seed: u64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(History::default()));
        let urls = Arc::new(urls);
        let mut threads = Vec::new();
        for client in 0..p.clients {
            let (stop, history, urls) = (stop.clone(), history.clone(), urls.clone());
            let (think, give_up) = (p.think, p.give_up);
            threads.push(std::thread::spawn(move || {
                submitter(client, &urls, &stop, &history, t0, think, give_up)
            }));
        }
        for r in 0..p.readers {
            let (stop, history, urls) = (stop.clone(), history.clone(), urls.clone());
            let suffix = if p.stale_reads { "?stale=true" } else { "" };
            threads.push(std::thread::spawn(move || {
                reader(seed ^ u64::from(r + 1), &urls, suffix, &stop, &history, t0)
            }));
        }
        {
            let (stop, history, urls) = (stop.clone(), history.clone(), urls.clone());
            threads.push(std::thread::spawn(move || {
                monitor(&urls, &stop, &history, t0)
            }));
        }
        Workload {
            stop,
            history,
            threads,
        }
    }

    /// Stop every thread (clients finish the key in hand, within their give-up time) and
    /// return the history.
    pub fn finish(self) -> History {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        match Arc::try_unwrap(self.history) {
            Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
            Err(shared) => std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner())),
        }
    }
}

fn submitter(
    client: u32,
    urls: &[(u64, String)],
    stop: &AtomicBool,
    history: &Mutex<History>,
    t0: Instant,
    think: Duration,
    give_up: Duration,
) {
    let http = agent();
    let mut seq = 0u64;
    let mut next = client as usize;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let key = format!("c{client}-{seq}");
        let body = task_for(&key, base_of(client, seq));
        let began = Instant::now();
        let mut backoff = Duration::from_millis(20);
        loop {
            let (node, url) = &urls[next % urls.len()];
            let invoke_ms = ms(t0);
            let res = answer(http.post(&format!("{url}/v1/tasks")).send_json(&body));
            let complete_ms = ms(t0);
            let end = end_of(&res);
            let id = res.as_ref().ok().and_then(|a| a.body["id"].as_u64());
            let ok = matches!(end, End::Ok { .. }) && id.is_some();
            let definite_refusal = matches!(&end, End::Fail { status, .. } if (400..500).contains(status) && *status != 429 && *status != 409);
            {
                let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
                h.submits.push(SubmitOp {
                    client,
                    key: key.clone(),
                    node: *node,
                    invoke_ms,
                    complete_ms,
                    end,
                    id,
                });
                if let (true, Some(id)) = (ok, id) {
                    h.acked.push((key.clone(), id, complete_ms));
                }
            }
            if ok || definite_refusal {
                break;
            }
            // Another node next time: this one may be cut off or down.
            next += 1;
            if began.elapsed() > give_up {
                history
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .abandoned
                    .push(key.clone());
                break;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
        next += 1;
        std::thread::sleep(think);
    }
}

fn reader(
    seed: u64,
    urls: &[(u64, String)],
    suffix: &str,
    stop: &AtomicBool,
    history: &Mutex<History>,
    t0: Instant,
) {
    let http = agent();
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::SeqCst) {
        let pick = {
            let h = history.lock().unwrap_or_else(|p| p.into_inner());
            if h.acked.is_empty() {
                None
            } else {
                // Mostly recent tasks: those are the ones whose status is still moving.
                let n = h.acked.len();
                let i = if rng.bool() {
                    n - 1 - rng.usize(0..n.min(50))
                } else {
                    rng.usize(0..n)
                };
                Some(h.acked[i].1)
            }
        };
        let Some(id) = pick else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let (node, url) = &urls[rng.usize(0..urls.len())];
        let invoke_ms = ms(t0);
        let res = answer(http.get(&format!("{url}/v1/tasks/{id}{suffix}")).call());
        let complete_ms = ms(t0);
        let end = end_of(&res);
        let (status, attempt) = match &res {
            Ok(a) if a.status == 200 => (
                a.body["status"].as_str().map(str::to_string),
                a.body["attempt"].as_u64().map(|x| x as u32),
            ),
            Ok(a) if a.status == 404 => (Some("absent".to_string()), None),
            _ => (None, None),
        };
        history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reads
            .push(ReadOp {
                id,
                node: *node,
                invoke_ms,
                complete_ms,
                end,
                status,
                attempt,
            });
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn monitor(urls: &[(u64, String)], stop: &AtomicBool, history: &Mutex<History>, t0: Instant) {
    let http = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_millis(200))
        .timeout(Duration::from_millis(500))
        .build();
    while !stop.load(Ordering::SeqCst) {
        for (node, url) in urls {
            if let Ok(a) = answer(http.get(&format!("{url}/v1/cluster")).call()) {
                if let Some(term) = a.body["term"].as_u64() {
                    history
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .leaders
                        .push(LeaderObs {
                            at_ms: ms(t0),
                            node: *node,
                            term,
                            leader: a.body["leader"].as_u64(),
                        });
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
