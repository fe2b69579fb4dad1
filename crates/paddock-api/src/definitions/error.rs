//! The definitions surface's errors: `ErrorResponse`,
//! `{"errors":[{"status","title","detail","code"}],"request_id"}`, with
//! the same id in the `x-request-id` header.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use paddock_core::service::error_chain;
use paddock_core::{CoreError, RuntimeError};
use paddock_definitions::DefinitionError;
use serde::Serialize;
use utoipa::ToSchema;

pub const REQUEST_ID: &str = "x-request-id";

/// One error answer: a status and one entry per problem.
#[derive(Debug)]
pub struct DefError {
    status: StatusCode,
    entries: Vec<(String, &'static str)>,
    /// A rate limit's wait, sent as `Retry-After`.
    retry_after: Option<std::time::Duration>,
}

impl DefError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            entries: vec![(detail.into(), code)],
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// A 422 with one entry per problem.
    pub fn unprocessable_each(details: Vec<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            entries: details
                .into_iter()
                .map(|d| (d, "validation_failed"))
                .collect(),
            retry_after: None,
        }
    }

    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            detail,
        )
    }
}

pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// One problem of an error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEntry {
    /// The HTTP status, as text.
    pub status: String,
    /// The status's reason phrase.
    pub title: String,
    /// What was wrong, naming the field.
    pub detail: String,
    /// A stable code: `validation_failed`, `not_found`, `revision_mismatch`…
    pub code: String,
    pub request_id: String,
}

/// An error answer: one entry per problem, and the request's id (also in
/// `x-request-id`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub errors: Vec<ErrorEntry>,
    pub request_id: String,
}

impl IntoResponse for DefError {
    fn into_response(self) -> Response {
        let request_id = new_request_id();
        let title = self.status.canonical_reason().unwrap_or("Error");
        let errors = self
            .entries
            .iter()
            .map(|(detail, code)| ErrorEntry {
                status: self.status.as_u16().to_string(),
                title: title.to_owned(),
                detail: detail.clone(),
                code: (*code).to_owned(),
                request_id: request_id.clone(),
            })
            .collect();
        let body = ErrorResponse {
            errors,
            request_id: request_id.clone(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID, v);
        }
        if let Some(wait) = self.retry_after {
            crate::set_retry_after(&mut response, wait);
        }
        response
    }
}

impl From<DefinitionError> for DefError {
    fn from(e: DefinitionError) -> Self {
        match e {
            DefinitionError::Invalid(violations) => {
                let bad_id = violations.iter().any(|v| v.field == "id");
                let (status, code) = if bad_id {
                    (StatusCode::BAD_REQUEST, "invalid_id")
                } else {
                    (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
                };
                Self {
                    status,
                    entries: violations
                        .into_iter()
                        .filter(|v| !bad_id || v.field == "id")
                        .map(|v| (v.to_string(), code))
                        .collect(),
                    retry_after: None,
                }
            }
            DefinitionError::RevisionRequired => Self::new(
                StatusCode::PRECONDITION_REQUIRED,
                "precondition_required",
                e.to_string(),
            ),
            DefinitionError::RevisionMalformed => {
                Self::bad_request("invalid_revision", e.to_string())
            }
            DefinitionError::RevisionMismatch { .. } => {
                Self::new(StatusCode::CONFLICT, "revision_mismatch", e.to_string())
            }
            DefinitionError::Reserved => {
                Self::new(StatusCode::CONFLICT, "reserved_environment", e.to_string())
            }
            DefinitionError::ProviderUnavailable(m) => {
                Self::new(StatusCode::CONFLICT, "provider_unavailable", m)
            }
            DefinitionError::Core(c) => c.into(),
        }
    }
}

impl From<CoreError> for DefError {
    fn from(e: CoreError) -> Self {
        use StatusCode as S;
        match &e {
            CoreError::NotFound { .. } => Self::new(S::NOT_FOUND, "not_found", e.to_string()),
            CoreError::InvalidArgument { .. } => Self::unprocessable(e.to_string()),
            CoreError::Conflict(m) => Self::new(S::CONFLICT, "already_exists", m.clone()),
            CoreError::FailedPrecondition(m) => {
                Self::new(S::CONFLICT, "failed_precondition", m.clone())
            }
            CoreError::PermissionDenied(m) => Self::new(S::FORBIDDEN, "forbidden", m.clone()),
            CoreError::ResourceExhausted(m) => {
                Self::new(S::TOO_MANY_REQUESTS, "resource_exhausted", m.clone())
            }
            CoreError::RateLimited { retry_after } => Self {
                retry_after: Some(*retry_after),
                ..Self::new(S::TOO_MANY_REQUESTS, "rate_limited", e.to_string())
            },
            CoreError::Unauthenticated => Self::new(
                S::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer with a dev token or an API key",
            ),
            CoreError::Unavailable(m) => {
                Self::new(S::SERVICE_UNAVAILABLE, "unavailable", m.clone())
            }
            CoreError::Upstream(m) => Self::new(S::BAD_GATEWAY, "upstream_failed", m.clone()),
            CoreError::DeadlineExceeded(m) => {
                Self::new(S::GATEWAY_TIMEOUT, "deadline_exceeded", m.clone())
            }
            CoreError::Runtime(r) => runtime(r, &e),
            CoreError::Store(_) => internal(&e),
        }
    }
}

fn runtime(r: &RuntimeError, whole: &CoreError) -> DefError {
    use StatusCode as S;
    match r {
        RuntimeError::FileNotFound(_) | RuntimeError::PtyNotFound(_) => {
            DefError::new(S::NOT_FOUND, "not_found", r.to_string())
        }
        RuntimeError::IsADirectory(_)
        | RuntimeError::NotADirectory(_)
        | RuntimeError::Invalid(_) => DefError::bad_request("invalid_request", r.to_string()),
        RuntimeError::PermissionDenied(_) => {
            DefError::new(S::FORBIDDEN, "forbidden", r.to_string())
        }
        RuntimeError::SandboxGone => {
            DefError::new(S::CONFLICT, "sandbox_not_running", r.to_string())
        }
        RuntimeError::Unsupported(m) => DefError::new(S::CONFLICT, "unsupported", m.clone()),
        RuntimeError::Exists(_) => DefError::new(S::CONFLICT, "already_exists", r.to_string()),
        RuntimeError::SavedStateDamaged(m) => {
            DefError::new(S::CONFLICT, "saved_state_damaged", m.clone())
        }
        RuntimeError::AgentTimeout(_) => {
            DefError::new(S::GATEWAY_TIMEOUT, "deadline_exceeded", r.to_string())
        }
        RuntimeError::Unavailable(m) => {
            DefError::new(S::SERVICE_UNAVAILABLE, "unavailable", m.clone())
        }
        RuntimeError::Setup(_) | RuntimeError::Agent(_) | RuntimeError::Host { .. } => {
            internal(whole)
        }
    }
}

fn internal(e: &CoreError) -> DefError {
    tracing::error!(error = %error_chain(e), "definitions request failed");
    DefError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the server log",
    )
}
