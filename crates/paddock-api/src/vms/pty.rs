//! PTY sessions, addressed by VM or by session as InstaVM's SDK does:
//! create, list, get, resize, delete over REST, and the terminal itself
//! over a WebSocket (binary frames carry bytes both ways; text frames
//! carry JSON control: `{"type":"resize",cols,rows}` from the client,
//! `{"type":"exit","exit_code":N}` from the server).

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use paddock_core::exec::{PtyCommand, PtyInput, PtyOutput, PtySpec};
use paddock_core::ids::{AccountId, PtyId, VmId};
use serde_json::json;

use super::dto::{CreatePtyRequest, PtyListResponse, PtyResponse, ResizePtyRequest};
use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidPath};
use super::{session_id, vm_id};
use crate::AppState;

async fn session_vm(state: &AppState, account: &AccountId, raw: &str) -> Result<VmId, ApiError> {
    Ok(state
        .vms()
        .session_latest_vm(account, &session_id(raw)?)
        .await?
        .id)
}

async fn create(
    state: &AppState,
    account: &AccountId,
    vm: &VmId,
    body: CreatePtyRequest,
) -> Result<Json<PtyResponse>, ApiError> {
    let id = body
        .id
        .map(|raw| {
            raw.parse::<PtyId>()
                .map_err(|e| ApiError::body_field("id", e.to_string()))
        })
        .transpose()?;
    let command = match (body.command, body.shell) {
        (Some(line), _) => PtyCommand::CommandLine(line),
        (None, Some(shell)) => PtyCommand::Shell(shell),
        (None, None) => PtyCommand::DefaultShell,
    };
    let spec = PtySpec {
        id,
        cols: body.cols.unwrap_or(80),
        rows: body.rows.unwrap_or(24),
        command,
    };
    let info = state.vms().pty_create(account, vm, spec).await?;
    Ok(Json(PtyResponse::new(vm.as_str(), info)))
}

async fn list(
    state: &AppState,
    account: &AccountId,
    vm: &VmId,
) -> Result<Json<PtyListResponse>, ApiError> {
    let sessions = state.vms().pty_list(account, vm).await?;
    Ok(Json(PtyListResponse {
        sessions: sessions
            .into_iter()
            .map(|p| PtyResponse::new(vm.as_str(), p))
            .collect(),
    }))
}

/// Create a PTY session in a VM.
#[utoipa::path(post, path = "/v1/vms/{vm_id}/pty/sessions", tag = "pty",
    params(("vm_id" = String, Path)), request_body = CreatePtyRequest,
    responses((status = 200, body = PtyResponse), (status = 404, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn create_for_vm(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<CreatePtyRequest>,
) -> Result<Json<PtyResponse>, ApiError> {
    create(&state, &account, &vm_id(&raw)?, body).await
}

/// Create a PTY session in a session's VM.
#[utoipa::path(post, path = "/v1/sessions/{session_id}/pty/sessions", tag = "pty",
    params(("session_id" = String, Path)), request_body = CreatePtyRequest,
    responses((status = 200, body = PtyResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn create_for_session(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<CreatePtyRequest>,
) -> Result<Json<PtyResponse>, ApiError> {
    let vm = session_vm(&state, &account, &raw).await?;
    create(&state, &account, &vm, body).await
}

/// List a VM's PTY sessions.
#[utoipa::path(get, path = "/v1/vms/{vm_id}/pty/sessions", tag = "pty",
    params(("vm_id" = String, Path)), responses((status = 200, body = PtyListResponse)))]
pub(crate) async fn list_for_vm(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<PtyListResponse>, ApiError> {
    list(&state, &account, &vm_id(&raw)?).await
}

/// List a session's PTY sessions.
#[utoipa::path(get, path = "/v1/sessions/{session_id}/pty/sessions", tag = "pty",
    params(("session_id" = String, Path)), responses((status = 200, body = PtyListResponse)))]
pub(crate) async fn list_for_session(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<PtyListResponse>, ApiError> {
    let vm = session_vm(&state, &account, &raw).await?;
    list(&state, &account, &vm).await
}

/// One PTY session.
#[utoipa::path(get, path = "/v1/vms/{vm_id}/pty/sessions/{pty_id}", tag = "pty",
    params(("vm_id" = String, Path), ("pty_id" = String, Path)),
    responses((status = 200, body = PtyResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get_for_vm(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((raw, pty)): ValidPath<(String, String)>,
) -> Result<Json<PtyResponse>, ApiError> {
    let vm = vm_id(&raw)?;
    let info = state.vms().pty_get(&account, &vm, &pty).await?;
    Ok(Json(PtyResponse::new(vm.as_str(), info)))
}

/// One PTY session of a session's VM.
#[utoipa::path(get, path = "/v1/sessions/{session_id}/pty/sessions/{pty_id}", tag = "pty",
    params(("session_id" = String, Path), ("pty_id" = String, Path)),
    responses((status = 200, body = PtyResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get_for_session(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((raw, pty)): ValidPath<(String, String)>,
) -> Result<Json<PtyResponse>, ApiError> {
    let vm = session_vm(&state, &account, &raw).await?;
    let info = state.vms().pty_get(&account, &vm, &pty).await?;
    Ok(Json(PtyResponse::new(vm.as_str(), info)))
}

async fn resize(
    state: &AppState,
    account: &AccountId,
    vm: &VmId,
    pty: &str,
    body: ResizePtyRequest,
) -> Result<Json<PtyResponse>, ApiError> {
    let info = state
        .vms()
        .pty_resize(account, vm, pty, body.cols, body.rows)
        .await?;
    Ok(Json(PtyResponse::new(vm.as_str(), info)))
}

/// Resize a PTY session's terminal.
#[utoipa::path(post, path = "/v1/vms/{vm_id}/pty/sessions/{pty_id}/resize", tag = "pty",
    params(("vm_id" = String, Path), ("pty_id" = String, Path)), request_body = ResizePtyRequest,
    responses((status = 200, body = PtyResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn resize_for_vm(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((raw, pty)): ValidPath<(String, String)>,
    ValidJson(body): ValidJson<ResizePtyRequest>,
) -> Result<Json<PtyResponse>, ApiError> {
    resize(&state, &account, &vm_id(&raw)?, &pty, body).await
}

/// Resize a PTY session's terminal in a session's VM.
#[utoipa::path(post, path = "/v1/sessions/{session_id}/pty/sessions/{pty_id}/resize", tag = "pty",
    params(("session_id" = String, Path), ("pty_id" = String, Path)), request_body = ResizePtyRequest,
    responses((status = 200, body = PtyResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn resize_for_session(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((raw, pty)): ValidPath<(String, String)>,
    ValidJson(body): ValidJson<ResizePtyRequest>,
) -> Result<Json<PtyResponse>, ApiError> {
    let vm = session_vm(&state, &account, &raw).await?;
    resize(&state, &account, &vm, &pty, body).await
}

/// End a PTY session (its processes are killed).
#[utoipa::path(delete, path = "/v1/vms/{vm_id}/pty/sessions/{pty_id}", tag = "pty",
    params(("vm_id" = String, Path), ("pty_id" = String, Path)),
    responses((status = 200, description = "{}"), (status = 404, body = ErrorDetail)))]
pub(crate) async fn kill_for_vm(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((raw, pty)): ValidPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.vms().pty_kill(&account, &vm_id(&raw)?, &pty).await?;
    Ok(Json(json!({"status": "killed", "session_id": pty})))
}

/// End a PTY session of a session's VM.
#[utoipa::path(delete, path = "/v1/sessions/{session_id}/pty/sessions/{pty_id}", tag = "pty",
    params(("session_id" = String, Path), ("pty_id" = String, Path)),
    responses((status = 200, description = "{}"), (status = 404, body = ErrorDetail)))]
pub(crate) async fn kill_for_session(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((raw, pty)): ValidPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let vm = session_vm(&state, &account, &raw).await?;
    state.vms().pty_kill(&account, &vm, &pty).await?;
    Ok(Json(json!({"status": "killed", "session_id": pty})))
}

async fn connect(
    state: AppState,
    account: AccountId,
    vm: VmId,
    pty: String,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let conn = state.vms().pty_attach(&account, &vm, &pty).await?;
    // A browser that carried its key in a subprotocol must be answered
    // with one it offered, or it drops the connection.
    Ok(ws
        .protocols([crate::auth::WEBSOCKET_PROTOCOL])
        .on_upgrade(move |socket| relay(socket, conn)))
}

async fn relay(mut socket: WebSocket, mut conn: paddock_core::exec::PtyConnection) {
    loop {
        tokio::select! {
            out = conn.output.recv() => match out {
                Some(PtyOutput::Data(b)) => {
                    if socket.send(Message::Binary(b)).await.is_err() {
                        return;
                    }
                }
                Some(PtyOutput::Exit(code)) => {
                    let msg = json!({"type": "exit", "exit_code": code}).to_string();
                    let _ = socket.send(Message::Text(msg.into())).await;
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                None => {
                    // The sandbox side ended without an exit status.
                    let close = CloseFrame { code: close_code::ERROR, reason: "terminal connection lost".into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    return;
                }
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if conn.input.send(PtyInput::Data(b)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    match serde_json::from_str::<serde_json::Value>(t.as_str()) {
                        Ok(v) if v.get("type").and_then(|t| t.as_str()) == Some("resize") => {
                            let dim = |k: &str| v.get(k).and_then(|x| x.as_u64()).and_then(|x| u16::try_from(x).ok()).filter(|x| *x > 0);
                            if let (Some(cols), Some(rows)) = (dim("cols"), dim("rows")) {
                                let _ = conn.input.send(PtyInput::Resize { cols, rows }).await;
                            }
                        }
                        // Text that is not a control message is typed input.
                        _ => {
                            let data = bytes::Bytes::copy_from_slice(t.as_str().as_bytes());
                            if conn.input.send(PtyInput::Data(data)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Attach to a PTY session's terminal over a WebSocket. Clients that
/// cannot set headers offer the key as the subprotocol
/// `paddock.key.<key>` next to `paddock.v1` (the one selected), or as
/// `?api_key=`.
#[utoipa::path(get, path = "/v1/vms/{vm_id}/pty/{pty_id}/connect", tag = "pty",
    params(("vm_id" = String, Path), ("pty_id" = String, Path)),
    responses((status = 101, description = "WebSocket"), (status = 404, body = ErrorDetail)))]
pub(crate) async fn connect_for_vm(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((raw, pty)): ValidPath<(String, String)>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let vm = vm_id(&raw)?;
    connect(state, account, vm, pty, ws).await
}

/// Attach to a PTY session of a session's VM over a WebSocket.
#[utoipa::path(get, path = "/v1/sessions/{session_id}/pty/{pty_id}/connect", tag = "pty",
    params(("session_id" = String, Path), ("pty_id" = String, Path)),
    responses((status = 101, description = "WebSocket"), (status = 404, body = ErrorDetail)))]
pub(crate) async fn connect_for_session(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((raw, pty)): ValidPath<(String, String)>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let vm = session_vm(&state, &account, &raw).await?;
    connect(state, account, vm, pty, ws).await
}
