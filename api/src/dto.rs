//! The JSON shapes of API.md, and their conversion to and from the model.

use std::collections::BTreeMap;

use edgerun_actors::Kernels;
use edgerun_model::{
    Affinity, Constraints, Placement, Resources, RetryPolicy, Task, TaskSpec, Tier, Work,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{ApiError, ErrorCode};

/// The shortest `timeout_ms` accepted: below it a timeout could not be enforced (starting
/// an attempt alone takes about that long).
pub const MIN_TIMEOUT_MS: u64 = 10;

/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;
/// Most tasks in one batch submission.
pub const MAX_BATCH: usize = 10_000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecDto {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A WebAssembly task: a module uploaded with `POST /v1/modules`, by id or name; the task's
/// `input` is its stdin.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WasmDto {
    /// `sha256:<hex>` or a name (the latest upload under it, fixed at submission).
    pub module: String,
    #[serde(default)]
    pub args: Vec<String>,
}

/// An HTTP task: the node calls `url` (only hosts in its `executor.http_allow`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpDto {
    /// GET (default), POST, PUT, PATCH, DELETE or HEAD.
    pub method: Option<String>,
    /// `http://` or `https://`.
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Any JSON, sent as the request body.
    #[schema(value_type = Option<Object>)]
    pub body: Option<Box<RawValue>>,
    /// `[lo, hi]`: the statuses that count as success (default `[200, 299]`).
    pub expect_status: Option<[u16; 2]>,
}

const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];
const MAX_HTTP_HEADERS: usize = 64;
const MAX_URL: usize = 8192;

impl HttpDto {
    fn into_call(self, at: &str) -> Result<edgerun_model::HttpCall, ApiError> {
        let method = self
            .method
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase();
        if !HTTP_METHODS.contains(&method.as_str()) {
            return Err(bad(
                &format!("{at}http.method"),
                format!("{method:?}: one of {}", HTTP_METHODS.join(", ")),
            ));
        }
        let scheme_ok = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !scheme_ok || self.url.len() > MAX_URL || self.url.chars().any(char::is_whitespace) {
            return Err(bad(
                &format!("{at}http.url"),
                format!("an http:// or https:// URL of at most {MAX_URL} bytes, without spaces"),
            ));
        }
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        if self.headers.len() > MAX_HTTP_HEADERS
            || self
                .headers
                .iter()
                .any(|(k, v)| !token(k) || v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0))
        {
            return Err(bad(
                &format!("{at}http.headers"),
                format!("at most {MAX_HTTP_HEADERS} headers: names are HTTP tokens, values have no CR, LF or NUL"),
            ));
        }
        let (lo, hi) = match self.expect_status {
            None => (200, 299),
            Some([lo, hi]) if (100..=599).contains(&lo) && (lo..=599).contains(&hi) => (lo, hi),
            Some(_) => {
                return Err(bad(
                    &format!("{at}http.expect_status"),
                    "[lo, hi] with 100 <= lo <= hi <= 599",
                ))
            }
        };
        Ok(edgerun_model::HttpCall {
            method,
            url: self.url,
            headers: self.headers,
            body: self.body.map(|b| b.get().to_string()),
            expect_status: (lo, hi),
        })
    }
}

/// Most arguments of a wasm task, and the longest one.
pub const MAX_WASM_ARGS: usize = 64;
pub const MAX_WASM_ARG_BYTES: usize = 4096;

/// A label value, or a set of accepted values.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConstraintsDto {
    #[schema(value_type = Option<crate::openapi::TierDoc>)]
    pub tier: Option<Tier>,
    /// `{"region": "eu-west"}` (equality) or `{"region": ["eu-west", "eu-north"]}` (one of).
    #[serde(default)]
    pub labels: BTreeMap<String, OneOrMany>,
}

impl ConstraintsDto {
    /// Checked (`at` prefixes the field in errors, e.g. `task.`).
    pub fn into_constraints(self, at: &str) -> Result<Constraints, ApiError> {
        let mut labels = BTreeMap::new();
        for (k, v) in self.labels {
            let vs = v.into_vec();
            if vs.is_empty() {
                return Err(bad(
                    &format!("{at}constraints.labels.{k}"),
                    "give a value or a non-empty list of values",
                ));
            }
            labels.insert(k, vs);
        }
        Ok(Constraints {
            tier: self.tier,
            labels,
        })
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AffinityDto {
    pub label: String,
    pub values: OneOrMany,
    pub weight: i32,
}

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesDto {
    pub cpu_millis: Option<u32>,
    pub memory_mb: Option<u32>,
    #[serde(default)]
    pub network: bool,
    /// Disk the task may write, in MiB (1..=1048576); default `executor.default_disk_mb`.
    #[schema(minimum = 1, maximum = 1048576)]
    pub disk_mb: Option<u32>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryDto {
    pub max_attempts: Option<u32>,
    pub backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    /// 0.0..=1.0: the share of each delay that may be taken off at random.
    pub jitter: Option<f64>,
}

/// Most task ids in one `after`.
pub const MAX_AFTER: usize = 100;

/// A task as submitted (API.md).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSubmission {
    /// A kernel from GET /v1/kernels (with `input`), or leave it out and give `exec`.
    pub kernel: Option<String>,
    /// The kernel's input, checked against its `input_schema`.
    #[schema(value_type = Option<Object>)]
    pub input: Option<Box<RawValue>>,
    pub exec: Option<ExecDto>,
    /// A WebAssembly module to run (with `input` as its stdin), instead of kernel or exec.
    pub wasm: Option<WasmDto>,
    /// An HTTP call for the node to make, instead of kernel, exec or wasm (no `input`).
    pub http: Option<HttpDto>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub constraints: ConstraintsDto,
    #[serde(default)]
    pub resources: ResourcesDto,
    /// How long one attempt may run (the workload itself, not queueing or commit), in ms:
    /// 10 to 86400000.
    #[schema(minimum = 10, maximum = 86_400_000)]
    pub timeout_ms: Option<u64>,
    pub retry: Option<RetryDto>,
    pub idempotency_key: Option<String>,
    #[schema(value_type = Option<crate::openapi::PlacementDoc>)]
    pub placement: Option<Placement>,
    #[serde(default)]
    pub affinities: Vec<AffinityDto>,
    #[serde(default)]
    pub after: Vec<u64>,
    /// `false`: always run the kernel, and do not keep its result in the result cache.
    /// Default true (only deterministic kernels are cached; exec tasks never are).
    pub cache: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSubmission {
    pub tasks: Vec<TaskSubmission>,
}

fn bad(field: &str, msg: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest {
        code: ErrorCode::InvalidTask,
        message: format!("{field}: {msg}"),
        details: serde_json::json!({ "field": field }),
    }
}

impl TaskSubmission {
    /// Check everything and build the spec. `at` prefixes field names (`tasks[3].`);
    /// `submitter` is who sent it (admission control counts per submitter).
    /// The module a wasm submission names, if any (resolved by the caller before
    /// [`TaskSubmission::into_spec`]).
    pub fn module_ref(&self) -> Option<&str> {
        self.wasm.as_ref().map(|w| w.module.as_str())
    }

    /// `modules` maps each module reference (id or name) the submissions use to its id.
    pub fn into_spec(
        mut self,
        at: &str,
        kernels: &dyn Kernels,
        modules: &BTreeMap<String, String>,
        submitter: &str,
    ) -> Result<TaskSpec, ApiError> {
        if let Some(h) = self.http.take() {
            if self.kernel.is_some() || self.exec.is_some() || self.wasm.is_some() {
                return Err(bad(
                    &format!("{at}http"),
                    "give one of kernel (+ input), exec, wasm (+ input) or http",
                ));
            }
            if self.input.is_some() {
                return Err(bad(
                    &format!("{at}input"),
                    "an http task takes no input (its request body is http.body)",
                ));
            }
            let work = Work::Http(Box::new(h.into_call(at)?));
            return self.finish(at, work, submitter);
        }
        if let Some(w) = self.wasm.take() {
            if self.kernel.is_some() || self.exec.is_some() {
                return Err(bad(
                    &format!("{at}wasm"),
                    "give one of kernel (+ input), exec or wasm (+ input)",
                ));
            }
            let Some(id) = modules.get(&w.module) else {
                return Err(ApiError::BadRequest {
                    code: ErrorCode::UnknownModule,
                    message: format!(
                        "{at}wasm.module: no module {:?} in the cluster (POST /v1/modules)",
                        w.module
                    ),
                    details: serde_json::json!({ "field": format!("{at}wasm.module") }),
                });
            };
            if w.args.len() > MAX_WASM_ARGS
                || w.args
                    .iter()
                    .any(|a| a.len() > MAX_WASM_ARG_BYTES || a.contains('\0'))
            {
                return Err(bad(
                    &format!("{at}wasm.args"),
                    format!("at most {MAX_WASM_ARGS} arguments of at most {MAX_WASM_ARG_BYTES} bytes each, without NUL"),
                ));
            }
            let input = self
                .input
                .take()
                .map(|r| r.get().to_string())
                .unwrap_or_else(|| "{}".into());
            let work = Work::Wasm {
                module: id.clone(),
                args: w.args,
                input,
            };
            return self.finish(at, work, submitter);
        }
        let work = match (self.kernel.take(), self.exec.take()) {
            (Some(kernel), None) => {
                let input = self
                    .input
                    .take()
                    .map(|r| r.get().to_string())
                    .unwrap_or_else(|| "{}".into());
                kernels.validate(&kernel, &input).map_err(|e| {
                    // An unknown kernel is the `kernel` field's fault, not the input's.
                    let field = if matches!(e, edgerun_actors::KernelError::Unknown(_)) {
                        "kernel"
                    } else {
                        "input"
                    };
                    ApiError::kernel(&format!("{at}{field}"), e)
                })?;
                Work::Kernel { kernel, input }
            }
            (None, Some(exec)) => {
                if self.input.is_some() {
                    return Err(bad(&format!("{at}input"), "an exec task takes no input"));
                }
                if exec.argv.is_empty() || exec.argv[0].is_empty() {
                    return Err(bad(&format!("{at}exec.argv"), "must name a program"));
                }
                Work::Exec {
                    argv: exec.argv,
                    env: exec.env,
                }
            }
            (Some(_), Some(_)) => {
                return Err(bad(
                    &format!("{at}kernel"),
                    "give either kernel (+ input) or exec, not both",
                ))
            }
            (None, None) => {
                return Err(bad(
                    &format!("{at}kernel"),
                    "missing: give kernel (+ input), exec or wasm (+ input)",
                ))
            }
        };
        self.finish(at, work, submitter)
    }

    /// Everything but the work: limits, retry, constraints, placement.
    fn finish(self, at: &str, work: Work, submitter: &str) -> Result<TaskSpec, ApiError> {
        if let Some(t) = self.timeout_ms {
            if !(MIN_TIMEOUT_MS..=86_400_000).contains(&t) {
                return Err(bad(
                    &format!("{at}timeout_ms"),
                    format!("{t} is out of range {MIN_TIMEOUT_MS}..=86400000 (it bounds an attempt's run; a shorter one could not be told from starting the attempt)"),
                ));
            }
        }
        if let Some(d) = self.resources.disk_mb {
            if !(1..=1_048_576).contains(&d) {
                return Err(bad(
                    &format!("{at}resources.disk_mb"),
                    format!("{d} is out of range 1..=1048576"),
                ));
            }
        }
        let mut retry = RetryPolicy::default();
        if let Some(r) = self.retry {
            if let Some(n) = r.max_attempts {
                if !(1..=100).contains(&n) {
                    return Err(bad(
                        &format!("{at}retry.max_attempts"),
                        format!("{n} is out of range 1..=100"),
                    ));
                }
                retry.max_attempts = n;
            }
            if let Some(b) = r.backoff_ms {
                if b > 3_600_000 {
                    return Err(bad(
                        &format!("{at}retry.backoff_ms"),
                        format!("{b} is more than 3600000"),
                    ));
                }
                retry.backoff_ms = b;
            }
            if let Some(m) = r.max_backoff_ms {
                if !(1..=86_400_000).contains(&m) {
                    return Err(bad(
                        &format!("{at}retry.max_backoff_ms"),
                        format!("{m} is out of range 1..=86400000"),
                    ));
                }
                retry.max_backoff_ms = m;
            }
            if let Some(j) = r.jitter {
                if !(0.0..=1.0).contains(&j) {
                    return Err(bad(
                        &format!("{at}retry.jitter"),
                        format!("{j} is out of range 0.0..=1.0"),
                    ));
                }
                retry.jitter_pct = (j * 100.0).round() as u8;
            }
        }
        if !(0..=100).contains(&self.priority) {
            return Err(bad(
                &format!("{at}priority"),
                format!("{} is out of range 0..=100", self.priority),
            ));
        }
        if self.after.len() > MAX_AFTER || self.after.contains(&0) {
            return Err(bad(
                &format!("{at}after"),
                format!("at most {MAX_AFTER} task ids, each a positive integer"),
            ));
        }
        let constraints = self.constraints.into_constraints(at)?;
        let mut affinities = Vec::with_capacity(self.affinities.len());
        for (i, a) in self.affinities.into_iter().enumerate() {
            if !(-100..=100).contains(&a.weight) {
                return Err(bad(
                    &format!("{at}affinities[{i}].weight"),
                    format!("{} is out of range -100..=100", a.weight),
                ));
            }
            affinities.push(Affinity {
                label: a.label,
                values: a.values.into_vec(),
                weight: a.weight,
            });
        }
        if let Some(k) = &self.idempotency_key {
            if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY {
                return Err(bad(
                    &format!("{at}idempotency_key"),
                    format!("must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"),
                ));
            }
        }
        Ok(TaskSpec {
            work,
            priority: self.priority,
            constraints,
            resources: Resources {
                cpu_millis: self.resources.cpu_millis,
                memory_mb: self.resources.memory_mb,
                network: self.resources.network,
                disk_mb: self.resources.disk_mb,
            },
            timeout_ms: self.timeout_ms,
            retry,
            idempotency_key: self.idempotency_key,
            placement: self.placement,
            affinities,
            after: self.after,
            submitter: submitter.to_string(),
            // Set by the handler from the request.
            trace_id: String::new(),
            cache: self.cache.unwrap_or(true),
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDto<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

/// A task as GET /v1/tasks/{id} shows it. Times are milliseconds since the Unix epoch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Task)]
pub struct TaskDto<'a> {
    pub id: u64,
    #[schema(value_type = crate::openapi::StatusDoc)]
    pub status: &'static str,
    pub kernel: &'a str,
    pub priority: i32,
    pub attempt: u32,
    pub max_attempts: u32,
    pub node: Option<u64>,
    pub created_at: u64,
    pub scheduled_at: Option<u64>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// The kernel's output (any JSON).
    #[schema(value_type = Option<serde_json::Value>)]
    pub result: Option<&'a RawValue>,
    pub error: Option<ErrorDto<'a>>,
    #[schema(value_type = Option<crate::openapi::IsolationDoc>)]
    pub isolation: Option<&'static str>,
    pub idempotency_key: Option<&'a str>,
    pub constraints: ConstraintsView<'a>,
    #[schema(value_type = crate::openapi::ResourcesDoc)]
    pub resources: &'a Resources,
    #[schema(value_type = Option<crate::openapi::PlacementDoc>)]
    pub placement: Option<&'static str>,
    #[schema(value_type = Vec<u64>)]
    pub after: &'a [u64],
    /// `after` tasks that have not succeeded yet.
    #[schema(value_type = Vec<u64>)]
    pub waiting_on: &'a [u64],
    pub timeout_ms: Option<u64>,
    pub retry: RetryView,
    /// While pending after a failed attempt: the backoff before the next one.
    pub retry_delay_ms: Option<u64>,
    pub preemptions: u32,
    /// In the dead-letter queue (failed or timed out with its attempts used up).
    pub dead_letter: bool,
    pub job: Option<JobFireView>,
    /// A result kept off-Raft: on which node, how big (GET of one task includes it in
    /// `result`).
    pub result_stored: Option<ResultStoredView>,
    /// How the last attempts ended, oldest first.
    pub attempts: Vec<AttemptView<'a>>,
    /// Why a pending task is not running yet (on GET of one task).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
    /// The trace id of the request that submitted it (32 hex digits; empty when unknown):
    /// every node's log lines about this task carry it.
    pub trace_id: &'a str,
    /// The result came from the result cache: the kernel did not run for this task.
    pub cached: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConstraintsView<'a> {
    #[schema(value_type = Option<crate::openapi::TierDoc>)]
    pub tier: Option<&'static str>,
    #[schema(value_type = BTreeMap<String, Vec<String>>)]
    pub labels: &'a BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RetryView {
    pub max_attempts: u32,
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub jitter: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptView<'a> {
    pub attempt: u32,
    pub node: u64,
    pub scheduled_at: Option<u64>,
    pub started_at: Option<u64>,
    pub ended_at: u64,
    pub outcome: &'a str,
    pub retry_delay_ms: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResultStoredView {
    pub node: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobFireView {
    pub id: u64,
    /// The cron slot this task was made for (ms since the epoch).
    pub slot: u64,
}

impl<'a> TaskDto<'a> {
    pub fn from_task(t: &'a Task) -> TaskDto<'a> {
        TaskDto {
            trace_id: &t.spec.trace_id,
            cached: t.cached,
            id: t.id,
            status: t.status.as_str(),
            kernel: t.spec.kind_name(),
            priority: t.spec.priority,
            attempt: t.attempt,
            max_attempts: t.spec.retry.max_attempts,
            node: t.node,
            created_at: t.created_at_ms,
            scheduled_at: t.scheduled_at_ms,
            started_at: t.started_at_ms,
            finished_at: t.finished_at_ms,
            // Results are JSON the worker produced; if one were not, show none rather than fail.
            result: t
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str::<&RawValue>(r).ok()),
            error: t.error.as_ref().map(|e| ErrorDto {
                code: &e.code,
                message: &e.message,
            }),
            isolation: t.isolation.map(|i| i.as_str()),
            idempotency_key: t.spec.idempotency_key.as_deref(),
            constraints: ConstraintsView {
                tier: t.spec.constraints.tier.map(|t| t.as_str()),
                labels: &t.spec.constraints.labels,
            },
            resources: &t.spec.resources,
            placement: t.spec.placement.map(|p| p.as_str()),
            after: &t.spec.after,
            waiting_on: &t.waiting_on,
            timeout_ms: t.spec.timeout_ms,
            retry: RetryView {
                max_attempts: t.spec.retry.max_attempts,
                backoff_ms: t.spec.retry.backoff_ms,
                max_backoff_ms: t.spec.retry.max_backoff_ms,
                jitter: f64::from(t.spec.retry.jitter_pct) / 100.0,
            },
            retry_delay_ms: t.retry_delay_ms,
            preemptions: t.preemptions,
            dead_letter: t.dead_letter,
            job: t.job.map(|j| JobFireView {
                id: j.job,
                slot: j.slot_ms,
            }),
            result_stored: t.result_ref.map(|r| ResultStoredView {
                node: r.node,
                bytes: r.bytes,
            }),
            attempts: t
                .attempts_log
                .iter()
                .map(|a| AttemptView {
                    attempt: a.attempt,
                    node: a.node,
                    scheduled_at: a.scheduled_at_ms,
                    started_at: a.started_at_ms,
                    ended_at: a.ended_at_ms,
                    outcome: &a.outcome,
                    retry_delay_ms: a.retry_delay_ms,
                })
                .collect(),
            pending_reason: None,
        }
    }
}

/// Render a task to JSON bytes (under the state read lock, so no clone of the task).
pub fn task_json(t: &Task) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(&TaskDto::from_task(t))
        .map_err(|e| ApiError::Internal(format!("encoding task {}: {e}", t.id)))
}

/// Render a task with its `pending_reason`.
pub fn task_json_explained(
    s: &edgerun_model::ClusterState,
    t: &Task,
    policy: &edgerun_actors::Policy,
    stored_result: Option<&str>,
) -> Result<Vec<u8>, ApiError> {
    let mut dto = TaskDto::from_task(t);
    if let Some(r) = stored_result {
        dto.result = serde_json::from_str::<&RawValue>(r).ok();
    }
    dto.pending_reason =
        edgerun_actors::scheduler::pending_reason(s, t, edgerun_actors::now_ms(), policy);
    serde_json::to_vec(&dto).map_err(|e| ApiError::Internal(format!("encoding task {}: {e}", t.id)))
}
