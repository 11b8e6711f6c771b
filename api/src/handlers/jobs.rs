//! /v1/jobs: periodic jobs (cron with seconds and a time zone).

use actix_web::{web, HttpRequest, HttpResponse};
use edgerun_actors::now_ms;
use edgerun_actors::scheduler::cron;
use edgerun_model::{Job, JobId, JobSpec, Misfire, Overlap};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::dto::TaskSubmission;
use crate::error::{ApiError, ErrorCode};
use crate::handlers::tasks::{submitter, TasksCtx};

/// Longest job name.
const MAX_NAME: usize = 200;
/// Default and largest `misfire_deadline_ms`.
const DEFAULT_DEADLINE_MS: u64 = 60_000;
const MAX_DEADLINE_MS: u64 = 7 * 86_400_000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSubmission {
    pub name: String,
    pub schedule: String,
    #[serde(default = "utc")]
    pub timezone: String,
    pub task: TaskSubmission,
    #[serde(default)]
    #[schema(value_type = crate::openapi::OverlapDoc)]
    pub overlap: Overlap,
    #[serde(default)]
    #[schema(value_type = crate::openapi::MisfireDoc)]
    pub misfire: Misfire,
    pub misfire_deadline_ms: Option<u64>,
}

fn utc() -> String {
    "UTC".into()
}

fn bad(field: &str, msg: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest {
        code: ErrorCode::InvalidJob,
        message: format!("{field}: {msg}"),
        details: json!({ "field": field }),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct FireView {
    slot: u64,
    decided_at: u64,
    task: Option<u64>,
    skipped: Option<String>,
}

/// A job as GET /v1/jobs/{id} shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Job)]
pub(crate) struct JobView<'a> {
    id: JobId,
    name: &'a str,
    schedule: &'a str,
    timezone: &'a str,
    #[schema(value_type = crate::openapi::OverlapDoc)]
    overlap: &'static str,
    #[schema(value_type = crate::openapi::MisfireDoc)]
    misfire: &'static str,
    misfire_deadline_ms: u64,
    kernel: &'a str,
    created_at: u64,
    /// Slots that made a task.
    fires: u64,
    /// Slots decided and skipped (misfire, overlap).
    skipped: u64,
    /// The last slot that made a task, and that task.
    last_fire: Option<u64>,
    last_task: Option<u64>,
    /// The last slot decided; no slot at or before it will fire.
    last_slot: Option<u64>,
    /// The next slot after the last decided one.
    next_fire: Option<u64>,
    recent: Vec<FireView>,
}

fn view(j: &Job) -> JobView<'_> {
    let next_fire = cron::parse(&j.spec.schedule, &j.spec.timezone)
        .ok()
        .and_then(|(s, tz)| {
            cron::next_slot(
                &s,
                tz,
                j.last_slot_ms.unwrap_or(j.created_at_ms).max(now_ms()),
            )
        });
    JobView {
        id: j.id,
        name: &j.spec.name,
        schedule: &j.spec.schedule,
        timezone: &j.spec.timezone,
        overlap: j.spec.overlap.as_str(),
        misfire: j.spec.misfire.as_str(),
        misfire_deadline_ms: j.spec.misfire_deadline_ms,
        kernel: j.spec.task.kind_name(),
        created_at: j.created_at_ms,
        fires: j.fires,
        skipped: j.skipped,
        last_fire: j.last_fire_ms,
        last_task: j.last_task,
        last_slot: j.last_slot_ms,
        next_fire,
        recent: j
            .recent
            .iter()
            .map(|r| FireView {
                slot: r.slot_ms,
                decided_at: r.decided_at_ms,
                task: r.task,
                skipped: r.skipped.clone(),
            })
            .collect(),
    }
}

fn parse_job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse::<JobId>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidId,
                format!("job id {raw:?} is not a positive integer"),
            )
        })
}

fn render(ctx: &TasksCtx, id: JobId) -> Result<HttpResponse, ApiError> {
    ctx.node
        .read(|s| s.jobs.get(&id).map(|j| serde_json::to_value(view(j))))
        .ok_or_else(|| ApiError::NotFound(format!("no job with id {id}")))?
        .map(|v| HttpResponse::Ok().json(v))
        .map_err(|e| ApiError::Internal(format!("encoding job {id}: {e}")))
}

pub async fn create(
    ctx: web::Data<TasksCtx>,
    req: HttpRequest,
    body: web::Json<JobSubmission>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    if b.name.trim().is_empty() || b.name.len() > MAX_NAME {
        return Err(bad("name", format!("must be 1 to {MAX_NAME} bytes")));
    }
    cron::parse(&b.schedule, &b.timezone).map_err(|e| {
        let field = if e.starts_with("timezone") {
            "timezone"
        } else {
            "schedule"
        };
        bad(field, e)
    })?;
    let deadline = b.misfire_deadline_ms.unwrap_or(DEFAULT_DEADLINE_MS);
    if deadline > MAX_DEADLINE_MS {
        return Err(bad(
            "misfire_deadline_ms",
            format!("{deadline} is more than {MAX_DEADLINE_MS}"),
        ));
    }
    let modules = ctx.modules(b.task.module_ref().into_iter()).await;
    let mut task = b
        .task
        .into_spec("task.", &*ctx.kernels, &modules, &submitter(&req))?;
    if task.idempotency_key.is_some() {
        return Err(bad(
            "task.idempotency_key",
            "a job's tasks cannot share one key; each slot is fired at most once anyway",
        ));
    }
    if !task.after.is_empty() {
        return Err(bad(
            "task.after",
            "a job's tasks cannot wait for other tasks",
        ));
    }
    task.after.clear();
    let id = ctx
        .proposer
        .create_job(JobSpec {
            name: b.name,
            schedule: b.schedule,
            timezone: b.timezone,
            task,
            overlap: b.overlap,
            misfire: b.misfire,
            misfire_deadline_ms: deadline,
        })
        .await?;
    read_own(&ctx).await?;
    let mut r = render(&ctx, id)?;
    *r.status_mut() = actix_web::http::StatusCode::CREATED;
    Ok(r)
}

/// After a write applied on the leader, wait until this node has it too.
async fn read_own(ctx: &TasksCtx) -> Result<(), ApiError> {
    ctx.node
        .read_barrier(ctx.read_timeout)
        .await
        .map_err(ApiError::from)
}

pub async fn list(ctx: web::Data<TasksCtx>) -> Result<HttpResponse, ApiError> {
    read_own(&ctx).await?;
    let jobs = ctx
        .node
        .read(|s| serde_json::to_value(s.jobs.values().map(view).collect::<Vec<_>>()));
    let jobs = jobs.map_err(|e| ApiError::Internal(format!("encoding jobs: {e}")))?;
    Ok(HttpResponse::Ok().json(json!({ "jobs": jobs })))
}

pub async fn get(
    ctx: web::Data<TasksCtx>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_job_id(&id)?;
    read_own(&ctx).await?;
    render(&ctx, id)
}

pub async fn delete(
    ctx: web::Data<TasksCtx>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_job_id(&id)?;
    if ctx.proposer.delete_job(id).await? {
        Ok(HttpResponse::Ok().json(json!({ "id": id, "deleted": true })))
    } else {
        Err(ApiError::NotFound(format!("no job with id {id}")))
    }
}
