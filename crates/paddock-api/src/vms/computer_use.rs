//! Desktops as the `instavm` SDK and CLI use them: a VM created with
//! `image_variant: "computer-use"` is a desktop; `/v1/computeruse/{session}/…`
//! gives its viewer (noVNC through a private share, opened by a one-time
//! login URL) and its control API; `/v1/recordings…` its recordings, a
//! download being a redirect to a signed URL that needs no key.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use paddock_tools::desktops::{Action, ActionResult, Recording, RecordingQuery, RecordingStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidPath, ValidQuery};
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct ViewerResponse {
    pub session_id: String,
    pub vm_id: String,
    /// noVNC in a browser: opens once (a one-time login that sets the
    /// share's cookie), then the page reconnects on its own.
    pub viewer_url: String,
    /// The VNC WebSocket (websockify) the viewer talks to; it takes the
    /// share's cookie or token.
    pub websocket_url: String,
    pub share_id: String,
    /// How long the viewer URL's login works.
    pub expires_in_seconds: u64,
}

fn viewer_view(state: &AppState, viewer: paddock_tools::desktops::Viewer) -> ViewerResponse {
    let base = state.share_urls.host_url(viewer.share.host_label());
    let ws = base.replacen("http", "ws", 1);
    ViewerResponse {
        session_id: viewer.vm.session_id.to_string(),
        vm_id: viewer.vm.id.to_string(),
        viewer_url: format!(
            "{base}vnc.html?autoconnect=true&reconnect=true&resize=scale&path=websockify&paddock_login={}",
            viewer.login
        ),
        websocket_url: format!("{ws}websockify"),
        share_id: viewer.share.id.to_string(),
        expires_in_seconds: 24 * 3600,
    }
}

#[utoipa::path(get, path = "/v1/computeruse/{session_id}/viewer-url", tag = "computer-use",
    params(("session_id" = String, Path)),
    responses((status = 200, body = ViewerResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail)))]
pub(crate) async fn viewer_url(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(session): ValidPath<String>,
) -> Result<Json<ViewerResponse>, ApiError> {
    let viewer = state.desktops.viewer(&account, &session).await?;
    Ok(Json(viewer_view(&state, viewer)))
}

#[utoipa::path(get, path = "/v1/computeruse/{session_id}/vnc/websockify", tag = "computer-use",
    params(("session_id" = String, Path)),
    responses((status = 200, body = ViewerResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail)))]
pub(crate) async fn vnc_websockify(
    state: State<AppState>,
    caller: Caller,
    session: ValidPath<String>,
) -> Result<Json<ViewerResponse>, ApiError> {
    viewer_url(state, caller, session).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingResponse {
    pub id: String,
    pub recording_id: String,
    pub session_id: String,
    pub vm_id: String,
    /// `recording`, `uploading`, `ready` or `failed`.
    pub status: String,
    pub format: String,
    pub size_bytes: u64,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

fn recording_view(r: Recording) -> RecordingResponse {
    RecordingResponse {
        recording_id: r.id.clone(),
        id: r.id,
        session_id: r.session_id,
        vm_id: r.vm_id.to_string(),
        status: r.status.as_str().to_owned(),
        format: r.format,
        size_bytes: r.size_bytes,
        duration_ms: r.duration_ms,
        error: r.error,
        created_at: r.created_at.to_rfc3339(),
        finished_at: r.finished_at.map(|t| t.to_rfc3339()),
    }
}

async fn control(
    state: AppState,
    account: paddock_core::ids::AccountId,
    session: String,
    path: String,
    method: &Method,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let parsed: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        super::extract::parse_json(body)?
    };
    let action = Action::parse(method.as_str(), &path, &parsed)?.ok_or_else(|| {
        ApiError::Status(
            StatusCode::NOT_FOUND,
            format!(
                "the desktop's control API has no {method} {path}; it serves: {}",
                paddock_tools::desktops::control::PATHS
            ),
        )
    })?;
    Ok(
        match state.desktops.act(&account, &session, action).await? {
            ActionResult::Json(v) => Json(v).into_response(),
            ActionResult::Recording(r) => Json(recording_view(r)).into_response(),
        },
    )
}

/// The desktop's control API (see the path list in a 404's detail):
/// `screenshot`, `display`, `mouse`.
#[utoipa::path(get, path = "/v1/computeruse/{session_id}/{path}", tag = "computer-use",
    params(("session_id" = String, Path), ("path" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError),
        (status = 503, body = ErrorDetail)))]
pub(crate) async fn control_get(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((session, path)): ValidPath<(String, String)>,
) -> Result<Response, ApiError> {
    control(state, account, session, path, &Method::GET, &Bytes::new()).await
}

/// The desktop's control API: `mouse/move`, `mouse/click`, `mouse/scroll`,
/// `keyboard/type`, `keyboard/key`, `recordings/start`, `recordings/stop`.
#[utoipa::path(post, path = "/v1/computeruse/{session_id}/{path}", tag = "computer-use",
    params(("session_id" = String, Path), ("path" = String, Path)),
    request_body(content = Object, description = "The action's arguments"),
    responses((status = 200, body = Object), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError),
        (status = 503, body = ErrorDetail)))]
pub(crate) async fn control_post(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((session, path)): ValidPath<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    control(state, account, session, path, &Method::POST, &body).await
}

/// Any other method: the control API has no such path.
pub(crate) async fn control_other(
    State(state): State<AppState>,
    Caller(account): Caller,
    method: Method,
    ValidPath((session, path)): ValidPath<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    control(state, account, session, path, &method, &body).await
}

fn fifty() -> u32 {
    50
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordingListQuery {
    pub session_id: Option<String>,
    /// `recording`, `uploading`, `ready` or `failed`.
    pub status: Option<String>,
    /// 1 to 200, default 50.
    #[serde(default = "fifty")]
    pub limit: u32,
    #[serde(default)]
    pub offset: u32,
}

#[utoipa::path(get, path = "/v1/recordings", tag = "computer-use", params(RecordingListQuery),
    responses((status = 200, body = Vec<RecordingResponse>), (status = 422, body = HttpValidationError)))]
pub(crate) async fn list_recordings(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidQuery(q): ValidQuery<RecordingListQuery>,
) -> Result<Json<Vec<RecordingResponse>>, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(RecordingStatus::parse)
        .transpose()
        .map_err(ApiError::in_query)?;
    let query = RecordingQuery {
        session_id: q.session_id,
        status,
        limit: q.limit,
        offset: q.offset,
    };
    let all = state
        .desktops
        .recordings()
        .list(&account, &query)
        .await
        .map_err(ApiError::in_query)?;
    Ok(Json(all.into_iter().map(recording_view).collect()))
}

#[utoipa::path(get, path = "/v1/recordings/{recording_id}", tag = "computer-use",
    params(("recording_id" = String, Path)),
    responses((status = 200, body = RecordingResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get_recording(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<RecordingResponse>, ApiError> {
    let r = state.desktops.recordings().get(&account, &id).await?;
    Ok(Json(recording_view(r)))
}

#[utoipa::path(delete, path = "/v1/recordings/{recording_id}", tag = "computer-use",
    params(("recording_id" = String, Path)),
    responses((status = 200, body = RecordingResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn delete_recording(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<RecordingResponse>, ApiError> {
    let r = state.desktops.recordings().delete(&account, &id).await?;
    Ok(Json(recording_view(r)))
}

/// A redirect to the recording's signed URL (an hour; no key needed).
#[utoipa::path(get, path = "/v1/recordings/{recording_id}/download", tag = "computer-use",
    params(("recording_id" = String, Path)),
    responses((status = 302, description = "Location: the signed URL"),
        (status = 404, body = ErrorDetail), (status = 409, body = ErrorDetail)))]
pub(crate) async fn download_recording(
    State(state): State<AppState>,
    Caller(account): Caller,
    headers: HeaderMap,
    ValidPath(id): ValidPath<String>,
) -> Result<Response, ApiError> {
    let query = state
        .desktops
        .recordings()
        .download_query(&account, &id)
        .await?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let location = format!("http://{host}/v1/recordings/{id}/content?{query}");
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SignedQuery {
    pub account: String,
    pub expires: u64,
    pub signature: String,
}

/// A recording's file, by its signed URL.
#[utoipa::path(get, path = "/v1/recordings/{recording_id}/content", tag = "computer-use",
    params(("recording_id" = String, Path), SignedQuery),
    responses((status = 200, description = "The video (video/mp4)", content_type = "video/mp4"),
        (status = 404, body = ErrorDetail), (status = 422, body = HttpValidationError)),
    security(()))]
pub(crate) async fn recording_content(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<String>,
    ValidQuery(q): ValidQuery<SignedQuery>,
) -> Result<Response, ApiError> {
    let (recording, path) = state
        .desktops
        .recordings()
        .signed(&q.account, &id, q.expires, &q.signature)
        .await?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiError::not_found("Recording"))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "video/mp4".to_owned()),
            (header::CONTENT_LENGTH, recording.size_bytes.to_string()),
        ],
        body,
    )
        .into_response())
}
