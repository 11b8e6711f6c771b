//! `ApiError`: every error a REST call can answer, mapped to a status in one place.
//!
//! The body is always `{"error": {"code", "message", "details"}}` (API.md).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use edgerun_actors::{KernelError, ProposeError};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid request (bad JSON, wrong types, bad parameters).
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        details: Value,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        details: Value,
    },
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// The kernel is unknown or its input does not fit its schema.
    #[error("{message}")]
    InvalidKernelInput {
        code: &'static str,
        message: String,
        details: Value,
    },
    /// No leader yet / state shard restarting: retry after a moment.
    #[error("{message}")]
    Unavailable {
        code: &'static str,
        message: String,
        details: Value,
    },
    /// No, expired or bad credentials.
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// Authenticated, but the role is not enough.
    #[error("{message}")]
    Forbidden { message: String, need: &'static str },
    /// Admission control: over `limits.max_pending*`; nothing was stored.
    #[error("{message}")]
    TooMany {
        code: &'static str,
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
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::InvalidKernelInput { code, .. }
            | ApiError::Unavailable { code, .. }
            | ApiError::TooMany { code, .. }
            | ApiError::Unauthorized { code, .. } => code,
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::TooLarge { .. } => "payload_too_large",
            ApiError::BodyTimeout(_) => "body_timeout",
            ApiError::Internal(_) => "internal",
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
                code: "no_leader",
                message: e.to_string(),
                details: Value::Null,
            },
            ProposeError::Unavailable => ApiError::Unavailable {
                code: "unavailable",
                message: e.to_string(),
                details: Value::Null,
            },
            ProposeError::NotLeader { leader, ref api } => ApiError::Unavailable {
                code: "not_leader",
                message: e.to_string(),
                details: json!({ "leader": leader, "leader_api": api }),
            },
            ProposeError::NotCommitted { .. } => ApiError::Unavailable {
                code: "not_committed",
                message: e.to_string(),
                details: Value::Null,
            },
            ProposeError::LeaderUnreachable { leader, .. } => ApiError::Unavailable {
                code: "leader_unreachable",
                message: e.to_string(),
                details: json!({ "leader": leader }),
            },
            ProposeError::LeaderUnavailable { leader, .. } => ApiError::Unavailable {
                code: "leader_unavailable",
                message: e.to_string(),
                details: json!({ "leader": leader }),
            },
            ProposeError::RaftStopped(_) => ApiError::Unavailable {
                code: "raft_stopped",
                message: e.to_string(),
                details: Value::Null,
            },
            ProposeError::NoQuorum(_) => ApiError::Unavailable {
                code: "no_quorum",
                message: e.to_string(),
                details: Value::Null,
            },
            ProposeError::Lagging { index, .. } => ApiError::Unavailable {
                code: "catching_up",
                message: e.to_string(),
                details: json!({ "index": index }),
            },
            ProposeError::Rejected(m) => ApiError::Conflict {
                code: "rejected",
                message: m,
                details: Value::Null,
            },
            ProposeError::Raft(m) => ApiError::Internal(format!("raft: {m}")),
        }
    }
}

impl ApiError {
    /// A kernel error found while validating a submission (`field` says where).
    pub fn kernel(field: &str, e: KernelError) -> ApiError {
        ApiError::InvalidKernelInput {
            code: e.code(),
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
            code: "invalid_json",
            message: format!("request body: {e}"),
            details: json!({ "line": e.line(), "column": e.column() }),
        },
        J::ContentType => ApiError::bad_request(
            "invalid_content_type",
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
        other => ApiError::bad_request("invalid_body", format!("request body: {other}")),
    }
}
