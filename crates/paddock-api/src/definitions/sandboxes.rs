//! Sandboxes launched from definitions: launch, list, retrieve, stop,
//! start, delete, exec and files (`/api/v1/environments/{id}/sandboxes`,
//! `/api/v1/sandboxes/{id}`).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use paddock_core::exec::{ExecRequest, FileContent, SandboxPath};
use paddock_core::ids::{AccountId, VmId};
use paddock_core::model::{ExecutionStatus, VmStatus};
use paddock_definitions::{LaunchRequest, SandboxView};
use serde::Deserialize;

use super::{json_value, parse_body, Caller, DefError};
use crate::AppState;

/// The longest a command run through `exec` may take.
const MAX_EXEC_TIMEOUT: u64 = 3600;

/// A sandbox's state in this surface's words.
fn state_name(s: VmStatus) -> &'static str {
    match s {
        VmStatus::Creating => "starting",
        VmStatus::Running => "running",
        VmStatus::Stopping => "stopping",
        VmStatus::Stopped => "stopped",
        VmStatus::Terminated => "deleted",
        VmStatus::Failed => "failed",
    }
}

/// CPUs as the definition wrote them: an integer when whole.
fn cpu_figure(millis: u32) -> serde_json::Value {
    if millis.is_multiple_of(1000) {
        serde_json::json!(millis / 1000)
    } else {
        serde_json::json!(f64::from(millis) / 1000.0)
    }
}

fn render(view: &SandboxView) -> serde_json::Value {
    let vm = &view.vm;
    let launch = vm.options.launch.clone().unwrap_or_default();
    let command = (!launch.command.is_empty()).then(|| {
        let main = view.main.as_ref();
        serde_json::json!({
            "argv": launch.command,
            "execution_id": main.map(|m| m.id.to_string()),
            "state": main.map(|m| match m.status {
                ExecutionStatus::Running => "running",
                ExecutionStatus::Completed => "exited",
                _ => "failed",
            }),
            "exit_code": main.and_then(|m| m.exit_code),
            "stdout": main.map(|m| m.stdout.clone()),
            "stderr": main.map(|m| m.stderr.clone()),
        })
    });
    serde_json::json!({
        "id": vm.id.to_string(),
        "environment_id": launch.definition_id,
        "environment_revision": launch.revision,
        "provider": vm.provider,
        "state": state_name(vm.status),
        "state_reason": vm.status_reason,
        "image": (!vm.image_variant.is_empty()).then(|| vm.image_variant.clone()),
        // Where commands start and relative file paths resolve.
        "work_dir": view.work_dir,
        "resources": {
            // Whole CPUs as an integer, a quota as a fraction (0.5).
            "cpu": cpu_figure(vm.resources.cpu_millis()),
            "memory_mb": vm.resources.memory_mb(),
        },
        "labels": launch.labels,
        "lifecycle": {
            "preserve": launch.preserve,
            "stop_on_terminal": launch.stop_on_terminal,
            "auto_stop_seconds": launch.idle_stop_seconds,
        },
        "command": command,
        "created_at": vm.created_at.to_rfc3339(),
        "started_at": vm.started_at.map(|t| t.to_rfc3339()),
        "stopped_at": launch.stopped_at.map(|t| t.to_rfc3339()),
    })
}

fn sandbox_id(raw: &str) -> Result<VmId, DefError> {
    raw.parse()
        .map_err(|_| DefError::new(StatusCode::NOT_FOUND, "not_found", "sandbox not found"))
}

/// A command as an argv list, or a string run by `/bin/sh -c`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Command {
    Argv(Vec<String>),
    Shell(String),
}

impl Command {
    fn argv(self) -> Vec<String> {
        match self {
            Self::Argv(a) => a,
            Self::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LaunchBody {
    #[serde(default)]
    command: Option<Command>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

pub(super) async fn launch(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, DefError> {
    let b: LaunchBody = parse_body(json_value(&body)?)?;
    let request = LaunchRequest {
        command: b.command.map(Command::argv).unwrap_or_default(),
        labels: b.labels,
    };
    let view = state
        .definitions
        .launch_sandbox(&account, &id, request)
        .await?;
    Ok((StatusCode::CREATED, Json(render(&view))).into_response())
}

pub(super) async fn list(
    State(state): State<AppState>,
    Caller(account): Caller,
    query: super::list::PageQueryResult,
) -> Result<Json<serde_json::Value>, DefError> {
    let all = state.service.launched_sandboxes(&account, None).await?;
    Ok(Json(super::list::page(query, all, render)?))
}

pub(super) async fn list_of_environment(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(id): Path<String>,
    query: super::list::PageQueryResult,
) -> Result<Json<serde_json::Value>, DefError> {
    state.definitions.get_definition(&account, &id).await?;
    let all = state
        .service
        .launched_sandboxes(&account, Some(&id))
        .await?;
    Ok(Json(super::list::page(query, all, render)?))
}

/// The sandbox, when it belongs to definition `env` (if given).
async fn find(
    state: &AppState,
    account: &AccountId,
    raw: &str,
    env: Option<&str>,
) -> Result<SandboxView, DefError> {
    let id = sandbox_id(raw)?;
    let view = state.service.launched_sandbox(account, &id).await?;
    let of_env = view
        .vm
        .options
        .launch
        .as_ref()
        .map(|l| l.definition_id.as_str());
    if env.is_some() && of_env != env {
        return Err(DefError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "sandbox not found",
        ));
    }
    Ok(view)
}

pub(super) async fn retrieve(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, DefError> {
    Ok(Json(render(&find(&state, &account, &raw, None).await?)))
}

pub(super) async fn retrieve_of_environment(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path((env, raw)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, DefError> {
    Ok(Json(render(
        &find(&state, &account, &raw, Some(&env)).await?,
    )))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(raw): Path<String>,
) -> Result<StatusCode, DefError> {
    let view = find(&state, &account, &raw, None).await?;
    state
        .service
        .delete_launched_sandbox(&account, &view.vm.id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn delete_of_environment(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path((env, raw)): Path<(String, String)>,
) -> Result<StatusCode, DefError> {
    let view = find(&state, &account, &raw, Some(&env)).await?;
    state
        .service
        .delete_launched_sandbox(&account, &view.vm.id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn stop(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, DefError> {
    let view = find(&state, &account, &raw, None).await?;
    state.service.stop_vm(&account, &view.vm.id).await?;
    Ok(Json(render(
        &state
            .service
            .launched_sandbox(&account, &view.vm.id)
            .await?,
    )))
}

pub(super) async fn start(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, DefError> {
    let view = find(&state, &account, &raw, None).await?;
    state.service.start_vm(&account, &view.vm.id, true).await?;
    Ok(Json(render(
        &state
            .service
            .launched_sandbox(&account, &view.vm.id)
            .await?,
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecBody {
    command: Command,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
}

/// Runs a command to its end: `{exit_code, stdout, stderr, timed_out,
/// duration_ms}`.
pub(super) async fn exec(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, DefError> {
    let b: ExecBody = parse_body(json_value(&body)?)?;
    let view = find(&state, &account, &raw, None).await?;
    if let Some(t) = b.timeout_seconds {
        if t == 0 || t > MAX_EXEC_TIMEOUT {
            return Err(DefError::unprocessable(format!(
                "timeout_seconds: must be between 1 and {MAX_EXEC_TIMEOUT}"
            )));
        }
    }
    if let Some(cwd) = &b.cwd {
        SandboxPath::parse(cwd).map_err(|e| DefError::unprocessable(format!("cwd: {e}")))?;
    }
    let request = ExecRequest {
        argv: b.command.argv(),
        env: b.env.into_iter().collect(),
        cwd: b.cwd,
        stdin: b.stdin.map(Bytes::from),
        stdin_stream: None,
        timeout: b.timeout_seconds.map(Duration::from_secs),
    };
    let out = state
        .service
        .exec_collect(&account, &view.vm.id, request)
        .await?;
    Ok(Json(serde_json::json!({
        "exit_code": out.status.exit_code(),
        "stdout": String::from_utf8_lossy(&out.stdout),
        "stderr": String::from_utf8_lossy(&out.stderr),
        "timed_out": out.status.timed_out,
        "truncated": out.truncated,
        "duration_ms": out.status.wall_time.as_millis() as u64,
    })))
}

#[derive(Debug, Deserialize)]
pub(super) struct FileQuery {
    path: String,
}

/// The query's path in the sandbox: absolute, or relative to its
/// working directory (`work_dir` in its record).
fn file_path(q: &FileQuery, view: &SandboxView) -> Result<SandboxPath, DefError> {
    let full = if q.path.starts_with('/') {
        q.path.clone()
    } else {
        format!("{}/{}", view.work_dir.trim_end_matches('/'), q.path)
    };
    SandboxPath::parse(&full).map_err(|e| DefError::unprocessable(format!("path: {e}")))
}

type FileQueryResult = Result<Query<FileQuery>, axum::extract::rejection::QueryRejection>;

fn file_query(q: FileQueryResult) -> Result<FileQuery, DefError> {
    q.map(|Query(q)| q)
        .map_err(|_| DefError::unprocessable("path: the path query parameter is required"))
}

pub(super) async fn read_file(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(raw): Path<String>,
    q: FileQueryResult,
) -> Result<Response, DefError> {
    let q = file_query(q)?;
    let view = find(&state, &account, &raw, None).await?;
    let path = file_path(&q, &view)?;
    match state
        .service
        .read_file(&account, &view.vm.id, &path)
        .await?
    {
        FileContent::File { size, data, .. } => Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_LENGTH, size.to_string()),
            ],
            Body::from_stream(data),
        )
            .into_response()),
        FileContent::Directory(entries) => Ok(Json(serde_json::json!({
            "path": path.as_str(),
            "entries": entries.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
        }))
        .into_response()),
    }
}

pub(super) async fn write_file(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(raw): Path<String>,
    q: FileQueryResult,
    body: Body,
) -> Result<Json<serde_json::Value>, DefError> {
    let q = file_query(q)?;
    let view = find(&state, &account, &raw, None).await?;
    let path = file_path(&q, &view)?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let size = state
        .service
        .write_file(&account, &view.vm.id, &path, None, Box::pin(stream))
        .await?;
    Ok(Json(
        serde_json::json!({"path": path.as_str(), "bytes": size}),
    ))
}
