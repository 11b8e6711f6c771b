//! /v1/streams: stream jobs (API.md "Stream jobs").

use actix_web::{web, HttpRequest, HttpResponse};
use edgerun_actors::IngestRefusal;
use edgerun_model::{StreamAction, StreamId, StreamJob, StreamSpec, StreamStatus};
use edgerun_streams::JobDef;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::dto::{ConstraintsDto, ResourcesDto};
use crate::error::{ApiError, ErrorCode};
use crate::handlers::tasks::{submitter, TasksCtx};

/// `[streams]` as the API uses it.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Largest body of a records POST (413 past it).
    pub max_body: usize,
    /// Results kept per job when the job does not say.
    pub max_results: u32,
}

const MAX_RESULTS_LIMIT: u32 = 1_000_000;
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 10_000;

fn bad(e: edgerun_streams::SpecError) -> ApiError {
    ApiError::BadRequest {
        code: ErrorCode::InvalidStream,
        message: e.to_string(),
        details: json!({ "field": e.field }),
    }
}

fn bad_field(field: &str, msg: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest {
        code: ErrorCode::InvalidStream,
        message: format!("{field}: {msg}"),
        details: json!({ "field": field }),
    }
}

fn parse_id(raw: &str) -> Result<StreamId, ApiError> {
    raw.parse::<StreamId>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidId,
                format!("stream id {raw:?} is not a positive integer"),
            )
        })
}

fn not_found(id: StreamId) -> ApiError {
    ApiError::NotFound(format!("no stream job with id {id}"))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct StreamMetricsView {
    records_in: u64,
    records_out: u64,
    filtered: u64,
    late: u64,
    malformed: u64,
    watermark_ms: Option<i64>,
    last_checkpoint_ms: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CheckpointView {
    seq: u64,
    at: u64,
    bytes: usize,
}

/// A stream job as GET /v1/streams/{id} shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = StreamJob)]
pub(crate) struct StreamView {
    id: StreamId,
    name: String,
    /// starting, running, paused, failed (stopped only in a delete's answer).
    status: &'static str,
    /// The node it runs on (or is starting on).
    node: Option<u64>,
    /// Placements so far (a new one after a pause, a resume or a node loss).
    epoch: u64,
    /// Times it moved to another node or was started again after a failure.
    moves: u32,
    source: String,
    sink: String,
    created_at: u64,
    updated_at: u64,
    /// What the runner last reported as wrong (an unreachable broker), or why it failed.
    error: Option<String>,
    checkpoint: Option<CheckpointView>,
    metrics: StreamMetricsView,
    /// Results a `results` sink keeps now.
    results: usize,
    /// The job as submitted.
    #[schema(value_type = Object)]
    definition: Value,
}

fn view(j: &StreamJob) -> StreamView {
    let definition: Value = serde_json::from_str(&j.spec.definition).unwrap_or(Value::Null);
    let kind = |k: &str| {
        definition
            .get(k)
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    StreamView {
        id: j.id,
        name: j.spec.name.clone(),
        status: j.status.as_str(),
        node: j.node,
        epoch: j.epoch,
        moves: j.moves,
        source: kind("source"),
        sink: kind("sink"),
        created_at: j.created_at_ms,
        updated_at: j.updated_at_ms,
        error: j.error.clone(),
        checkpoint: j.checkpoint.as_ref().map(|c| CheckpointView {
            seq: c.seq,
            at: c.at_ms,
            bytes: c.data.len(),
        }),
        metrics: StreamMetricsView {
            records_in: j.metrics.records_in,
            records_out: j.metrics.records_out,
            filtered: j.metrics.filtered,
            late: j.metrics.late,
            malformed: j.metrics.malformed,
            watermark_ms: j.metrics.watermark_ms,
            last_checkpoint_ms: j.metrics.last_checkpoint_ms,
        },
        results: j.results.len(),
        definition,
    }
}

fn render(ctx: &TasksCtx, id: StreamId) -> Result<HttpResponse, ApiError> {
    let v = ctx
        .node
        .read(|s| s.streams.get(id).map(view))
        .ok_or_else(|| not_found(id))?;
    Ok(HttpResponse::Ok().json(v))
}

async fn read_own(ctx: &TasksCtx) -> Result<(), ApiError> {
    ctx.node
        .read_barrier(ctx.read_timeout)
        .await
        .map_err(ApiError::from)
}

/// The cluster's part of a definition (the engine checks the rest).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Placement {
    constraints: Option<Value>,
    resources: Option<Value>,
    max_results: Option<Value>,
}

pub async fn create(
    ctx: web::Data<TasksCtx>,
    req: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let v = body.into_inner();
    let def = JobDef::parse(&v).map_err(bad)?;
    let p: Placement = serde_json::from_value(v.clone()).unwrap_or_default();
    let constraints = match p.constraints {
        None => edgerun_model::Constraints::default(),
        Some(c) => serde_json::from_value::<ConstraintsDto>(c)
            .map_err(|e| bad_field("constraints", e))?
            .into_constraints("")?,
    };
    let resources = match p.resources {
        None => ResourcesDto::default(),
        Some(r) => {
            serde_json::from_value::<ResourcesDto>(r).map_err(|e| bad_field("resources", e))?
        }
    };
    let max_results = match p.max_results {
        None => ctx.streams.max_results,
        Some(m) => m
            .as_u64()
            .and_then(|m| u32::try_from(m).ok())
            .filter(|m| (1..=MAX_RESULTS_LIMIT).contains(m))
            .ok_or_else(|| bad_field("max_results", format!("1 to {MAX_RESULTS_LIMIT}")))?,
    };
    let id = ctx
        .proposer
        .create_stream(StreamSpec {
            name: def.name,
            definition: v.to_string(),
            constraints,
            resources: edgerun_model::Resources {
                cpu_millis: resources.cpu_millis,
                memory_mb: resources.memory_mb,
                network: resources.network,
                disk_mb: resources.disk_mb,
            },
            checkpoint_ms: def.checkpoint_ms,
            max_results,
            submitter: submitter(&req),
        })
        .await?;
    read_own(&ctx).await?;
    let mut r = render(&ctx, id)?;
    *r.status_mut() = actix_web::http::StatusCode::CREATED;
    Ok(r)
}

pub async fn list(ctx: web::Data<TasksCtx>) -> Result<HttpResponse, ApiError> {
    read_own(&ctx).await?;
    let streams: Vec<StreamView> = ctx
        .node
        .read(|s| s.streams.jobs.values().map(view).collect());
    Ok(HttpResponse::Ok().json(json!({ "streams": streams })))
}

pub async fn get(
    ctx: web::Data<TasksCtx>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    read_own(&ctx).await?;
    render(&ctx, id)
}

async fn control(
    ctx: &TasksCtx,
    id: StreamId,
    action: StreamAction,
) -> Result<StreamStatus, ApiError> {
    ctx.proposer
        .control_stream(id, action)
        .await?
        .ok_or_else(|| not_found(id))
}

pub async fn pause(
    ctx: web::Data<TasksCtx>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    control(&ctx, id, StreamAction::Pause).await?;
    read_own(&ctx).await?;
    render(&ctx, id)
}

pub async fn resume(
    ctx: web::Data<TasksCtx>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    control(&ctx, id, StreamAction::Resume).await?;
    read_own(&ctx).await?;
    render(&ctx, id)
}

pub async fn delete(
    ctx: web::Data<TasksCtx>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let status = control(&ctx, id, StreamAction::Delete).await?;
    Ok(HttpResponse::Ok().json(json!({ "id": id, "status": status.as_str() })))
}

/// Records into an `http` source: `202 {"accepted": n}` once they are in a checkpoint.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    batch_id: Option<String>,
}

/// Longest `batch_id`.
const MAX_BATCH_ID: usize = 128;

pub async fn records(
    ctx: web::Data<TasksCtx>,
    id: web::Path<String>,
    q: web::Query<RecordsQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let batch_id = q.into_inner().batch_id;
    if batch_id
        .as_ref()
        .is_some_and(|b| b.is_empty() || b.len() > MAX_BATCH_ID)
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("batch_id: 1 to {MAX_BATCH_ID} bytes"),
        ));
    }
    let source = ctx.node.read(|s| {
        s.streams.get(id).map(|j| {
            serde_json::from_str::<Value>(&j.spec.definition)
                .ok()
                .and_then(|d| d.get("source")?.get("type")?.as_str().map(String::from))
                .unwrap_or_default()
        })
    });
    match source.as_deref() {
        None => return Err(not_found(id)),
        Some("http") => {}
        Some(other) => {
            return Err(ApiError::Conflict {
                code: ErrorCode::NotHttpSource,
                message: format!(
                    "stream job {id} reads from a {other} source; records are POSTed only to an http source"
                ),
                details: json!({ "source": other }),
            })
        }
    }
    let body = crate::body::read_capped(payload, ctx.streams.max_body).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "no records: send a JSON array of objects or JSON lines",
        ));
    }
    match ctx.node.ingest(id, body, batch_id).await {
        Ok(n) => Ok(HttpResponse::Accepted().json(json!({ "accepted": n }))),
        Err(IngestRefusal::Full { retry_after_ms }) => Err(ApiError::TooMany {
            code: ErrorCode::StreamBusy,
            message: format!(
                "stream job {id} is behind: its input queue is full; retry after a moment"
            ),
            retry_after_secs: retry_after_ms.div_ceil(1000),
        }),
        Err(IngestRefusal::NotHere(_)) => Err(ApiError::Unavailable {
            code: ErrorCode::StreamMoving,
            message: format!(
                "stream job {id} is not running right now (starting, moving to another node, or paused); retry"
            ),
            details: json!({ "id": id }),
        }),
        Err(IngestRefusal::Failed(msg)) => Err(ApiError::Unavailable {
            code: ErrorCode::StreamUnavailable,
            message: msg,
            details: json!({ "id": id }),
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// Results of a `results` sink, oldest first, after the `after` cursor.
pub async fn results(
    ctx: web::Data<TasksCtx>,
    id: web::Path<String>,
    q: web::Query<ResultsQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidLimit,
            format!("limit {limit} is out of range 1..={MAX_PAGE}"),
        ));
    }
    read_own(&ctx).await?;
    let page = ctx.node.read(|s| {
        s.streams.get(id).map(|_| {
            s.streams
                .results(id, q.after.unwrap_or(0), limit)
                .into_iter()
                .map(|r| {
                    let mut v: Value = serde_json::from_str(&r.json).unwrap_or(Value::Null);
                    if let Value::Object(m) = &mut v {
                        m.insert("seq".into(), json!(r.seq));
                    }
                    (r.seq, v)
                })
                .collect::<Vec<_>>()
        })
    });
    let page = page.ok_or_else(|| not_found(id))?;
    let next = page.last().map(|(seq, _)| *seq);
    let results: Vec<Value> = page.into_iter().map(|(_, v)| v).collect();
    Ok(HttpResponse::Ok().json(json!({ "results": results, "next": next })))
}
