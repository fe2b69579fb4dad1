//! E2B's control plane: sandboxes created from templates, listed with
//! metadata and state filters and a `x-next-token` page header, looked
//! up, killed, their timeout set, paused and connected to (resumed).
//! Authenticated by the SDK's `X-API-KEY`, which is a paddock API key.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use paddock_e2b::{NewSandbox, SandboxQuery, SandboxState};
use serde::Deserialize;

use super::extract::{E2bCaller, E2bJson, E2bQuery};
use super::views::{E2bError, ListedSandbox, MetricView, SandboxDetail, SandboxView, SnapshotView};
use super::RestError;
use crate::AppState;

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

async fn create(
    state: AppState,
    account: paddock_core::ids::AccountId,
    body: NewSandboxBody,
) -> Result<Response, RestError> {
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
pub async fn create_v1(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    E2bJson(body): E2bJson<NewSandboxBody>,
) -> Result<Response, RestError> {
    create(state, account, body).await
}

/// Create a sandbox (the SDK's v2 route; the same body and answer).
#[utoipa::path(post, path = "/e2b/v2/sandboxes", tag = "e2b", operation_id = "e2b_create_sandbox_v2",
    request_body = NewSandboxBody,
    responses((status = 201, body = SandboxView), (status = 400, body = E2bError), (status = 503, body = E2bError)))]
pub async fn create_v2(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    E2bJson(body): E2bJson<NewSandboxBody>,
) -> Result<Response, RestError> {
    create(state, account, body).await
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

fn list_query(params: ListParams, paged: bool) -> Result<SandboxQuery, RestError> {
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

/// List every running and paused sandbox of the account.
#[utoipa::path(get, path = "/e2b/sandboxes", tag = "e2b", operation_id = "e2b_list_sandboxes",
    params(ListParams), responses((status = 200, body = Vec<ListedSandbox>)))]
pub async fn list_v1(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    E2bQuery(params): E2bQuery<ListParams>,
) -> Result<Json<Vec<ListedSandbox>>, RestError> {
    let mut query = list_query(params, false)?;
    query.limit = paddock_e2b::MAX_PAGE;
    let mut all = Vec::new();
    loop {
        let (page, next) = state.e2b.list_sandboxes(&account, &query).await?;
        all.extend(page.iter().map(ListedSandbox::from));
        match next {
            Some(n) => query.next_token = Some(n),
            None => return Ok(Json(all)),
        }
    }
}

/// A page of the account's sandboxes, newest first; `x-next-token` names
/// the next page.
#[utoipa::path(get, path = "/e2b/v2/sandboxes", tag = "e2b", operation_id = "e2b_list_sandboxes_v2",
    params(ListParams), responses((status = 200, body = Vec<ListedSandbox>,
        headers(("x-next-token" = String, description = "The next page's token, when there is one")))))]
pub async fn list_v2(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    E2bQuery(params): E2bQuery<ListParams>,
) -> Result<Response, RestError> {
    let query = list_query(params, true)?;
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

/// One sandbox, with its envd access token.
#[utoipa::path(get, path = "/e2b/sandboxes/{sandbox_id}", tag = "e2b", operation_id = "e2b_get_sandbox",
    params(("sandbox_id" = String, Path)), responses((status = 200, body = SandboxDetail)))]
pub async fn get_sandbox(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    Path(id): Path<String>,
) -> Result<Json<SandboxDetail>, RestError> {
    let s = state.e2b.get_sandbox(&account, &id).await?;
    Ok(Json(SandboxDetail::from(&s)))
}

/// Kill a sandbox.
#[utoipa::path(delete, path = "/e2b/sandboxes/{sandbox_id}", tag = "e2b", operation_id = "e2b_kill_sandbox",
    params(("sandbox_id" = String, Path)), responses((status = 204, description = "Killed")))]
pub async fn kill(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, RestError> {
    state.e2b.kill_sandbox(&account, &id).await?;
    Ok(StatusCode::NO_CONTENT)
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
    E2bCaller(account): E2bCaller,
    Path(id): Path<String>,
    E2bJson(body): E2bJson<TimeoutBody>,
) -> Result<StatusCode, RestError> {
    let t = timeout_seconds(body.timeout, "timeout")?
        .ok_or_else(|| RestError::new(StatusCode::BAD_REQUEST, "timeout: required"))?;
    state.e2b.set_timeout(&account, &id, t).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Extends a sandbox's life to at least `duration` seconds from now
/// (default 60; E2B's keep-alive).
#[utoipa::path(post, path = "/e2b/sandboxes/{sandbox_id}/refreshes", tag = "e2b", operation_id = "e2b_refresh_sandbox",
    params(("sandbox_id" = String, Path)), request_body = TimeoutBody,
    responses((status = 204, description = "Extended")))]
pub async fn refresh(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    Path(id): Path<String>,
    E2bJson(body): E2bJson<TimeoutBody>,
) -> Result<StatusCode, RestError> {
    let t = timeout_seconds(body.duration, "duration")?.unwrap_or(60);
    state.e2b.connect_sandbox(&account, &id, Some(t)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a sandbox (its memory kept where its provider can: microVMs).
#[utoipa::path(post, path = "/e2b/sandboxes/{sandbox_id}/pause", tag = "e2b", operation_id = "e2b_pause_sandbox",
    params(("sandbox_id" = String, Path)),
    responses((status = 204, description = "Paused"), (status = 409, body = E2bError), (status = 400, body = E2bError)))]
pub async fn pause(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, RestError> {
    state.e2b.pause_sandbox(&account, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Connects (resuming a paused sandbox unless `resume_only` and it runs).
async fn connect_to(
    state: &AppState,
    account: &paddock_core::ids::AccountId,
    id: &str,
    body: TimeoutBody,
    resume_only: bool,
) -> Result<Response, RestError> {
    let before = state.e2b.get_sandbox(account, id).await?;
    if resume_only && before.state == SandboxState::Running {
        return Err(RestError::new(
            StatusCode::CONFLICT,
            format!("sandbox {id} is already running"),
        ));
    }
    let t = timeout_seconds(body.timeout, "timeout")?;
    let after = state.e2b.connect_sandbox(account, id, t).await?;
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
    E2bCaller(account): E2bCaller,
    Path(id): Path<String>,
    E2bJson(body): E2bJson<TimeoutBody>,
) -> Result<Response, RestError> {
    connect_to(&state, &account, &id, body, false).await
}

/// Connect to a sandbox (the SDK's v2 route; the same body and answer).
#[utoipa::path(post, path = "/e2b/v2/sandboxes/{sandbox_id}/connect", tag = "e2b", operation_id = "e2b_connect_sandbox_v2",
    params(("sandbox_id" = String, Path)), request_body = TimeoutBody,
    responses((status = 200, body = SandboxView), (status = 201, body = SandboxView)))]
pub async fn connect_v2(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    Path(id): Path<String>,
    E2bJson(body): E2bJson<TimeoutBody>,
) -> Result<Response, RestError> {
    connect_to(&state, &account, &id, body, false).await
}

/// Resume a paused sandbox (409 when it runs).
#[utoipa::path(post, path = "/e2b/sandboxes/{sandbox_id}/resume", tag = "e2b", operation_id = "e2b_resume_sandbox",
    params(("sandbox_id" = String, Path)), request_body = TimeoutBody,
    responses((status = 201, body = SandboxView), (status = 409, body = E2bError)))]
pub async fn resume(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    Path(id): Path<String>,
    E2bJson(body): E2bJson<TimeoutBody>,
) -> Result<Response, RestError> {
    connect_to(&state, &account, &id, body, true).await
}

/// The sandbox's resource use now (E2B's `get_metrics`).
#[utoipa::path(get, path = "/e2b/sandboxes/{sandbox_id}/metrics", tag = "e2b", operation_id = "e2b_sandbox_metrics",
    params(("sandbox_id" = String, Path)), responses((status = 200, body = Vec<MetricView>)))]
pub async fn metrics(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    Path(id): Path<String>,
) -> Result<Json<Vec<MetricView>>, RestError> {
    let list = state
        .e2b
        .sandbox_metrics(&account, &id)
        .await?
        .iter()
        .map(MetricView::from)
        .collect();
    Ok(Json(list))
}

/// A snapshot's name (E2B's `SandboxSnapshotRequest`).
#[derive(Deserialize, serde::Serialize, Default, utoipa::ToSchema)]
#[serde(default)]
pub struct SnapshotBody {
    name: Option<String>,
    /// E2B's choice of a memory snapshot; paddock's snapshots are of the
    /// file system.
    memory: Option<bool>,
}

/// Snapshot a sandbox (running or paused): its file system, which a new
/// sandbox starts from with the snapshot's id as `templateID`.
#[utoipa::path(post, path = "/e2b/sandboxes/{sandbox_id}/snapshots", tag = "e2b",
    operation_id = "e2b_snapshot_sandbox", params(("sandbox_id" = String, Path)),
    request_body = SnapshotBody,
    responses((status = 201, body = SnapshotView), (status = 409, body = E2bError)))]
pub async fn snapshot(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    Path(id): Path<String>,
    E2bJson(body): E2bJson<SnapshotBody>,
) -> Result<Response, RestError> {
    let _ = body.memory;
    let made = state.e2b.snapshot_sandbox(&account, &id, body.name).await?;
    Ok((StatusCode::CREATED, Json(SnapshotView::from(&made))).into_response())
}

#[derive(Deserialize, serde::Serialize, Default, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct SnapshotParams {
    /// Only the snapshots of this sandbox.
    #[serde(rename = "sandboxID")]
    sandbox_id: Option<String>,
    /// Only the snapshot of this name.
    name: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// The account's snapshots of its sandboxes, newest first.
#[utoipa::path(get, path = "/e2b/snapshots", tag = "e2b", operation_id = "e2b_list_snapshots",
    params(SnapshotParams), responses((status = 200, body = Vec<SnapshotView>)))]
pub async fn snapshots(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    E2bQuery(q): E2bQuery<SnapshotParams>,
) -> Result<Json<Vec<SnapshotView>>, RestError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(RestError::new(StatusCode::BAD_REQUEST, "limit: 1 to 1000"));
    }
    let all = state
        .e2b
        .list_snapshots(&account, q.sandbox_id.as_deref(), q.name.as_deref())
        .await?;
    Ok(Json(
        all.iter().take(limit).map(SnapshotView::from).collect(),
    ))
}
