//! The JSON shapes of API.md, and their conversion to and from the model.

use std::collections::BTreeMap;

use edgerun_actors::Kernels;
use edgerun_model::{Constraints, Resources, RetryPolicy, Task, TaskSpec, Tier, Work};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ApiError;

/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;
/// Most tasks in one batch submission.
pub const MAX_BATCH: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecDto {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConstraintsDto {
    pub tier: Option<Tier>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ResourcesDto {
    pub cpu_millis: Option<u32>,
    pub memory_mb: Option<u32>,
    #[serde(default)]
    pub network: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryDto {
    pub max_attempts: Option<u32>,
    pub backoff_ms: Option<u64>,
}

/// A task as submitted (API.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSubmission {
    pub kernel: Option<String>,
    pub input: Option<Box<RawValue>>,
    pub exec: Option<ExecDto>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub constraints: ConstraintsDto,
    #[serde(default)]
    pub resources: ResourcesDto,
    pub timeout_ms: Option<u64>,
    pub retry: Option<RetryDto>,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSubmission {
    pub tasks: Vec<TaskSubmission>,
}

fn bad(field: &str, msg: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_task",
        message: format!("{field}: {msg}"),
        details: serde_json::json!({ "field": field }),
    }
}

impl TaskSubmission {
    /// Check everything and build the spec. `at` prefixes field names (`tasks[3].`).
    pub fn into_spec(self, at: &str, kernels: &dyn Kernels) -> Result<TaskSpec, ApiError> {
        let work = match (self.kernel, self.exec) {
            (Some(kernel), None) => {
                let input = self
                    .input
                    .map(|r| r.get().to_string())
                    .unwrap_or_else(|| "{}".into());
                kernels
                    .validate(&kernel, &input)
                    .map_err(|e| ApiError::kernel(&format!("{at}input"), e))?;
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
                    "missing: give kernel (+ input) or exec",
                ))
            }
        };
        if let Some(t) = self.timeout_ms {
            if t == 0 || t > 86_400_000 {
                return Err(bad(
                    &format!("{at}timeout_ms"),
                    format!("{t} is out of range 1..=86400000"),
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
            constraints: Constraints {
                tier: self.constraints.tier,
                labels: self.constraints.labels,
            },
            resources: Resources {
                cpu_millis: self.resources.cpu_millis,
                memory_mb: self.resources.memory_mb,
                network: self.resources.network,
            },
            timeout_ms: self.timeout_ms,
            retry,
            idempotency_key: self.idempotency_key,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct ErrorDto<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

/// A task as GET /v1/tasks/{id} shows it. Times are milliseconds since the Unix epoch.
#[derive(Debug, Serialize)]
pub struct TaskDto<'a> {
    pub id: u64,
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
    pub result: Option<&'a RawValue>,
    pub error: Option<ErrorDto<'a>>,
    pub isolation: Option<&'static str>,
    pub idempotency_key: Option<&'a str>,
}

impl<'a> TaskDto<'a> {
    pub fn from_task(t: &'a Task) -> TaskDto<'a> {
        TaskDto {
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
        }
    }
}

/// Render a task to JSON bytes (under the state read lock, so no clone of the task).
pub fn task_json(t: &Task) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(&TaskDto::from_task(t))
        .map_err(|e| ApiError::Internal(format!("encoding task {}: {e}", t.id)))
}
