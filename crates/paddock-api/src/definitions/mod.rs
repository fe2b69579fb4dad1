//! The environment definitions surface, `/api/v1/…` (snake_case JSON):
//! definitions (`environments.rs`) and the sandboxes launched from them
//! (`sandboxes.rs`). Every answer carries `x-request-id`; errors are
//! `ErrorResponse` (`error.rs`). Callers authenticate with
//! `Authorization: Bearer` and a dev token (`fabro_dev_…`) or an API key.

mod environments;
pub(crate) mod error;
mod list;
pub mod openapi;
mod sandboxes;
mod views;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use paddock_core::ids::AccountId;
use paddock_core::CoreError;

pub use error::DefError;
use error::REQUEST_ID;

use crate::AppState;

/// The definitions' routes: JSON bodies up to the JSON limit, an exec's
/// up to the command limit.
pub fn router(
    limits: &crate::server::HttpLimits,
    budget: &crate::body_budget::BodyBudget,
) -> Router<AppState> {
    let commands = Router::new()
        .route("/api/v1/sandboxes/{sandbox_id}/exec", post(sandboxes::exec))
        .layer(crate::body_limit(limits.command_body_bytes))
        .layer(budget.on(limits.command_body_bytes));
    Router::new()
        .route(
            "/api/v1/environments",
            get(environments::list).post(environments::create),
        )
        .route(
            "/api/v1/environments/{id}",
            get(environments::retrieve)
                .put(environments::replace)
                .delete(environments::delete),
        )
        .route(
            "/api/v1/environments/{id}/sandboxes",
            get(sandboxes::list_of_environment).post(sandboxes::launch),
        )
        .route(
            "/api/v1/environments/{id}/sandboxes/{sandbox_id}",
            get(sandboxes::retrieve_of_environment).delete(sandboxes::delete_of_environment),
        )
        .route("/api/v1/sandboxes", get(sandboxes::list))
        .route(
            "/api/v1/sandboxes/{sandbox_id}",
            get(sandboxes::retrieve).delete(sandboxes::delete),
        )
        .route("/api/v1/sandboxes/{sandbox_id}/stop", post(sandboxes::stop))
        .route(
            "/api/v1/sandboxes/{sandbox_id}/start",
            post(sandboxes::start),
        )
        .route(
            "/api/v1/sandboxes/{sandbox_id}/files",
            get(sandboxes::read_file).put(sandboxes::write_file),
        )
        .layer(crate::body_limit(limits.json_body_bytes))
        .layer(budget.on(limits.json_body_bytes))
        .merge(commands)
        .layer(axum::middleware::from_fn(request_id))
}

/// Gives every answer an `x-request-id` (errors bring their own, which
/// their body repeats).
async fn request_id(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if !response.headers().contains_key(REQUEST_ID) {
        if let Ok(v) = HeaderValue::from_str(&error::new_request_id()) {
            response.headers_mut().insert(REQUEST_ID, v);
        }
    }
    response
}

/// The caller's account, from a dev token or API key.
pub struct Caller(pub AccountId);

impl FromRequestParts<AppState> for Caller {
    type Rejection = DefError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, DefError> {
        let key = crate::auth::header_key(&parts.headers).ok_or(CoreError::Unauthenticated)?;
        let who = crate::auth::authenticate_presented(parts.extensions.get(), state, &key).await?;
        Ok(Caller(who.account_id))
    }
}

/// A JSON body: 400 when it is not JSON, 422 naming the field when it
/// does not fit `T`.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, DefError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde names a missing or unknown field in its message; the path
        // says where it was.
        let detail = if path == "." || path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        };
        DefError::unprocessable(detail)
    })
}

/// The body as JSON, or 400.
pub(crate) fn json_value(bytes: &[u8]) -> Result<serde_json::Value, DefError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        DefError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })
}
