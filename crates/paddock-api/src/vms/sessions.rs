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
use super::extract::{Caller, ValidJson, ValidPath, ValidQuery};
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
    slot: Option<axum::Extension<crate::audit::AuditSlot>>,
    ValidJson(body): ValidJson<CreateSessionRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let key = crate::auth::header_key(&headers)
        .or(body.api_key.clone())
        .ok_or(CoreError::Unauthenticated)?;
    let slot = slot.map(|axum::Extension(s)| s);
    let account = crate::auth::authenticate_presented(slot.as_ref(), &state, &key)
        .await?
        .account_id;
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
    let vm = state.vms().create_vm(&account, spec, true).await?;
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
        .vms()
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
        .vms()
        .end_session(&account, &session_id(&raw)?)
        .await?;
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
        .vms()
        .end_session(&account, &session_id(&body.session_id)?)
        .await?;
    Ok(Json(VmResponse::from(&vm)))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SandboxesQuery {
    /// A JSON object: only VMs whose metadata holds each of its keys with
    /// the same value.
    pub metadata: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

/// The account's sandbox records (its VMs, ended ones included), newest
/// first, filtered by metadata.
#[utoipa::path(get, path = "/v1/sessions/sandboxes", tag = "sessions", params(SandboxesQuery),
    responses((status = 200, body = Vec<VmResponse>), (status = 422, body = HttpValidationError)))]
pub(crate) async fn sandboxes(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidQuery(q): ValidQuery<SandboxesQuery>,
) -> Result<Json<Vec<VmResponse>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field(
            &["query", "limit"],
            "must be from 1 to 1000",
            "value_error",
        ));
    }
    let filter = match q.metadata.as_deref() {
        None => paddock_core::model::Metadata::new(),
        Some(raw) => match serde_json::from_str(raw) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => {
                return Err(ApiError::field(
                    &["query", "metadata"],
                    "must be a JSON object",
                    "value_error",
                ))
            }
        },
    };
    let vms = state
        .vms()
        .find_vms_by_metadata(&account, &filter, limit as usize)
        .await?;
    Ok(Json(vms.iter().map(VmResponse::from).collect()))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AppUrlQuery {
    /// The VM port the app listens on, 1 to 65535 (default 80).
    pub port: Option<i64>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AppUrlResponse {
    pub session_id: String,
    pub vm_id: String,
    pub port: u16,
    /// Where the app answers: the share's URL.
    pub app_url: String,
    /// `/_share/…` on the proxy's own host, for clients without DNS for
    /// the share domain.
    pub path_url: String,
    pub share_id: String,
    pub is_public: bool,
    /// Whether this call made the share (a private one).
    pub created: bool,
    /// The new private share's token: in the answer that made it only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The URL of the session's app on a port: its share on that port, made
/// (private, with its token in this answer) when it has none.
#[utoipa::path(get, path = "/v1/sessions/app-url/{session_id}", tag = "sessions",
    params(("session_id" = String, Path), AppUrlQuery),
    responses((status = 200, body = AppUrlResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn app_url(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<AppUrlQuery>,
) -> Result<Json<AppUrlResponse>, ApiError> {
    let port = super::shares::share_port(q.port.unwrap_or(80), &["query", "port"])?;
    let session = session_id(&raw)?;
    let (vm, made, created) = state
        .vms()
        .session_app_share(&account, &session, port)
        .await?;
    let share = super::shares::share_response(&state.share_urls, &made);
    Ok(Json(AppUrlResponse {
        session_id: session.to_string(),
        vm_id: vm.id.to_string(),
        port: share.port,
        app_url: share.url,
        path_url: share.path_url,
        share_id: share.share_id,
        is_public: share.is_public,
        created,
        token: share.token,
    }))
}
