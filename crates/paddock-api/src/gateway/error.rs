//! The gateway's errors: google.rpc.Status bodies
//! (`{"code": N, "message": "…", "details": [...]}`) with the HTTP status
//! the API's code table maps each code to. An invalid field also carries a
//! google.rpc.BadRequest detail naming it.

use axum::http::StatusCode as Http;
use axum::response::{IntoResponse, Response};
use axum::Json;
use paddock_core::model::gateway::StatusCode;
use paddock_core::service::error_chain;
use paddock_core::CoreError;
use serde_json::{json, Value};

#[derive(Debug)]
pub enum GatewayError {
    Core(CoreError),
    Status(StatusCode, String),
}

impl From<CoreError> for GatewayError {
    fn from(e: CoreError) -> Self {
        Self::Core(e)
    }
}

impl GatewayError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Core(CoreError::invalid(field, message))
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::Status(StatusCode::NotFound, format!("{what} not found"))
    }
}

/// google.rpc.Code's number.
pub fn code_number(c: StatusCode) -> i32 {
    match c {
        StatusCode::Ok => 0,
        StatusCode::Cancelled => 1,
        StatusCode::Unknown => 2,
        StatusCode::InvalidArgument => 3,
        StatusCode::DeadlineExceeded => 4,
        StatusCode::NotFound => 5,
        StatusCode::AlreadyExists => 6,
        StatusCode::PermissionDenied => 7,
        StatusCode::ResourceExhausted => 8,
        StatusCode::FailedPrecondition => 9,
        StatusCode::Aborted => 10,
        StatusCode::OutOfRange => 11,
        StatusCode::Unimplemented => 12,
        StatusCode::Internal => 13,
        StatusCode::Unavailable => 14,
        StatusCode::DataLoss => 15,
        StatusCode::Unauthenticated => 16,
    }
}

/// The HTTP status of each code, from the API's table.
pub fn http_status(c: StatusCode) -> Http {
    match c {
        StatusCode::Ok => Http::OK,
        StatusCode::Cancelled => Http::from_u16(499).unwrap_or(Http::BAD_REQUEST),
        StatusCode::InvalidArgument | StatusCode::FailedPrecondition | StatusCode::OutOfRange => {
            Http::BAD_REQUEST
        }
        StatusCode::DeadlineExceeded => Http::GATEWAY_TIMEOUT,
        StatusCode::NotFound => Http::NOT_FOUND,
        StatusCode::AlreadyExists | StatusCode::Aborted => Http::CONFLICT,
        StatusCode::PermissionDenied => Http::FORBIDDEN,
        StatusCode::Unauthenticated => Http::UNAUTHORIZED,
        StatusCode::ResourceExhausted => Http::TOO_MANY_REQUESTS,
        StatusCode::Unimplemented => Http::NOT_IMPLEMENTED,
        StatusCode::Unavailable => Http::SERVICE_UNAVAILABLE,
        StatusCode::Unknown | StatusCode::Internal | StatusCode::DataLoss => {
            Http::INTERNAL_SERVER_ERROR
        }
    }
}

/// Renders a status body.
pub fn status_response(code: StatusCode, message: String, details: Vec<Value>) -> Response {
    let body = super::views::StatusError {
        code: code_number(code),
        message,
        details,
    };
    (http_status(code), Json(body)).into_response()
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let retry_after = match &self {
            Self::Core(CoreError::RateLimited { retry_after }) => Some(*retry_after),
            _ => None,
        };
        let (code, message, details) = match self {
            Self::Status(code, message) => (code, message, Vec::new()),
            Self::Core(e) => match e {
                CoreError::NotFound { kind, id } => (
                    StatusCode::NotFound,
                    format!("{kind} {id:?} not found"),
                    Vec::new(),
                ),
                CoreError::InvalidArgument { field, message } => (
                    StatusCode::InvalidArgument,
                    format!("{field}: {message}"),
                    vec![json!({
                        "@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": field, "description": message}],
                    })],
                ),
                CoreError::Conflict(m) => (StatusCode::AlreadyExists, m, Vec::new()),
                CoreError::FailedPrecondition(m) => (StatusCode::FailedPrecondition, m, Vec::new()),
                CoreError::PermissionDenied(m) => (StatusCode::PermissionDenied, m, Vec::new()),
                CoreError::ResourceExhausted(m) => (StatusCode::ResourceExhausted, m, Vec::new()),
                e @ CoreError::RateLimited { .. } => {
                    (StatusCode::ResourceExhausted, e.to_string(), Vec::new())
                }
                CoreError::Unauthenticated => (
                    StatusCode::Unauthenticated,
                    "invalid or missing API key (Authorization: Bearer KEY)".to_owned(),
                    Vec::new(),
                ),
                CoreError::Unavailable(m) | CoreError::Upstream(m) => {
                    (StatusCode::Unavailable, m, Vec::new())
                }
                CoreError::DeadlineExceeded(m) => (StatusCode::DeadlineExceeded, m, Vec::new()),
                e @ (CoreError::Runtime(_) | CoreError::Store(_)) => {
                    tracing::error!(error = %error_chain(&e), "gateway request failed");
                    (
                        StatusCode::Internal,
                        "internal error; see the server log".to_owned(),
                        Vec::new(),
                    )
                }
            },
        };
        let mut response = status_response(code, message, details);
        if let Some(wait) = retry_after {
            crate::set_retry_after(&mut response, wait);
        }
        response
    }
}
