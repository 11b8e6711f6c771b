//! /v1/tasks: submit, batch, get, wait, list, cancel.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use edgerun_actors::{
    CancelOutcome, ClusterHandle, Kernels, Policy, Proposer, RequeueOutcome, ResultError,
};
use edgerun_model::{Admission, TaskId, TaskStatus};
use serde::Deserialize;
use serde_json::json;

use crate::dto::{task_json, task_json_explained, BatchSubmission, TaskSubmission, MAX_BATCH};
use crate::error::{ApiError, ErrorCode};

/// What the task handlers need, and nothing else.
#[derive(Clone)]
pub struct TasksCtx {
    /// For reads: the local state and the read barrier; results kept off-Raft.
    pub node: ClusterHandle,
    pub proposer: Proposer,
    pub kernels: Arc<dyn Kernels>,
    /// How long a linearizable read may wait for the leader and for this node to catch up.
    pub read_timeout: Duration,
    /// `[limits]` admission settings, checked by the state machine.
    pub admission: Admission,
    /// `[scheduler]`, for explaining why a task is pending.
    pub policy: Policy,
    /// `[streams]`: the records body limit, results kept by default.
    pub streams: crate::handlers::streams::StreamLimits,
    /// The wasm runtime uploads are checked with, and the upload cap.
    pub modules: crate::handlers::modules::ModuleLimits,
}

/// Who sent a request, for per-submitter limits: the client's IP address (the token's subject
/// once authentication is on).
pub fn submitter(req: &HttpRequest) -> String {
    crate::auth::subject(req)
}

impl TasksCtx {
    /// The ids of the modules `refs` name (ids or names). A module this node has not seen
    /// yet (uploaded through another node a moment ago) is looked for again after a read
    /// barrier; one still missing is left out (the submission then says `unknown_module`).
    pub(crate) async fn modules<'a>(
        &self,
        refs: impl Iterator<Item = &'a str>,
    ) -> std::collections::BTreeMap<String, String> {
        let refs: Vec<&str> = refs.collect();
        if refs.is_empty() {
            return Default::default();
        }
        let look = || {
            self.node.read(|s| {
                refs.iter()
                    .filter_map(|r| s.modules.resolve(r).map(|m| (r.to_string(), m.id.clone())))
                    .collect::<std::collections::BTreeMap<_, _>>()
            })
        };
        let found = look();
        if found.len() == refs.iter().collect::<std::collections::BTreeSet<_>>().len() {
            return found;
        }
        let _ = self.node.read_barrier(self.read_timeout).await;
        look()
    }

    /// Linearizable unless the client asked for a stale (local) read.
    pub(crate) async fn barrier(&self, stale: Option<bool>) -> Result<(), ApiError> {
        if stale == Some(true) {
            return Ok(());
        }
        self.node
            .read_barrier(self.read_timeout)
            .await
            .map_err(ApiError::from)
    }
}

/// Longest `wait` a client may ask for.
const MAX_WAIT: Duration = Duration::from_secs(300);
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn json_bytes(status: actix_web::http::StatusCode, body: Vec<u8>) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}

pub fn parse_id(raw: &str) -> Result<TaskId, ApiError> {
    raw.parse::<TaskId>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidId,
                format!("task id {raw:?} is not a positive integer"),
            )
        })
}

fn render(node: &ClusterHandle, id: TaskId) -> Result<Vec<u8>, ApiError> {
    node.read(|s| s.task(id).map(|t| task_json(&t)))
        .unwrap_or_else(|| Err(ApiError::NotFound(format!("no task with id {id}"))))
}

/// The task with its pending reason and, when its result lives off-Raft, that result fetched
/// from the node that holds it.
async fn render_full(ctx: &TasksCtx, id: TaskId) -> Result<Vec<u8>, ApiError> {
    let stored = ctx.node.read(|s| s.task(id).and_then(|t| t.result_ref));
    let fetched = match stored {
        None => None,
        Some(r) => Some(fetch_result(ctx, id, r).await?),
    };
    ctx.node
        .read(|s| {
            s.task(id)
                .map(|t| task_json_explained(s, &t, &ctx.policy, fetched.as_deref()))
        })
        .unwrap_or_else(|| Err(ApiError::NotFound(format!("no task with id {id}"))))
}

async fn fetch_result(
    ctx: &TasksCtx,
    id: TaskId,
    r: edgerun_model::ResultRef,
) -> Result<String, ApiError> {
    match ctx.node.fetch_result(id, r, ctx.read_timeout).await {
        Ok(v) => Ok(v),
        Err(e @ ResultError::Missing { .. }) => Err(ApiError::Internal(e.to_string())),
        Err(why) => Err(ApiError::Unavailable {
            code: ErrorCode::ResultUnavailable,
            message: format!(
                "task {id}'s result ({} bytes) is kept on node {}: {why}",
                r.bytes, r.node
            ),
            details: json!({ "node": r.node, "bytes": r.bytes }),
        }),
    }
}

fn submitted(
    r: Result<edgerun_actors::Submission, edgerun_actors::Rejected>,
) -> Result<edgerun_actors::Submission, ApiError> {
    r.map_err(|r| ApiError::TooMany {
        code: if r.code == "cluster_full" {
            ErrorCode::ClusterFull
        } else {
            ErrorCode::TooManyPending
        },
        message: r.message,
        retry_after_secs: r.retry_after_ms.div_ceil(1000),
    })
}

pub async fn submit(
    ctx: web::Data<TasksCtx>,
    req: HttpRequest,
    body: web::Json<TaskSubmission>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let modules = ctx.modules(body.module_ref().into_iter()).await;
    let mut spec = body.into_spec("", &*ctx.kernels, &modules, &submitter(&req))?;
    let trace = crate::trace::of_request(&req);
    spec.trace_id = trace.clone();
    tracing::debug!(target: edgerun_model::TRACE_TARGET, trace_id = %trace, node = ctx.node.id(), "submit received");
    let done = submitted(ctx.proposer.submit(vec![spec], ctx.admission).await?)?;
    let (s, index) = (done.tasks[0], done.index);
    if s.created {
        metrics::counter!(edgerun_actors::metrics_names::TASKS_SUBMITTED).increment(1);
    }
    if ctx.node.read(|st| st.task(s.id).is_none()) {
        // Applied on the leader (this node forwarded the write): catch up to the entry that
        // carried it before answering.
        ctx.node.wait_applied(index, ctx.read_timeout).await?;
    }
    let status = if s.created {
        actix_web::http::StatusCode::CREATED
    } else {
        actix_web::http::StatusCode::OK
    };
    let mut res = json_bytes(status, render(&ctx.node, s.id)?);
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&trace) {
        res.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static(crate::trace::RESPONSE_HEADER),
            v,
        );
    }
    Ok(res)
}

pub async fn submit_batch(
    ctx: web::Data<TasksCtx>,
    req: HttpRequest,
    body: web::Json<BatchSubmission>,
) -> Result<HttpResponse, ApiError> {
    let who = submitter(&req);
    let tasks = body.into_inner().tasks;
    if tasks.is_empty() || tasks.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBatch,
            format!(
                "tasks: {} given; a batch holds 1 to {MAX_BATCH}",
                tasks.len()
            ),
        ));
    }
    let n = tasks.len();
    let trace = crate::trace::of_request(&req);
    let mut specs = Vec::with_capacity(n);
    let modules = ctx
        .modules(tasks.iter().filter_map(|t| t.module_ref()))
        .await;
    for (i, t) in tasks.into_iter().enumerate() {
        let mut spec = t.into_spec(&format!("tasks[{i}]."), &*ctx.kernels, &modules, &who)?;
        spec.trace_id = trace.clone();
        specs.push(spec);
    }
    tracing::debug!(target: edgerun_model::TRACE_TARGET, trace_id = %trace, node = ctx.node.id(), tasks = n, "batch received");
    let done = submitted(ctx.proposer.submit(specs, ctx.admission).await?)?.tasks;
    let created = done.iter().filter(|s| s.created).count() as u64;
    metrics::counter!(edgerun_actors::metrics_names::TASKS_SUBMITTED).increment(created);
    let ids: Vec<TaskId> = done.iter().map(|s| s.id).collect();
    Ok(HttpResponse::Created()
        .insert_header((crate::trace::RESPONSE_HEADER, trace))
        .json(json!({ "ids": ids })))
}

/// How much of a task `GET /v1/tasks/{id}` shows.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum View {
    /// Status, result, attempts (the default).
    #[default]
    Summary,
    /// Also what was submitted: the kernel's `input`, or the exec `argv` and the names of
    /// its `env` (never the values: they may be passwords).
    Full,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    stale: Option<bool>,
    #[serde(default)]
    view: View,
}

/// What a task was submitted with, for `?view=full` (exec env values hidden).
fn submitted_view(work: &edgerun_model::Work) -> serde_json::Value {
    match work {
        edgerun_model::Work::Kernel { kernel, input } => json!({
            "kernel": kernel,
            // Validated JSON when it was submitted.
            "input": serde_json::from_str::<serde_json::Value>(input).unwrap_or_default(),
        }),
        edgerun_model::Work::Exec { argv, env } => json!({
            "exec": {
                "argv": argv,
                "env": env.keys().map(|k| (k.clone(), json!("(hidden)"))).collect::<serde_json::Map<_, _>>(),
            }
        }),
        edgerun_model::Work::Http(c) => json!({
            "http": {
                "method": c.method,
                "url": c.url,
                "headers": c.headers.keys().map(|k| (k.clone(), json!("(hidden)"))).collect::<serde_json::Map<_, _>>(),
                "body": c.body.as_deref().and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok()),
                "expect_status": [c.expect_status.0, c.expect_status.1],
            }
        }),
        edgerun_model::Work::Wasm {
            module,
            args,
            input,
        } => json!({
            "wasm": { "module": module, "args": args },
            "input": serde_json::from_str::<serde_json::Value>(input).unwrap_or_default(),
        }),
    }
}

pub async fn get(
    ctx: web::Data<TasksCtx>,
    id: web::Path<String>,
    q: web::Query<GetQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    ctx.barrier(q.stale).await?;
    let body = render_full(&ctx, id).await?;
    if q.view == View::Summary {
        return Ok(json_bytes(actix_web::http::StatusCode::OK, body));
    }
    let work = ctx
        .node
        .read(|s| s.task(id).map(|t| submitted_view(&t.spec.work)));
    let mut v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::Internal(format!("re-reading task {id}: {e}")))?;
    if let (Some(o), Some(w)) = (v.as_object_mut(), work) {
        o.insert("submitted".into(), w);
    }
    Ok(HttpResponse::Ok().json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    timeout: Option<String>,
    stale: Option<bool>,
}

/// Parse `30s`, `500ms`, `2m`; a bare number is seconds.
pub fn parse_timeout(raw: Option<&str>) -> Result<Duration, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_WAIT);
    };
    let d = match raw.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(raw).map_err(|e| {
            ApiError::bad_request(
                ErrorCode::InvalidTimeout,
                format!("timeout {raw:?}: {e}; e.g. 30s, 500ms, 2m"),
            )
        })?,
    };
    if d > MAX_WAIT {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidTimeout,
            format!("timeout {raw:?} is more than {}s", MAX_WAIT.as_secs()),
        ));
    }
    Ok(d)
}

pub async fn wait(
    ctx: web::Data<TasksCtx>,
    id: web::Path<String>,
    q: web::Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let timeout = parse_timeout(q.timeout.as_deref())?;
    let deadline = tokio::time::Instant::now() + timeout;
    ctx.barrier(q.stale).await?;
    let mut applied = ctx.node.applied();
    loop {
        applied.borrow_and_update();
        let (done, body) = ctx
            .node
            .read(|s| s.task(id).map(|t| (t.status.is_terminal(), task_json(&t))))
            .ok_or_else(|| ApiError::NotFound(format!("no task with id {id}")))?;
        let body = body?;
        if done {
            // The whole task, with a result kept off-Raft fetched from its node.
            return Ok(json_bytes(
                actix_web::http::StatusCode::OK,
                render_full(&ctx, id).await?,
            ));
        }
        match tokio::time::timeout_at(deadline, applied.changed()).await {
            Ok(Ok(())) => continue,
            // Timed out, or the state machine is gone (node stopping): answer what we have.
            _ => return Ok(json_bytes(actix_web::http::StatusCode::OK, body)),
        }
    }
}

/// `POST /v1/tasks/wait`: many tasks waited for in one call.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitMany {
    /// The tasks to wait for (1 to 10,000 ids).
    pub ids: Vec<u64>,
    /// How long to wait at most: `30s`, `500ms`, `2m` or seconds; at most 300 s (30 s by
    /// default).
    pub timeout: Option<String>,
}

/// POST /v1/tasks/wait: answers once every listed task has ended, or when the timeout
/// passes, with the ended ones (id, status, error) and the ids still running or pending.
/// One call instead of one `/wait` per task: a client waiting for a thousand tasks stays
/// far below its rate limit.
pub async fn wait_many(
    ctx: web::Data<TasksCtx>,
    body: web::Json<WaitMany>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    if b.ids.is_empty() || b.ids.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidIds,
            format!("ids: 1 to {MAX_BATCH} task ids; got {}", b.ids.len()),
        ));
    }
    let timeout = parse_timeout(b.timeout.as_deref())?;
    let deadline = tokio::time::Instant::now() + timeout;
    ctx.barrier(None).await?;
    let mut applied = ctx.node.applied();
    let mut waiting: std::collections::BTreeSet<u64> = b.ids.into_iter().collect();
    let mut ended = Vec::new();
    let mut not_found = Vec::new();
    loop {
        applied.borrow_and_update();
        ctx.node.read(|s| {
            waiting.retain(|id| match s.task(*id) {
                None => {
                    not_found.push(*id);
                    false
                }
                Some(t) if t.status.is_terminal() => {
                    ended.push(json!({
                        "id": id,
                        "status": t.status.as_str(),
                        "error": t.error.as_ref().map(|e| json!({ "code": e.code, "message": e.message })),
                    }));
                    false
                }
                Some(_) => true,
            })
        });
        let done = waiting.is_empty();
        if done
            || !matches!(
                tokio::time::timeout_at(deadline, applied.changed()).await,
                Ok(Ok(()))
            )
        {
            return Ok(HttpResponse::Ok().json(json!({
                "ended": ended,
                "pending": waiting,
                "not_found": not_found,
            })));
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
    after: Option<TaskId>,
    stale: Option<bool>,
}

pub async fn list(
    ctx: web::Data<TasksCtx>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(TaskStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidStatus,
                format!(
                    "status {s:?} is not one of {}",
                    TaskStatus::ALL
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?),
    };
    let limit = page_limit(q.limit)?;
    ctx.barrier(q.stale).await?;
    let body = ctx
        .node
        .read(|s| page_json(s.list(status, q.after, limit), limit))?;
    Ok(json_bytes(actix_web::http::StatusCode::OK, body))
}

/// A page size from the query: the default, or 1..=MAX_PAGE.
fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidLimit,
            format!("limit {limit} is out of range 1..={MAX_PAGE}"),
        ));
    }
    Ok(limit)
}

/// `{"tasks": [...], "next": cursor}`; a full page has a cursor (its last id).
fn page_json(
    page: Vec<std::borrow::Cow<'_, edgerun_model::Task>>,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let next = if page.len() == limit {
        page.last().map(|t| t.id)
    } else {
        None
    };
    let tasks: Vec<_> = page
        .iter()
        .map(|t| crate::dto::TaskDto::from_task(t))
        .collect();
    serde_json::to_vec(&json!({ "tasks": tasks, "next": next }))
        .map_err(|e| ApiError::Internal(format!("encoding the page: {e}")))
}

pub async fn cancel(
    ctx: web::Data<TasksCtx>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let outcome = ctx.proposer.cancel(vec![id]).await?;
    match outcome.first().copied().unwrap_or(CancelOutcome::Unknown) {
        CancelOutcome::Unknown => Err(ApiError::NotFound(format!("no task with id {id}"))),
        CancelOutcome::Cancelled => {
            // The cancel was applied on the leader; wait until this node has it too.
            ctx.barrier(None).await?;
            Ok(json_bytes(
                actix_web::http::StatusCode::OK,
                render(&ctx.node, id)?,
            ))
        }
        CancelOutcome::AlreadyEnded(other) => Err(ApiError::Conflict {
            code: ErrorCode::AlreadyEnded,
            message: format!("task {id} already ended: {}", other.as_str()),
            details: json!({ "status": other.as_str() }),
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqQuery {
    limit: Option<usize>,
    after: Option<TaskId>,
    stale: Option<bool>,
}

/// GET /v1/dlq: dead-lettered tasks, oldest first, with a `next` cursor.
pub async fn dlq(
    ctx: web::Data<TasksCtx>,
    q: web::Query<DlqQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(q.limit)?;
    ctx.barrier(q.stale).await?;
    let body = ctx
        .node
        .read(|s| page_json(s.dead_letters(q.after).take(limit).collect(), limit))?;
    Ok(json_bytes(actix_web::http::StatusCode::OK, body))
}

/// POST /v1/dlq/{id}/requeue: a dead-lettered task goes back to pending with fresh attempts.
pub async fn requeue(
    ctx: web::Data<TasksCtx>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let outcome = ctx.proposer.requeue(vec![id]).await?;
    match outcome.first().copied().unwrap_or(RequeueOutcome::Unknown) {
        RequeueOutcome::Unknown => Err(ApiError::NotFound(format!("no task with id {id}"))),
        RequeueOutcome::Requeued => {
                ctx.barrier(None).await?;
                Ok(json_bytes(
                    actix_web::http::StatusCode::OK,
                    render(&ctx.node, id)?,
                ))
            }
        RequeueOutcome::NotDeadLetter => Err(ApiError::Conflict {
            code: ErrorCode::NotDeadLetter,
            message: format!(
                "task {id} is not in the dead-letter queue (only tasks that failed or timed out with their attempts used up are)"
            ),
            details: serde_json::Value::Null,
        }),
    }
}
