//! The OpenAPI 3.1 document served at `GET /v1/openapi.json`.
//!
//! Request and response bodies are the handlers' own types (`dto.rs`, `jobs.rs`, ...)
//! deriving `ToSchema`; the shapes that handlers build inline are described here next to
//! the operations. Every route of `routes.rs` but the `/v1/debug` test hooks (off unless
//! `debug.fault_injection`) is an operation here: `routes::ROUTES` lists them and a test
//! checks the two agree. schemathesis (`scripts/schemathesis`) checks the running API
//! against this document.

#![allow(dead_code)] // the operation functions below exist only to carry their attributes

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::auth::TokenRequest;
use crate::dto::{
    AffinityDto, AttemptView, BatchSubmission, ConstraintsDto, ConstraintsView, ErrorDto, ExecDto,
    HttpDto, JobFireView, OneOrMany, ResourcesDto, ResultStoredView, RetryDto, RetryView, TaskDto,
    TaskSubmission, WasmDto,
};
use crate::handlers::admin::{LogChange, LogView, ReloadReport};
use crate::handlers::cluster::NewLearner;
use crate::handlers::jobs::{FireView, JobSubmission, JobView};
use crate::handlers::modules::ModuleView;
use crate::handlers::streams::{CheckpointView, StreamMetricsView, StreamView};
use crate::handlers::tasks::WaitMany;

#[derive(ToSchema)]
#[schema(as = Tier)]
#[allow(non_camel_case_types)]
pub enum TierDoc {
    cloud,
    edge,
}

#[derive(ToSchema)]
#[schema(as = Placement)]
#[allow(non_camel_case_types)]
pub enum PlacementDoc {
    binpack,
    spread,
}

#[derive(ToSchema)]
#[schema(as = TaskStatus)]
#[allow(non_camel_case_types)]
pub enum StatusDoc {
    pending,
    scheduled,
    running,
    succeeded,
    failed,
    timed_out,
    cancelled,
}

#[derive(ToSchema)]
#[schema(as = Isolation)]
#[allow(non_camel_case_types)]
pub enum IsolationDoc {
    container,
    process,
    inproc,
    wasm,
    http,
}

#[derive(ToSchema)]
#[schema(as = Overlap)]
#[allow(non_camel_case_types)]
pub enum OverlapDoc {
    forbid,
    allow,
}

#[derive(ToSchema)]
#[schema(as = Misfire)]
#[allow(non_camel_case_types)]
pub enum MisfireDoc {
    skip,
    fire_once,
    fire_all,
}

/// What a task asks for.
#[derive(ToSchema)]
#[schema(as = Resources)]
pub struct ResourcesDoc {
    cpu_millis: Option<u32>,
    memory_mb: Option<u32>,
    network: bool,
    /// Disk the task may write, in MiB (1..=1048576).
    #[schema(minimum = 1, maximum = 1048576)]
    disk_mb: Option<u32>,
}

/// Every error: `{"error": {"code", "message", "details"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: one of `ErrorCode`.
    code: crate::error::ErrorCode,
    message: String,
    /// More about the error (a field name, a limit, the leader's address), or null.
    details: serde_json::Value,
}

#[derive(ToSchema)]
pub struct BatchCreated {
    ids: Vec<u64>,
}

/// One page; `next` is the cursor for `after=` when the page is full.
#[derive(ToSchema)]
pub struct TaskPage {
    tasks: Vec<TaskDto<'static>>,
    next: Option<u64>,
}

#[derive(ToSchema)]
pub struct Health {
    status: String,
    node: u64,
}

#[derive(ToSchema)]
pub struct Ready {
    status: String,
    leader: u64,
    applied: u64,
}

#[derive(ToSchema)]
pub struct Token {
    /// A JWT for `Authorization: Bearer ...`.
    token: String,
    /// Seconds until it expires.
    expires_in: u64,
    role: String,
}

#[derive(ToSchema)]
pub struct Kernel {
    name: String,
    version: u32,
    description: String,
    /// JSON Schema of the input.
    input_schema: serde_json::Value,
    output_schema: serde_json::Value,
}

#[derive(ToSchema)]
pub struct Kernels {
    kernels: Vec<Kernel>,
}

#[derive(ToSchema)]
pub struct Member {
    id: u64,
    tier: Option<TierDoc>,
    /// `voter` or `learner`.
    role: String,
    api: String,
    rpc: String,
    /// `up`, `down` or `unregistered`.
    state: String,
    leader: bool,
}

/// Raft's view from the answering node.
#[derive(ToSchema)]
pub struct Cluster {
    id: u64,
    leader: Option<u64>,
    term: u64,
    last_applied: Option<u64>,
    last_log: Option<u64>,
    snapshot: Option<u64>,
    purged: Option<u64>,
    members: Vec<Member>,
    /// Tasks by status, as this node sees them.
    tasks: BTreeMap<String, u64>,
}

#[derive(ToSchema)]
pub struct Node {
    id: u64,
    cpu_millis: u32,
    memory_mb: u32,
    cpu_millis_used: u64,
    memory_mb_used: u64,
    tier: TierDoc,
    labels: BTreeMap<String, String>,
    api: String,
    rpc: String,
    slots: u32,
    /// Attempts placed on it and not ended.
    load: u64,
    registered_at: u64,
    up: bool,
    last_heartbeat: Option<u64>,
}

#[derive(ToSchema)]
pub struct Nodes {
    nodes: Vec<Node>,
}

#[derive(ToSchema)]
pub struct Jobs {
    jobs: Vec<JobView<'static>>,
}

/// A stream job as submitted (API.md "Stream jobs"); `source`, `sink` and each pipeline step
/// are checked by the engine, and a mistake is answered 400 naming the field.
#[derive(ToSchema)]
pub struct StreamSubmission {
    #[schema(min_length = 1, max_length = 128)]
    name: String,
    /// `{"type": "http"}`, `{"type": "mqtt", "url", "topic", "qos"}`, `{"type": "redis", "url",
    /// "stream", "group"}` or `{"type": "file", "path"}`.
    #[schema(value_type = Object)]
    source: serde_json::Value,
    /// `{"field", "max_delay_ms", "idle_ms"}`; no field = arrival time.
    #[schema(value_type = Option<Object>)]
    time: Option<serde_json::Value>,
    /// Steps: `{"filter": expr}`, `{"map": {field: expr}}`, `{"key_by": field}`, `{"window":
    /// {...}, "aggregate": {...}}` (last).
    #[schema(value_type = Option<Vec<Object>>)]
    pipeline: Option<Vec<serde_json::Value>>,
    /// `{"type": "results"}`, `mqtt {url, topic}`, `redis {url, stream}`, `http {url}`, `file
    /// {path}`.
    #[schema(value_type = Object)]
    sink: serde_json::Value,
    #[schema(minimum = 100, maximum = 3600000)]
    checkpoint_ms: Option<u64>,
    constraints: Option<ConstraintsDto>,
    resources: Option<ResourcesDto>,
    #[schema(minimum = 1, maximum = 1000000)]
    max_results: Option<u32>,
}

#[derive(ToSchema)]
pub struct Streams {
    streams: Vec<StreamView>,
}

#[derive(ToSchema)]
pub struct StreamDeleted {
    id: u64,
    /// `stopped`
    status: String,
}

#[derive(ToSchema)]
pub struct RecordsAccepted {
    /// Records taken (malformed ones included: they are counted in the job's `malformed`).
    accepted: u64,
}

#[derive(ToSchema)]
pub struct StreamResults {
    /// Each with `key`, `window_start`, `window_end`, the aggregates, `result_id` and `seq`.
    #[schema(value_type = Vec<Object>)]
    results: Vec<serde_json::Value>,
    /// The `after` of the next page (none when this page is empty).
    next: Option<u64>,
}

#[derive(ToSchema)]
pub struct JobDeleted {
    id: u64,
    deleted: bool,
}

// ---- operations -------------------------------------------------------------------------

#[utoipa::path(get, path = "/healthz", tag = "system", security(()),
    responses((status = 200, description = "The process is up", body = Health)))]
fn healthz() {}

#[utoipa::path(get, path = "/readyz", tag = "system", security(()),
    responses(
        (status = 200, description = "A leader is known and this node has applied entries", body = Ready),
        (status = 503, description = "Not ready yet", body = ErrorBody)))]
fn readyz() {}

#[utoipa::path(get, path = "/metrics", tag = "system", security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
fn metrics() {}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "system", security(()),
    responses((status = 200, description = "This document", body = Object)))]
fn openapi() {}

#[utoipa::path(post, path = "/v1/auth/token", tag = "auth", security(()),
    request_body = TokenRequest,
    responses(
        (status = 200, description = "A token for the key's role", body = Token),
        (status = 400, description = "Malformed body, or auth is off", body = ErrorBody),
        (status = 401, description = "Unknown API key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody)))]
fn token() {}

#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = TaskSubmission,
    responses(
        (status = 201, description = "Stored", body = TaskDto),
        (status = 200, description = "An earlier submission with the same idempotency_key", body = TaskDto),
        (status = 400, description = "Malformed or invalid", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Unknown kernel or input not fitting its schema", body = ErrorBody),
        (status = 429, description = "Rate limited or too many pending tasks; nothing stored", body = ErrorBody),
        (status = 503, description = "No leader now; retry", body = ErrorBody)))]
fn submit() {}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks",
    params(
        ("status" = Option<String>, Query, description = "pending, scheduled, running, succeeded, failed, timed_out or cancelled"),
        ("limit" = Option<u64>, Query, description = "1 to 1000 (100)"),
        ("after" = Option<u64>, Query, description = "The `next` of the previous page"),
        ("stale" = Option<bool>, Query, description = "Read this node's copy")),
    responses(
        (status = 200, description = "Oldest first", body = TaskPage),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader to confirm the read", body = ErrorBody)))]
fn list() {}

#[utoipa::path(post, path = "/v1/tasks/batch", tag = "tasks", request_body = BatchSubmission,
    responses(
        (status = 201, description = "All stored, in order", body = BatchCreated),
        (status = 400, description = "Malformed or invalid (nothing stored)", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "A task's kernel or input is invalid (nothing stored)", body = ErrorBody),
        (status = 429, description = "Rate limited or too many pending tasks; nothing stored", body = ErrorBody),
        (status = 503, description = "No leader now; retry", body = ErrorBody)))]
fn submit_batch() {}

/// `?view=` of `GET /v1/tasks/{id}`.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ViewDoc {
    Summary,
    Full,
}

/// One ended task in a `POST /v1/tasks/wait` answer.
#[derive(ToSchema)]
pub struct WaitEnded {
    pub id: u64,
    /// succeeded, failed, timed_out or cancelled
    pub status: String,
    pub error: Option<ErrorDto<'static>>,
}

/// The answer of `POST /v1/tasks/wait`.
#[derive(ToSchema)]
pub struct WaitManyAnswer {
    /// The listed tasks that have ended.
    pub ended: Vec<WaitEnded>,
    /// The listed tasks still pending or running when the call returned.
    pub pending: Vec<u64>,
    /// Listed ids with no task (never submitted, or collected by retention).
    pub not_found: Vec<u64>,
}

#[utoipa::path(post, path = "/v1/tasks/wait", tag = "tasks", request_body = WaitMany,
    responses(
        (status = 200, description = "Once every listed task has ended, or when the timeout passes", body = WaitManyAnswer),
        (status = 400, description = "Malformed body, no ids, more than 10,000, or a bad timeout", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader to confirm the read", body = ErrorBody)))]
fn wait_many() {}

#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = u64, Path, minimum = 1), ("stale" = Option<bool>, Query),
        ("view" = Option<ViewDoc>, Query, description = "full: also `submitted` (the kernel and its input, or the exec argv and env names; env values are never shown)")),
    responses(
        (status = 200, description = "The task", body = TaskDto),
        (status = 400, description = "Bad id or query", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader to confirm the read, or the result's node is down", body = ErrorBody)))]
fn get_task() {}

#[utoipa::path(get, path = "/v1/tasks/{id}/wait", tag = "tasks",
    params(("id" = u64, Path, minimum = 1),
        ("timeout" = Option<String>, Query, description = "30s, 500ms, 2m or seconds; at most 300 s"),
        ("stale" = Option<bool>, Query)),
    responses(
        (status = 200, description = "The task once ended, or as it is when the timeout passes", body = TaskDto),
        (status = 400, description = "Bad id or query", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader to confirm the read", body = ErrorBody)))]
fn wait() {}

#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks",
    params(("id" = u64, Path, minimum = 1)),
    responses(
        (status = 200, description = "Cancelled (its running attempt is stopped)", body = TaskDto),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "Already ended", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader now; retry", body = ErrorBody)))]
fn cancel() {}

#[utoipa::path(get, path = "/v1/dlq", tag = "tasks",
    params(("limit" = Option<u64>, Query), ("after" = Option<u64>, Query), ("stale" = Option<bool>, Query)),
    responses(
        (status = 200, description = "Dead-lettered tasks, oldest first", body = TaskPage),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader to confirm the read", body = ErrorBody)))]
fn dlq() {}

#[utoipa::path(post, path = "/v1/dlq/{id}/requeue", tag = "tasks",
    params(("id" = u64, Path, minimum = 1)),
    responses(
        (status = 200, description = "Pending again with fresh attempts", body = TaskDto),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "Not in the dead-letter queue", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader now; retry", body = ErrorBody)))]
fn requeue() {}

#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = JobSubmission,
    responses(
        (status = 201, description = "Stored", body = JobView),
        (status = 400, description = "Malformed or invalid (schedule, zone, ...)", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "The task's kernel or input is invalid", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader now; retry", body = ErrorBody)))]
fn create_job() {}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    responses(
        (status = 200, description = "Every job", body = Jobs),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader to confirm the read", body = ErrorBody)))]
fn list_jobs() {}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = u64, Path, minimum = 1)),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader to confirm the read", body = ErrorBody)))]
fn get_job() {}

#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = u64, Path, minimum = 1)),
    responses(
        (status = 200, description = "Deleted (its tasks are kept)", body = JobDeleted),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader now; retry", body = ErrorBody)))]
fn delete_job() {}

/// A module's `.wasm` bytes.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct WasmBytes(#[allow(dead_code)] Vec<u8>);

#[derive(ToSchema)]
pub struct Modules {
    modules: Vec<ModuleView>,
}

#[derive(ToSchema)]
pub struct ModuleDeleted {
    id: String,
    deleted: bool,
}

#[utoipa::path(post, path = "/v1/modules", tag = "modules",
    params(("name" = String, Query, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]+$",
        description = "The module's name: tasks may name it instead of its id (the latest upload under it)")),
    request_body(content = WasmBytes, content_type = "application/octet-stream",
        description = "The .wasm bytes of a WASI preview-1 command module (sent as application/wasm or application/octet-stream: the type is not checked)"),
    responses(
        (status = 201, description = "Checked and stored", body = ModuleView),
        (status = 200, description = "The same bytes were there already (the name now points to them)", body = ModuleView),
        (status = 400, description = "Not a WASI preview-1 command module, an empty body or a bad name", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 413, description = "Over executor.max_module_bytes", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader now, or no wasm runtime on this node; retry", body = ErrorBody)))]
fn upload_module() {}

#[utoipa::path(get, path = "/v1/modules", tag = "modules",
    responses(
        (status = 200, description = "Every module (without its bytes)", body = Modules),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader to confirm the read", body = ErrorBody)))]
fn list_modules() {}

#[utoipa::path(get, path = "/v1/modules/{id}", tag = "modules",
    params(("id" = String, Path, description = "sha256:<hex>, or a name")),
    responses(
        (status = 200, description = "The module", body = ModuleView),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "No such module", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader to confirm the read", body = ErrorBody)))]
fn get_module() {}

#[utoipa::path(delete, path = "/v1/modules/{id}", tag = "modules",
    params(("id" = String, Path, description = "sha256:<hex>")),
    responses(
        (status = 200, description = "Removed", body = ModuleDeleted),
        (status = 400, description = "Not a module id", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "No such module", body = ErrorBody),
        (status = 409, description = "A task that has not ended, or a job, uses it", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader now; retry", body = ErrorBody)))]
fn delete_module() {}

#[utoipa::path(post, path = "/v1/streams", tag = "streams", request_body = StreamSubmission,
    responses(
        (status = 201, description = "Stored; placed on a node shortly (status starting)", body = StreamView),
        (status = 400, description = "Malformed or invalid; `details.field` names the field", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader now; retry", body = ErrorBody)))]
fn create_stream() {}

#[utoipa::path(get, path = "/v1/streams", tag = "streams",
    responses(
        (status = 200, description = "Every stream job", body = Streams),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader to confirm the read", body = ErrorBody)))]
fn list_streams() {}

#[utoipa::path(get, path = "/v1/streams/{id}", tag = "streams",
    params(("id" = u64, Path, minimum = 1)),
    responses(
        (status = 200, description = "The stream job", body = StreamView),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "No such stream job", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader to confirm the read", body = ErrorBody)))]
fn get_stream() {}

#[utoipa::path(delete, path = "/v1/streams/{id}", tag = "streams",
    params(("id" = u64, Path, minimum = 1)),
    responses(
        (status = 200, description = "Stopped and removed (what its sinks hold is kept)", body = StreamDeleted),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "No such stream job", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader now; retry", body = ErrorBody)))]
fn delete_stream() {}

#[utoipa::path(post, path = "/v1/streams/{id}/pause", tag = "streams",
    params(("id" = u64, Path, minimum = 1)),
    responses(
        (status = 200, description = "Paused (its runner stops; a resume goes on from the last checkpoint)", body = StreamView),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "No such stream job", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader now; retry", body = ErrorBody)))]
fn pause_stream() {}

#[utoipa::path(post, path = "/v1/streams/{id}/resume", tag = "streams",
    params(("id" = u64, Path, minimum = 1)),
    responses(
        (status = 200, description = "Starting again from its last checkpoint (a paused or failed job)", body = StreamView),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "No such stream job", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader now; retry", body = ErrorBody)))]
fn resume_stream() {}

#[utoipa::path(post, path = "/v1/streams/{id}/records", tag = "streams",
    params(("id" = u64, Path, minimum = 1),
        ("batch_id" = Option<String>, Query, min_length = 1, max_length = 128,
            description = "The caller's id for this batch: sent again (its answer was lost), it is not taken twice (the job remembers its last 10,000)")),
    request_body(content = Vec<Object>, description = "A JSON array of records, or JSON lines (one record per line)"),
    responses(
        (status = 202, description = "Taken, and in a committed checkpoint", body = RecordsAccepted),
        (status = 400, description = "Bad id or an empty body", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "No such stream job", body = ErrorBody),
        (status = 409, description = "The job's source is not http", body = ErrorBody),
        (status = 413, description = "Body over streams.max_body_bytes", body = ErrorBody),
        (status = 429, description = "The job's input queue is full (or rate limited); retry after Retry-After", body = ErrorBody),
        (status = 503, description = "The job is not running now, or its node cannot be reached; send again", body = ErrorBody)))]
fn stream_records() {}

#[utoipa::path(get, path = "/v1/streams/{id}/results", tag = "streams",
    params(("id" = u64, Path, minimum = 1),
        ("after" = Option<u64>, Query, description = "Results after this seq (the last page's next)"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 10000)),
    responses(
        (status = 200, description = "Results of a results sink, oldest first", body = StreamResults),
        (status = 400, description = "Bad id or query", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "No such stream job", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader to confirm the read", body = ErrorBody)))]
fn stream_results() {}

#[utoipa::path(get, path = "/v1/events", tag = "tasks",
    params(
        ("task" = Option<u64>, Query, minimum = 1, description = "Only this task's changes"),
        ("status" = Option<String>, Query, description = "Only these statuses, comma-separated"),
        ("kinds" = Option<String>, Query, description = "task, leader, node (all by default)"),
        ("max_secs" = Option<u64>, Query, maximum = 604800, description = "End the stream after this long, at most 604800 s (forever by default)")),
    responses(
        (status = 200, description = "Server-Sent Events: `event: task|leader|node|lagged` with a JSON `data` line each", body = String, content_type = "text/event-stream"),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody)))]
fn events() {}

#[utoipa::path(get, path = "/v1/kernels", tag = "system",
    responses(
        (status = 200, description = "The kernels and their input schemas", body = Kernels),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody)))]
fn kernels() {}

#[utoipa::path(get, path = "/v1/cluster", tag = "cluster",
    responses(
        (status = 200, description = "Members, leader and Raft indexes", body = Cluster),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody)))]
fn cluster() {}

#[utoipa::path(post, path = "/v1/cluster/learners", tag = "cluster", request_body = NewLearner,
    responses(
        (status = 200, description = "Added; it catches up and can be promoted", body = Cluster),
        (status = 400, description = "Malformed or invalid member", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 409, description = "The change conflicts with the membership", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader now, or the change did not finish; retry", body = ErrorBody)))]
fn add_learner() {}

#[utoipa::path(post, path = "/v1/cluster/members/{id}/promote", tag = "cluster",
    params(("id" = u64, Path, minimum = 1)),
    responses(
        (status = 200, description = "A voter now", body = Cluster),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "Not a member", body = ErrorBody),
        (status = 409, description = "Not a learner of this cluster", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader now, or the change did not finish; retry", body = ErrorBody)))]
fn promote() {}

#[utoipa::path(delete, path = "/v1/cluster/members/{id}", tag = "cluster",
    params(("id" = u64, Path, minimum = 1)),
    responses(
        (status = 200, description = "Removed", body = Cluster),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 404, description = "Not a member", body = ErrorBody),
        (status = 409, description = "The change conflicts with the membership", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader now, or the change did not finish; retry", body = ErrorBody)))]
fn remove() {}

#[utoipa::path(get, path = "/v1/nodes", tag = "cluster",
    responses(
        (status = 200, description = "Registered nodes with capacity and load", body = Nodes),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody)))]
fn nodes() {}

#[derive(ToSchema)]
pub struct AlertDoc {
    /// Unique while firing: the kind, and for node_down and disk the node (`node_down:3`).
    name: String,
    /// node_down, pending, failure_rate or disk.
    kind: String,
    message: String,
    /// When it started firing (ms since the epoch).
    since_ms: u64,
    /// Evaluated from the replicated state (the same on every node) or about this node.
    cluster: bool,
}

#[derive(ToSchema)]
pub struct AlertsDoc {
    node: u64,
    alerts: Vec<AlertDoc>,
}

#[utoipa::path(get, path = "/v1/alerts", tag = "cluster",
    responses(
        (status = 200, description = "Alerts firing now, oldest first", body = AlertsDoc),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody)))]
fn alerts() {}

#[utoipa::path(get, path = "/", tag = "system", security(()),
    responses((status = 200, description = "The dashboard (one HTML page; it asks for a token when auth is on)", body = String, content_type = "text/html")))]
fn dashboard() {}

#[utoipa::path(get, path = "/v1/admin/log", tag = "admin",
    responses(
        (status = 200, description = "This node's log filter and format", body = LogView),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody)))]
fn get_log() {}

#[utoipa::path(put, path = "/v1/admin/log", tag = "admin", request_body = LogChange,
    responses(
        (status = 200, description = "The new filter is in force on this node", body = LogView),
        (status = 400, description = "Not a filter; nothing changed", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody)))]
fn set_log() {}

#[utoipa::path(post, path = "/v1/admin/reload", tag = "admin",
    responses(
        (status = 200, description = "This node re-read its configuration (as on SIGHUP)", body = ReloadReport),
        (status = 400, description = "The configuration is invalid now; nothing changed", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody)))]
fn reload() {}

#[utoipa::path(get, path = "/v1/admin/snapshot", tag = "admin",
    responses(
        (status = 200, description = "A backup of the replicated state: a header line with its SHA-256, then the snapshot (edgerun backup --out FILE)", body = String, content_type = "application/octet-stream"),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Role too weak", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No leader to confirm the state is current; retry", body = ErrorBody)))]
fn snapshot() {}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "POST /v1/auth/token {\"api_key\"} gives one; roles viewer < operator < admin",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "edgerun", description = "A compute cluster for the edge: tasks, jobs, stream jobs, cluster membership."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    paths(healthz, readyz, metrics, openapi, token, submit, list, submit_batch, wait_many, get_task, wait,
        cancel, dlq, requeue, events, create_job, list_jobs, get_job, delete_job,
        upload_module, list_modules, get_module, delete_module,
        create_stream, list_streams, get_stream, delete_stream, pause_stream, resume_stream,
        stream_records, stream_results, kernels, cluster,
        add_learner, promote, remove, nodes, alerts, dashboard, get_log, set_log, reload, snapshot),
    components(schemas(ErrorBody, ErrorDetail, crate::error::ErrorCode, TaskDto, TaskSubmission, BatchSubmission,
        ExecDto, OneOrMany, ConstraintsDto, AffinityDto, ResourcesDto, RetryDto, ErrorDto,
        ConstraintsView, RetryView, AttemptView, ResultStoredView, JobFireView, FireView,
        JobView, JobSubmission, NewLearner, TokenRequest, LogView, LogChange, ReloadReport,
        WaitMany, WaitManyAnswer, WaitEnded, ViewDoc, StreamSubmission, StreamView,
        StreamMetricsView, CheckpointView, Streams, StreamDeleted, RecordsAccepted, StreamResults,
        WasmDto, HttpDto, ModuleView, Modules, ModuleDeleted, WasmBytes))
)]
pub struct ApiDoc;

/// The document, rendered once.
pub fn json() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"rendering the OpenAPI document: {e}\"}}"))
    })
}

/// GET /v1/openapi.json
pub async fn serve() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .body(json())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn the_document_lists_exactly_the_documented_routes() {
        let doc: serde_json::Value =
            serde_json::from_str(super::json()).unwrap_or_else(|e| panic!("{e}"));
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, _) in item.as_object().into_iter().flatten() {
                ops.insert((method.clone(), path.clone()));
            }
        }
        let want: BTreeSet<(String, String)> = crate::routes::documented()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(ops, want);
        // Every schema a body refers to is in the components.
        let text = super::json();
        let schemas = doc["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap_or("");
            assert!(schemas.contains_key(name), "missing schema {name}");
        }
    }

    #[test]
    fn the_document_lists_every_error_code_by_the_name_the_api_answers() {
        let doc: serde_json::Value =
            serde_json::from_str(super::json()).unwrap_or_else(|e| panic!("{e}"));
        let listed: BTreeSet<String> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        let all: BTreeSet<String> = crate::error::ErrorCode::ALL
            .iter()
            .map(|c| c.as_str().to_string())
            .collect();
        assert_eq!(listed, all);
        assert!(
            all.contains("invalid_task") && all.contains("no_leader"),
            "{all:?}"
        );
        for c in crate::error::ErrorCode::ALL {
            // What the body says (serde) is what the code is called everywhere else.
            assert_eq!(serde_json::json!(c), serde_json::json!(c.as_str()));
        }
        let detail = &doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"];
        assert_eq!(detail["$ref"], "#/components/schemas/ErrorCode", "{detail}");
    }
}
