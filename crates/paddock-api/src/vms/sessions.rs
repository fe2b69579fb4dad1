//! Sessions as InstaVM's SDK uses them: a session names the VM that serves
//! a client's `execute` calls; when that VM's lifetime ends, the next call
//! gets a fresh VM with the same settings.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use paddock_core::model::{Vm, VmStatus};
use paddock_core::CoreError;

use super::dto::{wire_status, CreateSessionRequest, KillRequest, SessionResponse, VmResponse};
use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidPath};
use super::{session_id, vm_spec, VmSettings};
use crate::AppState;

fn session_response(vm: &Vm) -> SessionResponse {
    SessionResponse {
        session_id: vm.session_id.to_string(),
        vm_id: vm.id.to_string(),
        status: wire_status(vm.status).to_owned(),
        vm_status: wire_status(vm.status).to_owned(),
        vm_alive: vm.status == VmStatus::Running,
        created_at: vm.created_at.to_rfc3339(),
        expires_at: vm.expires_at.map(|t| t.to_rfc3339()),
    }
}

/// Start a session: a VM, returned once it runs. The key may come in the
/// body (`api_key`), as InstaVM's SDK sends it here.
#[utoipa::path(post, path = "/v1/sessions/session", tag = "sessions",
    request_body = CreateSessionRequest,
    responses((status = 200, body = SessionResponse), (status = 401, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidJson(body): ValidJson<CreateSessionRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let key = crate::auth::header_key(&headers)
        .or(body.api_key.clone())
        .ok_or(CoreError::Unauthenticated)?;
    let account = state.service.accounts().authenticate(&key).await?;
    let spec = vm_spec(
        &state.service,
        VmSettings {
            session_id: None,
            vm_lifetime_seconds: body.vm_lifetime_seconds,
            memory_mb: body.memory_mb,
            vcpu_count: body.vcpu_count,
            metadata: body.metadata,
            env: body.env,
            image_variant: body.image_variant,
            ..VmSettings::default()
        },
    )?;
    let vm = state.service.create_vm(&account, spec, true).await?;
    if vm.status != VmStatus::Running {
        return Err(ApiError::Status(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the session's VM failed to start: {}",
                vm.status_reason.unwrap_or_default()
            ),
        ));
    }
    Ok(Json(session_response(&vm)))
}

/// A session's record: its newest VM.
#[utoipa::path(get, path = "/v1/sessions/session/{session_id}", tag = "sessions",
    params(("session_id" = String, Path)),
    responses((status = 200, body = SessionResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<SessionResponse>, ApiError> {
    let vm = state
        .service
        .session_latest_vm(&account, &session_id(&raw)?)
        .await?;
    Ok(Json(session_response(&vm)))
}

/// A session's status (`vm_status` is `active` while its VM runs).
#[utoipa::path(get, path = "/v1/sessions/status/{session_id}", tag = "sessions",
    params(("session_id" = String, Path)),
    responses((status = 200, body = SessionResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn status(
    state: State<AppState>,
    caller: Caller,
    path: ValidPath<String>,
) -> Result<Json<SessionResponse>, ApiError> {
    get(state, caller, path).await
}

/// End a session: terminate its VM.
#[utoipa::path(delete, path = "/v1/sessions/session/{session_id}", tag = "sessions",
    params(("session_id" = String, Path)),
    responses((status = 200, body = VmResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn end(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<VmResponse>, ApiError> {
    let vm = state
        .service
        .session_latest_vm(&account, &session_id(&raw)?)
        .await?;
    let vm = state.service.delete_vm(&account, &vm.id).await?;
    Ok(Json(VmResponse::from(&vm)))
}

/// Kill a session's VM (InstaVM's `/kill`).
#[utoipa::path(post, path = "/kill", tag = "sessions", request_body = KillRequest,
    responses((status = 200, body = VmResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn kill(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<KillRequest>,
) -> Result<Json<VmResponse>, ApiError> {
    let vm = state
        .service
        .session_latest_vm(&account, &session_id(&body.session_id)?)
        .await?;
    let vm = state.service.delete_vm(&account, &vm.id).await?;
    Ok(Json(VmResponse::from(&vm)))
}
