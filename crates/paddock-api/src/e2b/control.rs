//! E2B's control plane: sandboxes created from templates, listed with
//! metadata and state filters and a `x-next-token` page header, looked
//! up, killed, their timeout set, paused and connected to (resumed).
//! Authenticated by the SDK's `X-API-KEY`, which is a paddock API key.

use std::collections::BTreeMap;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use paddock_core::ids::AccountId;
use paddock_e2b::{NewSandbox, SandboxQuery, SandboxState};
use serde::Deserialize;

use super::views::{E2bError, ListedSandbox, MetricView, SandboxDetail, SandboxView};
use super::RestError;
use crate::AppState;

pub(super) async fn caller(
    state: &AppState,
    request: Request,
) -> Result<(AccountId, Request), RestError> {
    let (parts, body) = request.into_parts();
    let account = crate::auth::authenticate(&parts, state).await?;
    Ok((account, Request::from_parts(parts, body)))
}

pub(super) async fn json_body<T: serde::de::DeserializeOwned + Default>(
    request: Request,
) -> Result<T, RestError> {
    let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .map_err(|e| RestError::new(StatusCode::BAD_REQUEST, format!("body: {e}")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        RestError::new(
            StatusCode::BAD_REQUEST,
            format!("body.{}: {}", e.path(), e.inner()),
        )
    })
}

/// A sandbox to create (E2B's `NewSandbox`).
#[derive(Deserialize, serde::Serialize, Default, utoipa::ToSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct NewSandboxBody {
    /// `base` (the server's default image), a template's name, a
    /// snapshot id or an image reference.
    #[serde(rename = "templateID")]
    template_id: String,
    /// Seconds until the sandbox ends (or pauses, with `autoPause`);
    /// default 300.
    timeout: Option<i64>,
    auto_pause: Option<bool>,
    /// Whether activity resumes the sandbox when paused.
    auto_resume: Option<AutoResume>,
    metadata: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    /// E2B's flag for an envd token; every paddock sandbox has one.
    secure: Option<bool>,
}

fn timeout_seconds(t: Option<i64>, field: &str) -> Result<Option<u64>, RestError> {
    match t {
        None => Ok(None),
        Some(t) if t > 0 => Ok(Some(t as u64)),
        Some(_) => Err(RestError::new(
            StatusCode::BAD_REQUEST,
            format!("{field}: must be a positive number of seconds"),
        )),
    }
}

async fn create(state: AppState, request: Request) -> Result<Response, RestError> {
    let (account, request) = caller(&state, request).await?;
    let body: NewSandboxBody = json_body(request).await?;
    let _ = body.secure;
    let new = NewSandbox {
        template: body.template_id,
        timeout_seconds: timeout_seconds(body.timeout, "timeout")?,
        metadata: body.metadata.unwrap_or_default(),
        env_vars: body.env_vars.unwrap_or_default(),
        auto_pause: body.auto_pause.unwrap_or(false),
        auto_resume: body.auto_resume.is_some_and(|a| a.enabled),
    };
    let made = state.e2b.create_sandbox(&account, new).await?;
    Ok((StatusCode::CREATED, Json(SandboxView::from(&made))).into_response())
}

/// Create a sandbox from a template and wait until it runs.
#[utoipa::path(post, path = "/e2b/sandboxes", tag = "e2b", operation_id = "e2b_create_sandbox",
    request_body = NewSandboxBody,
    responses((status = 201, body = SandboxView), (status = 400, body = E2bError), (status = 503, body = E2bError)))]
pub async fn create_v1(State(state): State<AppState>, request: Request) -> Response {
    create(state, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Create a sandbox (the SDK's v2 route; the same body and answer).
#[utoipa::path(post, path = "/e2b/v2/sandboxes", tag = "e2b", operation_id = "e2b_create_sandbox_v2",
    request_body = NewSandboxBody,
    responses((status = 201, body = SandboxView), (status = 400, body = E2bError), (status = 503, body = E2bError)))]
pub async fn create_v2(State(state): State<AppState>, request: Request) -> Response {
    create(state, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize, serde::Serialize, Default, utoipa::IntoParams)]
#[serde(default, rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct ListParams {
    /// `k=v&k2=v2`, URL-encoded as one parameter: every pair must match.
    metadata: Option<String>,
    /// `running`, `paused` or both, comma-separated; default both.
    state: Option<String>,
    /// The `x-next-token` of the previous page.
    next_token: Option<String>,
    /// At most 100 (v2); default 100.
    limit: Option<u32>,
}

fn list_query(request: &Request, paged: bool) -> Result<SandboxQuery, RestError> {
    let params: ListParams = axum::extract::Query::try_from_uri(request.uri())
        .map(|q| q.0)
        .map_err(|e| RestError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let metadata = match params.metadata.as_deref() {
        None | Some("") => BTreeMap::new(),
        Some(m) => serde_urlencoded::from_str::<Vec<(String, String)>>(m)
            .map_err(|e| RestError::new(StatusCode::BAD_REQUEST, format!("metadata: {e}")))?
            .into_iter()
            .collect(),
    };
    let mut states = Vec::new();
    for s in params
        .state
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
    {
        if s.is_empty() {
            continue;
        }
        states.push(SandboxState::parse(s).ok_or_else(|| {
            RestError::new(
                StatusCode::BAD_REQUEST,
                format!("state: {s:?} is not running or paused"),
            )
        })?);
    }
    let limit = params.limit.unwrap_or(if paged { 100 } else { 1000 });
    if limit == 0 || limit > paddock_e2b::MAX_PAGE && paged {
        return Err(RestError::new(
            StatusCode::BAD_REQUEST,
            format!("limit: 1 to {}", paddock_e2b::MAX_PAGE),
        ));
    }
    Ok(SandboxQuery {
        metadata,
        states,
        next_token: params.next_token.filter(|t| !t.is_empty()),
        limit,
    })
}

async fn list(state: AppState, request: Request, paged: bool) -> Result<Response, RestError> {
    let (account, request) = caller(&state, request).await?;
    let mut query = list_query(&request, paged)?;
    if !paged {
        // v1 lists everything, page after page.
        query.limit = paddock_e2b::MAX_PAGE;
        let mut all = Vec::new();
        loop {
            let (page, next) = state.e2b.list_sandboxes(&account, &query).await?;
            all.extend(page.iter().map(ListedSandbox::from));
            match next {
                Some(n) => query.next_token = Some(n),
                None => return Ok(Json(all).into_response()),
            }
        }
    }
    let (page, next) = state.e2b.list_sandboxes(&account, &query).await?;
    let body: Vec<ListedSandbox> = page.iter().map(ListedSandbox::from).collect();
    let mut response = Json(body).into_response();
    if let Some(next) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-next-token"), next);
    }
    Ok(response)
}

/// List every running and paused sandbox of the account.
#[utoipa::path(get, path = "/e2b/sandboxes", tag = "e2b", operation_id = "e2b_list_sandboxes",
    params(ListParams), responses((status = 200, body = Vec<ListedSandbox>)))]
pub async fn list_v1(State(state): State<AppState>, request: Request) -> Response {
    list(state, request, false)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// A page of the account's sandboxes, newest first; `x-next-token` names
/// the next page.
#[utoipa::path(get, path = "/e2b/v2/sandboxes", tag = "e2b", operation_id = "e2b_list_sandboxes_v2",
    params(ListParams), responses((status = 200, body = Vec<ListedSandbox>,
        headers(("x-next-token" = String, description = "The next page's token, when there is one")))))]
pub async fn list_v2(State(state): State<AppState>, request: Request) -> Response {
    list(state, request, true)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// One sandbox, with its envd access token.
#[utoipa::path(get, path = "/e2b/sandboxes/{sandbox_id}", tag = "e2b", operation_id = "e2b_get_sandbox",
    params(("sandbox_id" = String, Path)), responses((status = 200, body = SandboxDetail)))]
pub async fn get_sandbox(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    async {
        let (account, _) = caller(&state, request).await?;
        let s = state.e2b.get_sandbox(&account, &id).await?;
        Ok::<_, RestError>(Json(SandboxDetail::from(&s)).into_response())
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// Kill a sandbox.
#[utoipa::path(delete, path = "/e2b/sandboxes/{sandbox_id}", tag = "e2b", operation_id = "e2b_kill_sandbox",
    params(("sandbox_id" = String, Path)), responses((status = 204, description = "Killed")))]
pub async fn kill(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    async {
        let (account, _) = caller(&state, request).await?;
        state.e2b.kill_sandbox(&account, &id).await?;
        Ok::<_, RestError>(StatusCode::NO_CONTENT.into_response())
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// E2B's auto-resume setting.
#[derive(Deserialize, serde::Serialize, Default, utoipa::ToSchema)]
pub struct AutoResume {
    enabled: bool,
}

/// A timeout (`/timeout`, `/connect`, `/resume`) or a keep-alive
/// (`/refreshes`), in seconds.
#[derive(Deserialize, serde::Serialize, Default, utoipa::ToSchema)]
#[serde(default)]
pub struct TimeoutBody {
    timeout: Option<i64>,
    duration: Option<i64>,
}

/// The sandbox ends `timeout` seconds from now.
#[utoipa::path(post, path = "/e2b/sandboxes/{sandbox_id}/timeout", tag = "e2b", operation_id = "e2b_set_timeout",
    params(("sandbox_id" = String, Path)), request_body = TimeoutBody,
    responses((status = 204, description = "Set"), (status = 400, body = E2bError)))]
pub async fn set_timeout(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    async {
        let (account, request) = caller(&state, request).await?;
        let body: TimeoutBody = json_body(request).await?;
        let t = timeout_seconds(body.timeout, "timeout")?
            .ok_or_else(|| RestError::new(StatusCode::BAD_REQUEST, "timeout: required"))?;
        state.e2b.set_timeout(&account, &id, t).await?;
        Ok::<_, RestError>(StatusCode::NO_CONTENT.into_response())
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// Extends a sandbox's life to at least `duration` seconds from now
/// (default 60; E2B's keep-alive).
#[utoipa::path(post, path = "/e2b/sandboxes/{sandbox_id}/refreshes", tag = "e2b", operation_id = "e2b_refresh_sandbox",
    params(("sandbox_id" = String, Path)), request_body = TimeoutBody,
    responses((status = 204, description = "Extended")))]
pub async fn refresh(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    async {
        let (account, request) = caller(&state, request).await?;
        let body: TimeoutBody = json_body(request).await?;
        let t = timeout_seconds(body.duration, "duration")?.unwrap_or(60);
        state.e2b.connect_sandbox(&account, &id, Some(t)).await?;
        Ok::<_, RestError>(StatusCode::NO_CONTENT.into_response())
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// Pause a sandbox (its memory kept where its provider can: microVMs).
#[utoipa::path(post, path = "/e2b/sandboxes/{sandbox_id}/pause", tag = "e2b", operation_id = "e2b_pause_sandbox",
    params(("sandbox_id" = String, Path)),
    responses((status = 204, description = "Paused"), (status = 409, body = E2bError), (status = 400, body = E2bError)))]
pub async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    async {
        let (account, _) = caller(&state, request).await?;
        state.e2b.pause_sandbox(&account, &id).await?;
        Ok::<_, RestError>(StatusCode::NO_CONTENT.into_response())
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

async fn connect_to(
    state: AppState,
    id: String,
    request: Request,
    resume_only: bool,
) -> Result<Response, RestError> {
    let (account, request) = caller(&state, request).await?;
    let body: TimeoutBody = json_body(request).await?;
    let before = state.e2b.get_sandbox(&account, &id).await?;
    if resume_only && before.state == SandboxState::Running {
        return Err(RestError::new(
            StatusCode::CONFLICT,
            format!("sandbox {id} is already running"),
        ));
    }
    let t = timeout_seconds(body.timeout, "timeout")?;
    let after = state.e2b.connect_sandbox(&account, &id, t).await?;
    // 201 when the call resumed it, as E2B answers.
    let status = if before.state == SandboxState::Paused {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(SandboxView::from(&after))).into_response())
}

/// Connect to a sandbox, resuming it when paused (201 then), and with
/// `timeout` make it live at least that long.
#[utoipa::path(post, path = "/e2b/sandboxes/{sandbox_id}/connect", tag = "e2b", operation_id = "e2b_connect_sandbox",
    params(("sandbox_id" = String, Path)), request_body = TimeoutBody,
    responses((status = 200, body = SandboxView), (status = 201, body = SandboxView)))]
pub async fn connect(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    connect_to(state, id, request, false)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Connect to a sandbox (the SDK's v2 route; the same body and answer).
#[utoipa::path(post, path = "/e2b/v2/sandboxes/{sandbox_id}/connect", tag = "e2b", operation_id = "e2b_connect_sandbox_v2",
    params(("sandbox_id" = String, Path)), request_body = TimeoutBody,
    responses((status = 200, body = SandboxView), (status = 201, body = SandboxView)))]
pub async fn connect_v2(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    connect_to(state, id, request, false)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Resume a paused sandbox (409 when it runs).
#[utoipa::path(post, path = "/e2b/sandboxes/{sandbox_id}/resume", tag = "e2b", operation_id = "e2b_resume_sandbox",
    params(("sandbox_id" = String, Path)), request_body = TimeoutBody,
    responses((status = 201, body = SandboxView), (status = 409, body = E2bError)))]
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    connect_to(state, id, request, true)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The sandbox's resource use now (E2B's `get_metrics`).
#[utoipa::path(get, path = "/e2b/sandboxes/{sandbox_id}/metrics", tag = "e2b", operation_id = "e2b_sandbox_metrics",
    params(("sandbox_id" = String, Path)), responses((status = 200, body = Vec<MetricView>)))]
pub async fn metrics(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    async {
        let (account, _) = caller(&state, request).await?;
        let list: Vec<MetricView> = state
            .e2b
            .sandbox_metrics(&account, &id)
            .await?
            .iter()
            .map(MetricView::from)
            .collect();
        Ok::<_, RestError>(Json(list).into_response())
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}
