//! Tapes as the `instavm` SDK and CLI use them: `POST
//! /v1/sessions/{id}/tape/start`, `/v1/tapes…`. Listings of tapes and of
//! events are JSON arrays, as the SDK reads them; lanes are counts by
//! kind.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use paddock_tools::tapes::{
    NewEvent, Tape, TapeDiff, TapeEvent, TapeQuery, TapeSettings, TapeStatus,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidPath, ValidQuery};
use crate::AppState;

fn yes() -> bool {
    true
}

fn seven() -> u32 {
    7
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct StartTapeRequest {
    /// Keep what egress connections carried, not only where they went.
    #[serde(default)]
    pub record_egress_content: bool,
    /// Take a checkpoint of the VM's files after each step.
    #[serde(default = "yes")]
    pub record_fs: bool,
    /// Days until the tape is deleted (1 to 365).
    #[serde(default = "seven")]
    pub retention_days: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TapeResponse {
    pub id: String,
    pub tape_id: String,
    pub session_id: String,
    pub vm_id: String,
    /// `recording` or `stopped`.
    pub status: String,
    pub record_fs: bool,
    pub record_egress_content: bool,
    pub retention_days: u32,
    /// The last step recorded (0 is the start).
    pub total_steps: u64,
    pub total_events: u64,
    /// Checkpoints of the VM's files taken.
    pub checkpoints: u64,
    /// What its checkpoints store on the server.
    pub bytes_stored: u64,
    /// Why checkpoints stopped, when they did.
    pub checkpoint_error: Option<String>,
    pub parent_tape_id: Option<String>,
    pub parent_step_id: Option<u64>,
    pub created_at: String,
    pub stopped_at: Option<String>,
    /// When it is deleted.
    pub expires_at: String,
}

pub(crate) fn tape_view(t: Tape) -> TapeResponse {
    TapeResponse {
        tape_id: t.id.clone(),
        id: t.id,
        session_id: t.session_id,
        vm_id: t.vm_id.to_string(),
        status: t.status.as_str().to_owned(),
        record_fs: t.record_fs,
        record_egress_content: t.record_egress_content,
        retention_days: t.retention_days,
        total_steps: t.steps,
        total_events: t.events,
        checkpoints: t.checkpoints,
        bytes_stored: t.bytes_stored,
        checkpoint_error: t.checkpoint_error,
        parent_tape_id: t.parent_tape_id,
        parent_step_id: t.parent_step_id,
        created_at: t.created_at.to_rfc3339(),
        stopped_at: t.stopped_at.map(|s| s.to_rfc3339()),
        expires_at: t.expires_at.to_rfc3339(),
    }
}

#[utoipa::path(post, path = "/v1/sessions/{session_id}/tape/start", tag = "tapes",
    params(("session_id" = String, Path)), request_body = StartTapeRequest,
    responses((status = 200, body = TapeResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError),
        (status = 503, body = ErrorDetail)))]
pub(crate) async fn start(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(session): ValidPath<String>,
    ValidJson(body): ValidJson<StartTapeRequest>,
) -> Result<Json<TapeResponse>, ApiError> {
    let settings = TapeSettings {
        record_fs: body.record_fs,
        record_egress_content: body.record_egress_content,
        retention_days: body.retention_days,
    };
    let tape = state.tapes.start(&account, &session, settings).await?;
    Ok(Json(tape_view(tape)))
}

#[utoipa::path(post, path = "/v1/tapes/{tape_id}/stop", tag = "tapes",
    params(("tape_id" = String, Path)),
    responses((status = 200, body = TapeResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn stop(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<TapeResponse>, ApiError> {
    Ok(Json(tape_view(state.tapes.stop(&account, &id).await?)))
}

#[utoipa::path(get, path = "/v1/tapes/{tape_id}", tag = "tapes",
    params(("tape_id" = String, Path)),
    responses((status = 200, body = TapeResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<TapeResponse>, ApiError> {
    Ok(Json(tape_view(state.tapes.get(&account, &id).await?)))
}

fn fifty() -> u32 {
    50
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TapeListQuery {
    pub session_id: Option<String>,
    pub vm_id: Option<String>,
    /// `recording` or `stopped` (`failed` and `expired` match none).
    pub status: Option<String>,
    /// 1 to 500, default 50.
    #[serde(default = "fifty")]
    pub limit: u32,
    #[serde(default)]
    pub offset: u32,
}

#[utoipa::path(get, path = "/v1/tapes", tag = "tapes", params(TapeListQuery),
    responses((status = 200, body = Vec<TapeResponse>), (status = 422, body = HttpValidationError)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidQuery(q): ValidQuery<TapeListQuery>,
) -> Result<Json<Vec<TapeResponse>>, ApiError> {
    let status = match q.status.as_deref() {
        // The CLI's filter also names statuses no tape here has: a tape
        // whose retention ended is deleted, and a recording that cannot
        // go on stops.
        Some("failed" | "expired") => return Ok(Json(Vec::new())),
        other => other
            .map(TapeStatus::parse)
            .transpose()
            .map_err(ApiError::in_query)?,
    };
    let query = TapeQuery {
        session_id: q.session_id,
        vm_id: q.vm_id,
        status,
        limit: q.limit,
        offset: q.offset,
    };
    let tapes = state
        .tapes
        .list(&account, &query)
        .await
        .map_err(ApiError::in_query)?;
    Ok(Json(tapes.into_iter().map(tape_view).collect()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TapeDeleted {
    pub success: bool,
    pub tape_id: String,
}

#[utoipa::path(delete, path = "/v1/tapes/{tape_id}", tag = "tapes",
    params(("tape_id" = String, Path)),
    responses((status = 200, body = TapeDeleted), (status = 404, body = ErrorDetail)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<TapeDeleted>, ApiError> {
    let tape = state.tapes.delete(&account, &id).await?;
    Ok(Json(TapeDeleted {
        success: true,
        tape_id: tape.id,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TapeEventResponse {
    /// Its place in the tape's log.
    pub id: u64,
    pub step_id: u64,
    pub parent_step_id: Option<u64>,
    /// `exec`, `pty_input`, `pty_output`, `file_upload`, `file_download`,
    /// or a kind a client appended (`tool_call_start`, …).
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub checkpoint_id: Option<String>,
    /// When it was recorded.
    pub ts: String,
}

fn event_view(e: TapeEvent) -> TapeEventResponse {
    TapeEventResponse {
        id: e.seq,
        step_id: e.step_id,
        parent_step_id: e.parent_step_id,
        kind: e.kind,
        payload: e.payload,
        checkpoint_id: e.checkpoint_id,
        ts: e.ts,
    }
}

fn two_hundred() -> u32 {
    200
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TapeEventsQuery {
    /// Events of later steps only.
    pub after_step: Option<u64>,
    pub kind: Option<String>,
    /// 1 to 1000, default 200.
    #[serde(default = "two_hundred")]
    pub limit: u32,
}

#[utoipa::path(get, path = "/v1/tapes/{tape_id}/events", tag = "tapes",
    params(("tape_id" = String, Path), TapeEventsQuery),
    responses((status = 200, body = Vec<TapeEventResponse>), (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
    ValidQuery(q): ValidQuery<TapeEventsQuery>,
) -> Result<Json<Vec<TapeEventResponse>>, ApiError> {
    let events = state
        .tapes
        .events(&account, &id, q.after_step, q.kind.as_deref(), q.limit)
        .await
        .map_err(ApiError::in_query)?;
    Ok(Json(events.into_iter().map(event_view).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AppendEventRequest {
    /// 1 to 64 letters, digits, `_`, `.`, `-` or `:`.
    pub kind: String,
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub payload: Value,
    /// The step it belongs to (a tool call's end names its start's); a
    /// new step when absent.
    pub step_id: Option<u64>,
    pub parent_step_id: Option<u64>,
    pub checkpoint_id: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

#[utoipa::path(post, path = "/v1/tapes/{tape_id}/events", tag = "tapes",
    params(("tape_id" = String, Path)), request_body = AppendEventRequest,
    responses((status = 200, body = TapeEventResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn append(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
    ValidJson(body): ValidJson<AppendEventRequest>,
) -> Result<Json<TapeEventResponse>, ApiError> {
    let event = NewEvent {
        kind: body.kind,
        payload: body.payload,
        step_id: body.step_id,
        parent_step_id: body.parent_step_id,
        checkpoint_id: body.checkpoint_id,
    };
    Ok(Json(event_view(
        state.tapes.append(&account, &id, event).await?,
    )))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TapeLanes {
    pub tape_id: String,
    pub total_steps: u64,
    /// Events per kind.
    pub lanes: BTreeMap<String, u64>,
}

#[utoipa::path(get, path = "/v1/tapes/{tape_id}/lanes", tag = "tapes",
    params(("tape_id" = String, Path)),
    responses((status = 200, body = TapeLanes), (status = 404, body = ErrorDetail)))]
pub(crate) async fn lanes(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<TapeLanes>, ApiError> {
    let (tape, lanes) = state.tapes.lanes(&account, &id).await?;
    Ok(Json(TapeLanes {
        tape_id: tape.id,
        total_steps: tape.steps,
        lanes,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TapeDiffQuery {
    /// The earlier step.
    pub from: u64,
    /// The later step.
    pub to: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PathChangeView {
    pub path: String,
    /// `file`, `dir`, `symlink` or `special`.
    pub kind: String,
    pub size: u64,
    pub size_before: Option<u64>,
    /// A unified diff, for a small text file.
    pub diff: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TapeDiffResponse {
    pub tape_id: String,
    pub from_step: u64,
    pub to_step: u64,
    /// `content`: sizes and text diffs from the checkpoints' contents.
    pub mode: String,
    /// Every path added, changed or removed.
    pub changed_paths: Vec<String>,
    pub added: Vec<PathChangeView>,
    pub changed: Vec<PathChangeView>,
    pub removed: Vec<PathChangeView>,
}

fn changes(list: Vec<paddock_tools::tapes::PathChange>) -> Vec<PathChangeView> {
    list.into_iter()
        .map(|c| PathChangeView {
            path: c.path,
            kind: c.kind,
            size: c.size,
            size_before: c.size_before,
            diff: c.diff,
        })
        .collect()
}

#[utoipa::path(get, path = "/v1/tapes/{tape_id}/diff", tag = "tapes",
    params(("tape_id" = String, Path), TapeDiffQuery),
    responses((status = 200, body = TapeDiffResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn diff(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
    ValidQuery(q): ValidQuery<TapeDiffQuery>,
) -> Result<Json<TapeDiffResponse>, ApiError> {
    let TapeDiff {
        added,
        changed,
        removed,
    } = state
        .tapes
        .diff(&account, &id, q.from, q.to)
        .await
        .map_err(ApiError::in_query)?;
    let mut changed_paths: Vec<String> = added
        .iter()
        .chain(&changed)
        .chain(&removed)
        .map(|c| c.path.clone())
        .collect();
    changed_paths.sort();
    Ok(Json(TapeDiffResponse {
        tape_id: id,
        from_step: q.from,
        to_step: q.to,
        mode: "content".to_owned(),
        changed_paths,
        added: changes(added),
        changed: changes(changed),
        removed: changes(removed),
    }))
}

fn live() -> String {
    "live".to_owned()
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct BranchRequest {
    pub at_step: u64,
    /// `live`: a running VM whose files are the tape's at the step;
    /// `replay`: a VM from the image in which the tape's commands up to
    /// the step run again.
    #[serde(default = "live")]
    pub mode: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedPath {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BranchResponse {
    /// The tape that records the branch.
    pub tape_id: Option<String>,
    pub parent_tape_id: String,
    pub parent_step_id: u64,
    pub vm_id: String,
    pub session_id: String,
    /// The branch's VM status (`active`).
    pub status: String,
    pub mode: String,
    /// Files restored (`live`), or commands run again (`replay`).
    pub files_restored: u64,
    /// Paths that could not be restored (at most 50 named).
    pub skipped: Vec<SkippedPath>,
    pub skipped_count: u64,
}

#[utoipa::path(post, path = "/v1/tapes/{tape_id}/branch", tag = "tapes",
    params(("tape_id" = String, Path)), request_body = BranchRequest,
    responses((status = 200, body = BranchResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError),
        (status = 429, body = ErrorDetail), (status = 503, body = ErrorDetail)))]
pub(crate) async fn branch(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
    ValidJson(body): ValidJson<BranchRequest>,
) -> Result<Json<BranchResponse>, ApiError> {
    let b = state
        .tapes
        .branch(&account, &id, body.at_step, &body.mode)
        .await?;
    Ok(Json(BranchResponse {
        tape_id: b.tape.map(|t| t.id),
        parent_tape_id: id,
        parent_step_id: body.at_step,
        vm_id: b.vm.id.to_string(),
        session_id: b.vm.session_id.to_string(),
        status: super::dto::wire_status(b.vm.status).to_owned(),
        mode: body.mode,
        files_restored: b.files_restored,
        skipped: b
            .skipped
            .into_iter()
            .map(|(path, reason)| SkippedPath { path, reason })
            .collect(),
        skipped_count: b.skipped_count,
    }))
}

#[utoipa::path(get, path = "/v1/tapes/{tape_id}/export", tag = "tapes",
    params(("tape_id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail)))]
pub(crate) async fn export(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.tapes.export(&account, &id).await?))
}
