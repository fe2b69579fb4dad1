//! The VM API's errors, in FastAPI's shapes as InstaVM's clients read them:
//! 422 `{"detail":[{"loc":[...],"msg":"...","type":"..."}]}` for invalid
//! input, `{"detail":"..."}` with 401/404/409/503/500 for the rest. Core
//! errors become these in [`ApiError::from`], the one place that decides.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use paddock_core::service::error_chain;
use paddock_core::CoreError;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

/// One entry of a 422's `detail`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ValidationError {
    /// Where the problem is: `["body", "vcpu_count"]`, `["query", "wait"]`.
    #[schema(value_type = Vec<serde_json::Value>)]
    pub loc: Vec<serde_json::Value>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// FastAPI's validation error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct HttpValidationError {
    pub detail: Vec<ValidationError>,
}

/// Every other error: a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub detail: String,
}

#[derive(Debug)]
pub enum ApiError {
    Validation(Vec<ValidationError>),
    Status(StatusCode, String),
    Core(CoreError),
}

impl ApiError {
    pub fn field(loc: &[&str], msg: impl Into<String>, kind: &str) -> Self {
        Self::Validation(vec![ValidationError {
            loc: loc.iter().map(|s| json!(s)).collect(),
            msg: msg.into(),
            kind: kind.to_owned(),
        }])
    }

    pub fn body_field(field: &str, msg: impl Into<String>) -> Self {
        Self::field(&["body", field], msg, "value_error")
    }

    /// A core error from a call whose arguments came in the query: a
    /// refused argument is at `["query", field]` (the default puts it in
    /// the body).
    pub fn in_query(e: CoreError) -> Self {
        match e {
            CoreError::InvalidArgument { field, message } => {
                Self::field(&["query", &field], message, "value_error")
            }
            other => other.into(),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::Status(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        Self::Core(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, detail) = match self {
            Self::Validation(errors) => {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(HttpValidationError { detail: errors }),
                )
                    .into_response()
            }
            Self::Status(status, msg) => (status, msg),
            Self::Core(e) => match e {
                CoreError::NotFound { kind, .. } => {
                    let mut k = kind.to_owned();
                    if let Some(first) = k.get_mut(..1) {
                        first.make_ascii_uppercase();
                    }
                    (StatusCode::NOT_FOUND, format!("{k} not found"))
                }
                CoreError::InvalidArgument { field, message } => {
                    // `dns_credentials.server` is a nested field: one loc
                    // entry per level.
                    let loc: Vec<&str> = std::iter::once("body").chain(field.split('.')).collect();
                    return Self::field(&loc, message, "value_error").into_response();
                }
                CoreError::Conflict(m) | CoreError::FailedPrecondition(m) => {
                    (StatusCode::CONFLICT, m)
                }
                CoreError::Unauthenticated => (
                    StatusCode::UNAUTHORIZED,
                    "Invalid or missing API key".to_owned(),
                ),
                CoreError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
                CoreError::PermissionDenied(m) => (StatusCode::FORBIDDEN, m),
                CoreError::ResourceExhausted(m) => (StatusCode::TOO_MANY_REQUESTS, m),
                e @ CoreError::RateLimited { retry_after } => {
                    let detail = ErrorDetail {
                        detail: e.to_string(),
                    };
                    let mut response =
                        (StatusCode::TOO_MANY_REQUESTS, Json(detail)).into_response();
                    crate::set_retry_after(&mut response, retry_after);
                    return response;
                }
                CoreError::Upstream(m) => (StatusCode::BAD_GATEWAY, m),
                CoreError::DeadlineExceeded(m) => (StatusCode::GATEWAY_TIMEOUT, m),
                e @ (CoreError::Runtime(_) | CoreError::Store(_)) => {
                    tracing::error!(error = %error_chain(&e), "request failed");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal error; see the server log".to_owned(),
                    )
                }
            },
        };
        (status, Json(ErrorDetail { detail })).into_response()
    }
}
