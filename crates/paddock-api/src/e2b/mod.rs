//! The E2B-compatible surface, under `/e2b`: the control plane (E2B's
//! REST API, for `E2B_API_URL=http://HOST/e2b`) and every sandbox's envd
//! (for `E2B_SANDBOX_URL=http://HOST/e2b/sandbox`, routed by the
//! `E2b-Sandbox-Id` header the SDK sends and authorized by the sandbox's
//! `X-Access-Token`). The rules are the `paddock-e2b` product's; this
//! module reads and writes E2B's wire formats.

mod code_interpreter;
mod connect;
mod control;
mod extract;
mod files;
mod filesystem_service;
pub mod openapi;
mod process_service;
mod templates;
mod views;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use paddock_core::error::CoreError;

use crate::AppState;

/// An error of E2B's REST APIs: `{"code": <HTTP status>, "message"}`.
#[derive(Debug)]
pub struct RestError {
    status: StatusCode,
    message: String,
}

impl RestError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<CoreError> for RestError {
    fn from(e: CoreError) -> Self {
        let status = match &e {
            CoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            CoreError::InvalidArgument { .. } | CoreError::FailedPrecondition(_) => {
                StatusCode::BAD_REQUEST
            }
            CoreError::Conflict(_) => StatusCode::CONFLICT,
            CoreError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            CoreError::ResourceExhausted(_) | CoreError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            CoreError::Unauthenticated => StatusCode::UNAUTHORIZED,
            CoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            CoreError::Upstream(_) => StatusCode::BAD_GATEWAY,
            CoreError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            CoreError::Runtime(_) | CoreError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            CoreError::Runtime(_) | CoreError::Store(_) => {
                tracing::error!(error = %paddock_core::error::error_chain(&e), "an E2B request failed");
                "internal error; see the server log".to_owned()
            }
            CoreError::NotFound { kind, id } => format!("{kind} {id} not found"),
            other => other.to_string(),
        };
        Self { status, message }
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.status.as_u16(), "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

/// envd's port, which the SDK names in `E2b-Sandbox-Port`.
const ENVD_PORT: &str = "49983";
/// The code interpreter's port.
const CODE_INTERPRETER_PORT: &str = "49999";

/// The surface's routes.
pub fn router(limits: &crate::server::HttpLimits) -> Router<AppState> {
    let control = Router::new()
        .route(
            "/e2b/sandboxes",
            post(control::create_v1).get(control::list_v1),
        )
        .route(
            "/e2b/v2/sandboxes",
            post(control::create_v2).get(control::list_v2),
        )
        .route(
            "/e2b/sandboxes/{sandbox_id}",
            get(control::get_sandbox).delete(control::kill),
        )
        .route(
            "/e2b/sandboxes/{sandbox_id}/timeout",
            post(control::set_timeout),
        )
        .route(
            "/e2b/sandboxes/{sandbox_id}/refreshes",
            post(control::refresh),
        )
        .route("/e2b/sandboxes/{sandbox_id}/pause", post(control::pause))
        .route("/e2b/sandboxes/{sandbox_id}/resume", post(control::resume))
        .route(
            "/e2b/sandboxes/{sandbox_id}/connect",
            post(control::connect),
        )
        .route(
            "/e2b/v2/sandboxes/{sandbox_id}/connect",
            post(control::connect_v2),
        )
        .route("/e2b/sandboxes/{sandbox_id}/metrics", get(control::metrics))
        .route(
            "/e2b/sandboxes/{sandbox_id}/snapshots",
            post(control::snapshot),
        )
        .route("/e2b/snapshots", get(control::snapshots))
        .route("/e2b/v3/templates", post(templates::request_build))
        .route(
            "/e2b/v2/templates/{template_id}/builds/{build_id}",
            post(templates::start_build),
        )
        .route(
            "/e2b/templates/{template_id}/builds/{build_id}/status",
            get(templates::build_status),
        )
        .route(
            "/e2b/templates/{template_id}/files/{hash}",
            get(templates::files),
        )
        .route("/e2b/templates", get(templates::list))
        .route("/e2b/v2/templates", get(templates::list_v2))
        .route("/e2b/templates/aliases/{alias}", get(templates::alias))
        .route(
            "/e2b/templates/{template_id}",
            get(templates::get).delete(templates::delete),
        )
        .layer(crate::body_limit(limits.json_body_bytes));
    // envd's bodies are files and streams: no limit but the messages'.
    let envd = Router::new()
        .route("/e2b/sandbox/{*rest}", any(envd))
        .route("/e2b/sandbox", any(envd_root))
        .route(
            "/e2b/template-uploads/{account}/{template_id}/{hash}",
            axum::routing::put(templates::upload).post(templates::upload),
        )
        .layer(axum::extract::DefaultBodyLimit::disable());
    control.merge(envd)
}

async fn envd_root() -> Response {
    RestError::new(StatusCode::NOT_FOUND, "no such envd route").into_response()
}

/// The user the SDK names (`Authorization: Basic base64(user:)`).
fn basic_user(headers: &HeaderMap) -> Option<String> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let encoded = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next()?.trim().to_owned();
    (!user.is_empty()).then_some(user)
}

/// Every envd route of every sandbox: the sandbox and its token first,
/// then the route.
async fn envd(State(state): State<AppState>, request: Request) -> Response {
    let path = request
        .uri()
        .path()
        .strip_prefix("/e2b/sandbox")
        .unwrap_or("")
        .to_owned();
    let headers = request.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let Some(sandbox_id) = header("e2b-sandbox-id") else {
        return RestError::new(
            StatusCode::BAD_REQUEST,
            "the E2b-Sandbox-Id header names no sandbox",
        )
        .into_response();
    };
    let port = header("e2b-sandbox-port");
    let interpreter = match port.as_deref() {
        None | Some(ENVD_PORT) => false,
        Some(CODE_INTERPRETER_PORT) => true,
        Some(other) => {
            return RestError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "port {other} of sandbox {sandbox_id} is not served through the sandbox URL; use the sandbox's get_host({other}) address"
                ),
            )
            .into_response()
        }
    };
    let e2b = std::sync::Arc::clone(&state.e2b);
    let traffic = if interpreter {
        header("e2b-traffic-access-token")
    } else {
        None
    };
    let target = match e2b
        .port_target(
            &sandbox_id,
            header("x-access-token").as_deref(),
            traffic.as_deref(),
        )
        .await
    {
        Ok(t) => t,
        Err(e) => return envd_refusal(&path, e),
    };
    // A sandbox that is not running answers as E2B's proxy does: 502.
    match state.vms().get_vm(&target.account, &target.vm).await {
        Ok(vm) if vm.status == paddock_core::model::VmStatus::Running => {}
        Ok(vm) => {
            return RestError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "sandbox {sandbox_id} is {}, not running",
                    vm.status.as_str()
                ),
            )
            .into_response()
        }
        Err(e) => return envd_refusal(&path, e),
    }
    if interpreter {
        return code_interpreter::call(&e2b, &target, &path, request)
            .await
            .unwrap_or_else(IntoResponse::into_response);
    }
    let user = basic_user(&headers);
    let method = request.method().clone();
    if let Some(rpc) = path.strip_prefix("/process.Process/") {
        let rpc = rpc.to_owned();
        return process_service::call(&e2b, &target, &rpc, &headers, user, request.into_body())
            .await;
    }
    if let Some(rpc) = path.strip_prefix("/filesystem.Filesystem/") {
        let rpc = rpc.to_owned();
        return filesystem_service::call(
            &e2b,
            &target,
            &rpc,
            &headers,
            user.as_deref(),
            request.into_body(),
        )
        .await;
    }
    let result = match (method, path.as_str()) {
        (Method::GET, "/health") => Ok(StatusCode::NO_CONTENT.into_response()),
        (Method::GET, "/files") => match files::FileQuery::parse(request.uri()) {
            Ok(q) => files::download(&e2b, &target, q).await,
            Err(e) => Err(e),
        },
        (Method::POST, "/files") => match files::FileQuery::parse(request.uri()) {
            Ok(q) => files::upload(&e2b, &target, q, request).await,
            Err(e) => Err(e),
        },
        (_, p) => Err(RestError::new(
            StatusCode::NOT_FOUND,
            format!("envd has no route {p}"),
        )),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A refused envd request, in the format of the route it came to.
fn envd_refusal(path: &str, e: CoreError) -> Response {
    if path.starts_with("/process.Process/") || path.starts_with("/filesystem.Filesystem/") {
        return connect::unary(Err(e.into()));
    }
    RestError::from(e).into_response()
}
