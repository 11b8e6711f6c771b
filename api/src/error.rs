//! `ApiError`: every error a REST call can answer, mapped to a status in one place.
//!
//! The body is always `{"error": {"code", "message", "details"}}` (API.md).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use edgerun_actors::{KernelError, ProposeError};
use serde_json::{json, Value};

/// Every `error.code` the API answers: stable and machine-readable, listed in the OpenAPI
/// document (`components.schemas.ErrorCode`). A new code is a new variant here.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $s:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $s,)*
                }
            }
        }
    };
}

error_codes! {
    /// The body is not valid JSON, or not the shape the call takes.
    InvalidJson = "invalid_json",
    /// The body is not `application/json`.
    InvalidContentType = "invalid_content_type",
    /// The body could not be read.
    InvalidBody = "invalid_body",
    /// A task spec is invalid (`details.field` names the field).
    InvalidTask = "invalid_task",
    /// A batch is empty or over its limit.
    InvalidBatch = "invalid_batch",
    /// A job spec is invalid (`details.field` names the field).
    InvalidJob = "invalid_job",
    /// A task or job id in the path is not one.
    InvalidId = "invalid_id",
    /// A list of ids in the query is not one.
    InvalidIds = "invalid_ids",
    /// A page limit is out of range.
    InvalidLimit = "invalid_limit",
    /// A status filter names no status.
    InvalidStatus = "invalid_status",
    /// A wait timeout is out of range.
    InvalidTimeout = "invalid_timeout",
    /// A query parameter is unknown or malformed.
    InvalidQuery = "invalid_query",
    /// A filter is malformed.
    InvalidFilter = "invalid_filter",
    /// A membership change names no valid member.
    InvalidMember = "invalid_member",
    /// A configuration change is invalid.
    InvalidConfig = "invalid_config",
    /// A debug request names no field.
    InvalidField = "invalid_field",
    /// The kernel is not in the catalog.
    UnknownKernel = "unknown_kernel",
    /// The kernel's input does not fit its schema.
    InvalidInput = "invalid_input",
    /// The kernel failed on the input.
    KernelError = "kernel_error",
    /// The call needs a bearer token.
    MissingToken = "missing_token",
    /// The bearer token is not valid for this cluster.
    InvalidToken = "invalid_token",
    /// The bearer token has expired.
    TokenExpired = "token_expired",
    /// The API key the token was issued for is no longer accepted.
    TokenRevoked = "token_revoked",
    /// The API key is not known.
    InvalidApiKey = "invalid_api_key",
    /// Tokens are not issued while auth is off.
    AuthDisabled = "auth_disabled",
    /// The token's role is not enough for the call.
    Forbidden = "forbidden",
    /// No such resource (or route).
    NotFound = "not_found",
    /// The task had already ended.
    AlreadyEnded = "already_ended",
    /// The task is not in the dead-letter queue.
    NotDeadLetter = "not_dead_letter",
    /// The cluster refused a change (e.g. a harmful membership change).
    Rejected = "rejected",
    /// The body is over the limit.
    PayloadTooLarge = "payload_too_large",
    /// The body did not arrive in time.
    BodyTimeout = "body_timeout",
    /// Over a rate limit; retry after `Retry-After`.
    RateLimited = "rate_limited",
    /// Over the cluster's pending-task limit; nothing was stored.
    ClusterFull = "cluster_full",
    /// Over this submitter's pending-task limit; nothing was stored.
    TooManyPending = "too_many_pending",
    /// No leader yet (an election); retry.
    NoLeader = "no_leader",
    /// Another node leads and the request may not be forwarded.
    NotLeader = "not_leader",
    /// The leader could not be reached to forward the write.
    LeaderUnreachable = "leader_unreachable",
    /// The leader cannot serve the request now.
    LeaderUnavailable = "leader_unavailable",
    /// The write was not committed in time (a majority down?).
    NotCommitted = "not_committed",
    /// This node leads but cannot reach a majority.
    NoQuorum = "no_quorum",
    /// This node is behind the log a read needs.
    CatchingUp = "catching_up",
    /// Raft stopped on this node (a storage error).
    RaftStopped = "raft_stopped",
    /// A part of the node is restarting or stopping; retry.
    Unavailable = "unavailable",
    /// The node is not ready.
    NotReady = "not_ready",
    /// The part asked about is not running.
    NotRunning = "not_running",
    /// The node that keeps the task's result cannot be reached.
    ResultUnavailable = "result_unavailable",
    /// A stream job definition is invalid (`details.field` names the field).
    InvalidStream = "invalid_stream",
    /// Records were POSTed to a stream job whose source is not `http`.
    NotHttpSource = "not_http_source",
    /// The stream job's input queue is full; retry after `Retry-After`.
    StreamBusy = "stream_busy",
    /// The stream job is not running now (starting, moving, paused); retry.
    StreamMoving = "stream_moving",
    /// The stream job's runner could not take the records (it stopped, or its node cannot
    /// be reached); send them again.
    StreamUnavailable = "stream_unavailable",
    /// The upload is not a WASI preview-1 command module (said why).
    InvalidModule = "invalid_module",
    /// A task names a module the cluster does not have.
    UnknownModule = "unknown_module",
    /// The module is used by a task that has not ended or by a job (said which).
    ModuleInUse = "module_in_use",
    /// A bug or an unexpected failure (logged on the node).
    Internal = "internal",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid request (bad JSON, wrong types, bad parameters).
    #[error("{message}")]
    BadRequest {
        code: ErrorCode,
        message: String,
        details: Value,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict {
        code: ErrorCode,
        message: String,
        details: Value,
    },
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// The kernel is unknown or its input does not fit its schema.
    #[error("{message}")]
    InvalidKernelInput {
        code: ErrorCode,
        message: String,
        details: Value,
    },
    /// No leader yet / state shard restarting: retry after a moment.
    #[error("{message}")]
    Unavailable {
        code: ErrorCode,
        message: String,
        details: Value,
    },
    /// No, expired or bad credentials.
    #[error("{message}")]
    Unauthorized { code: ErrorCode, message: String },
    /// Authenticated, but the role is not enough.
    #[error("{message}")]
    Forbidden { message: String, need: &'static str },
    /// Admission control: over `limits.max_pending*`; nothing was stored.
    #[error("{message}")]
    TooMany {
        code: ErrorCode,
        message: String,
        retry_after_secs: u64,
    },
    /// The request body did not arrive within `api.body_timeout_ms`.
    #[error("{0}")]
    BodyTimeout(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::InvalidKernelInput { code, .. }
            | ApiError::Unavailable { code, .. }
            | ApiError::TooMany { code, .. }
            | ApiError::Unauthorized { code, .. } => *code,
            ApiError::Forbidden { .. } => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            ApiError::BodyTimeout(_) => ErrorCode::BodyTimeout,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::BadRequest { details, .. }
            | ApiError::Conflict { details, .. }
            | ApiError::InvalidKernelInput { details, .. }
            | ApiError::Unavailable { details, .. } => details.clone(),
            ApiError::TooLarge { limit } => json!({ "limit_bytes": limit }),
            ApiError::TooMany {
                retry_after_secs, ..
            } => json!({ "retry_after_secs": retry_after_secs }),
            ApiError::Forbidden { need, .. } => json!({ "needs_role": need }),
            _ => Value::Null,
        }
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> ApiError {
        match e {
            ProposeError::NoLeader => ApiError::Unavailable {
                code: ErrorCode::NoLeader,
                message: e.to_string(),
                details: Value::Null,
            },
            ProposeError::Unavailable => ApiError::Unavailable {
                code: ErrorCode::Unavailable,
                message: e.to_string(),
                details: Value::Null,
            },
            ProposeError::NotLeader { leader, ref api } => ApiError::Unavailable {
                code: ErrorCode::NotLeader,
                message: e.to_string(),
                details: json!({ "leader": leader, "leader_api": api }),
            },
            ProposeError::NotCommitted { .. } => ApiError::Unavailable {
                code: ErrorCode::NotCommitted,
                message: e.to_string(),
                details: Value::Null,
            },
            ProposeError::LeaderUnreachable { leader, .. } => ApiError::Unavailable {
                code: ErrorCode::LeaderUnreachable,
                message: e.to_string(),
                details: json!({ "leader": leader }),
            },
            ProposeError::LeaderUnavailable { leader, .. } => ApiError::Unavailable {
                code: ErrorCode::LeaderUnavailable,
                message: e.to_string(),
                details: json!({ "leader": leader }),
            },
            ProposeError::RaftStopped(_) => ApiError::Unavailable {
                code: ErrorCode::RaftStopped,
                message: e.to_string(),
                details: Value::Null,
            },
            ProposeError::NoQuorum(_) => ApiError::Unavailable {
                code: ErrorCode::NoQuorum,
                message: e.to_string(),
                details: Value::Null,
            },
            ProposeError::Lagging { index, .. } => ApiError::Unavailable {
                code: ErrorCode::CatchingUp,
                message: e.to_string(),
                details: json!({ "index": index }),
            },
            ProposeError::Rejected(m) => ApiError::Conflict {
                code: ErrorCode::Rejected,
                message: m,
                details: Value::Null,
            },
            ProposeError::Raft(m) => ApiError::Internal(format!("raft: {m}")),
            ProposeError::Answer { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

impl ApiError {
    /// A kernel error found while validating a submission (`field` says where).
    pub fn kernel(field: &str, e: KernelError) -> ApiError {
        ApiError::InvalidKernelInput {
            code: match e {
                KernelError::Unknown(_) => ErrorCode::UnknownKernel,
                KernelError::InvalidInput(_) => ErrorCode::InvalidInput,
                KernelError::Failed(_) => ErrorCode::KernelError,
            },
            message: format!("{field}: {e}"),
            details: json!({ "field": field, "kernels": edgerun_actors::catalog().iter().map(|k| k.name).collect::<Vec<_>>() }),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidKernelInput { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unavailable { .. }) {
            b.insert_header((header::RETRY_AFTER, "1"));
        }
        if let ApiError::TooMany {
            retry_after_secs, ..
        } = self
        {
            b.insert_header((header::RETRY_AFTER, retry_after_secs.max(&1).to_string()));
        }
        if matches!(self, ApiError::BodyTimeout(_)) {
            // The rest of the body may still be on its way: do not read it.
            b.insert_header((header::CONNECTION, "close"));
        }
        if matches!(self, ApiError::Unauthorized { .. }) {
            b.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if matches!(self, ApiError::Internal(_)) {
            tracing::error!(error = %self, "internal error");
        }
        b.json(json!({ "error": { "code": self.code(), "message": self.to_string(), "details": self.details() } }))
    }
}

/// Body errors from actix's JSON extractor, in our shape: 413 for size, 400 with the
/// parser's message for everything else.
pub fn json_error(err: actix_web::error::JsonPayloadError, limit: usize) -> ApiError {
    use actix_web::error::JsonPayloadError as J;
    match err {
        J::Overflow { .. } | J::OverflowKnownLength { .. } => ApiError::TooLarge { limit },
        J::Deserialize(e) => ApiError::BadRequest {
            code: ErrorCode::InvalidJson,
            message: format!("request body: {e}"),
            details: json!({ "line": e.line(), "column": e.column() }),
        },
        J::ContentType => ApiError::bad_request(
            ErrorCode::InvalidContentType,
            "expected Content-Type: application/json",
        ),
        J::Payload(actix_web::error::PayloadError::Io(e))
            if e.kind() == std::io::ErrorKind::TimedOut =>
        {
            ApiError::BodyTimeout(format!(
                "{} (api.body_timeout_ms); send the whole body at once",
                crate::body::LATE
            ))
        }
        other => ApiError::bad_request(ErrorCode::InvalidBody, format!("request body: {other}")),
    }
}
