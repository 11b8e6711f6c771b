//! GET /v1/events: Server-Sent Events of task state changes and cluster events, as this node
//! applies them.
//!
//! - `event: task` — `{"id", "status", "node", "attempt", "ts_ms"}` for every applied change
//!   of a task (filters: `task=ID`, `status=a,b`).
//! - `event: leader` — `{"leader", "term", "ts_ms"}` when this node sees a new leader or term.
//! - `event: node` — `{"id", "up", "ts_ms"}` when a node is marked down or up again.
//! - `event: lagged` — `{"missed"}`: the client was too slow and missed that many batches;
//!   re-read what it needs.
//! - a `: keep-alive` comment every 15 s.
//!
//! `kinds=task,leader,node` picks kinds (all by default); `max_secs` (at most a week) ends
//! the stream after that long (for scripts; forever by default). The stream ends when the client goes away.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use edgerun_actors::{now_ms, StateChange};
use edgerun_model::TaskStatus;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::error::{ApiError, ErrorCode};
use crate::handlers::tasks::TasksCtx;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    task: Option<u64>,
    status: Option<String>,
    kinds: Option<String>,
    max_secs: Option<u64>,
}

const KINDS: [&str; 3] = ["task", "leader", "node"];
/// Longest `max_secs` (a week): a bound for scripts, not a way to overflow the clock.
const MAX_SECS: u64 = 7 * 86_400;
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often leader and node changes are looked for.
const CLUSTER_POLL: Duration = Duration::from_millis(200);

struct Filter {
    task: Option<u64>,
    statuses: Option<BTreeSet<TaskStatus>>,
    kinds: BTreeSet<&'static str>,
}

impl Filter {
    fn parse(q: &EventsQuery) -> Result<Filter, ApiError> {
        let statuses = match &q.status {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(|s| {
                        TaskStatus::parse(s.trim()).ok_or_else(|| {
                            ApiError::bad_request(
                                ErrorCode::InvalidQuery,
                                format!("status {s:?} is not a task status"),
                            )
                        })
                    })
                    .collect::<Result<BTreeSet<_>, _>>()?,
            ),
        };
        let kinds = match &q.kinds {
            None => KINDS.into_iter().collect(),
            Some(list) => list
                .split(',')
                .map(|k| {
                    KINDS.into_iter().find(|x| *x == k.trim()).ok_or_else(|| {
                        ApiError::bad_request(
                            ErrorCode::InvalidQuery,
                            format!("kind {k:?} is not one of task, leader, node"),
                        )
                    })
                })
                .collect::<Result<BTreeSet<_>, _>>()?,
        };
        if q.task == Some(0) {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                "task must be a positive id",
            ));
        }
        Ok(Filter {
            task: q.task,
            statuses,
            kinds,
        })
    }

    fn wants_task(&self, id: u64, status: TaskStatus) -> bool {
        self.kinds.contains("task")
            && self.task.is_none_or(|t| t == id)
            && self.statuses.as_ref().is_none_or(|s| s.contains(&status))
    }
}

fn frame(kind: &str, data: serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// The response body: frames from the producer task until it ends or the client leaves
/// (dropping this drops the receiver, and the producer stops at its next send).
struct EventStream(mpsc::Receiver<Bytes>);

impl futures_core::Stream for EventStream {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|b| b.map(Ok))
    }
}

/// GET /v1/events
pub async fn events(
    ctx: web::Data<TasksCtx>,
    q: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = Filter::parse(&q)?;
    if q.max_secs.is_some_and(|s| s > MAX_SECS) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("max_secs: 0 to {MAX_SECS} (leave it out to follow the stream until you disconnect)"),
        ));
    }
    let max = q.max_secs.map(Duration::from_secs);
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let node = ctx.node.clone();
    let mut applied = node.changes();
    tokio::spawn(async move {
        let deadline = max.and_then(|d| tokio::time::Instant::now().checked_add(d));
        let mut leader = None;
        let mut nodes: BTreeMap<u64, bool> =
            node.read(|s| s.nodes.values().map(|n| (n.id, n.up)).collect());
        let mut poll = tokio::time::interval(CLUSTER_POLL);
        let mut keep = tokio::time::interval(KEEP_ALIVE);
        keep.reset();
        // A first comment so clients (and proxies) see the stream open at once.
        if tx
            .send(Bytes::from_static(b": edgerun events\n\n"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let until_end = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let out: Vec<Bytes> = tokio::select! {
                _ = until_end => return,
                _ = tx.closed() => return,
                _ = keep.tick() => vec![Bytes::from_static(b": keep-alive\n\n")],
                ev = applied.recv() => match ev {
                    Ok(StateChange::Tasks(batch)) => {
                        let ts = now_ms();
                        batch
                            .iter()
                            .filter(|e| filter.wants_task(e.id, e.status))
                            .map(|e| frame("task", json!({
                                "id": e.id, "status": e.status.as_str(), "node": e.node,
                                "attempt": e.attempt, "ts_ms": ts,
                            })))
                            .collect()
                    }
                    Ok(StateChange::Reset) => Vec::new(),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        vec![frame("lagged", json!({ "missed": n }))]
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = poll.tick() => {
                    let mut out = Vec::new();
                    let now = node.leadership();
                    if filter.kinds.contains("leader") && leader != Some(now) {
                        out.push(frame("leader", json!({
                            "leader": now.leader, "term": now.term, "ts_ms": now_ms(),
                        })));
                    }
                    leader = Some(now);
                    let current: BTreeMap<u64, bool> = node
                        .read(|s| s.nodes.values().map(|n| (n.id, n.up)).collect());
                    if filter.kinds.contains("node") {
                        for (id, up) in &current {
                            if nodes.get(id) != Some(up) {
                                out.push(frame("node", json!({
                                    "id": id, "up": up, "ts_ms": now_ms(),
                                })));
                            }
                        }
                    }
                    nodes = current;
                    out
                }
            };
            for b in out {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(EventStream(rx)))
}
