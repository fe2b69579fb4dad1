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
use paddock_definitions::{LaunchRequest, SandboxView};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorResponse;
use super::views::{DirectoryEntries, ExecResult, SandboxList, SandboxResource, WrittenFile};
use super::{json_value, parse_body, Caller, DefError};
use crate::AppState;

/// The longest a command run through `exec` may take.
const MAX_EXEC_TIMEOUT: u64 = 3600;

fn render(view: &SandboxView) -> SandboxResource {
    SandboxResource::from(view)
}

fn sandbox_id(raw: &str) -> Result<VmId, DefError> {
    raw.parse()
        .map_err(|_| DefError::new(StatusCode::NOT_FOUND, "not_found", "sandbox not found"))
}

/// A command as an argv list, or a string run by `/bin/sh -c`.
#[derive(Debug, Deserialize, ToSchema)]
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

/// What to launch: the main command (none: the sandbox just runs) and
/// labels beside the definition's.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = LaunchSandboxRequest)]
struct LaunchBody {
    #[serde(default)]
    command: Option<Command>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[utoipa::path(post, path = "/api/v1/environments/{id}/sandboxes", tag = "environment definitions",
    operation_id = "launchEnvironmentSandbox", summary = "Launch a sandbox from the definition",
    params(("id" = String, Path)), request_body = LaunchBody, security(("bearer" = [])),
    responses((status = 201, body = SandboxResource),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
        (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse),
        (status = 422, body = ErrorResponse), (status = 502, body = ErrorResponse),
        (status = 503, body = ErrorResponse)))]
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

fn sandbox_page(
    query: super::list::PageQueryResult,
    all: Vec<SandboxView>,
) -> Result<Json<SandboxList>, DefError> {
    let (page, meta) = super::list::page(query, all)?;
    let data = page.iter().map(render).collect();
    Ok(Json(SandboxList { data, meta }))
}

#[utoipa::path(get, path = "/api/v1/sandboxes", tag = "environment definitions",
    operation_id = "listSandboxes", summary = "List sandboxes launched from definitions",
    params(super::list::PageQuery), security(("bearer" = [])),
    responses((status = 200, body = SandboxList),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse)))]
pub(super) async fn list(
    State(state): State<AppState>,
    Caller(account): Caller,
    query: super::list::PageQueryResult,
) -> Result<Json<SandboxList>, DefError> {
    let all = state.vms().launched_sandboxes(&account, None).await?;
    sandbox_page(query, all)
}

#[utoipa::path(get, path = "/api/v1/environments/{id}/sandboxes", tag = "environment definitions",
    operation_id = "listEnvironmentSandboxes", summary = "List the definition's sandboxes",
    params(("id" = String, Path), super::list::PageQuery), security(("bearer" = [])),
    responses((status = 200, body = SandboxList), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub(super) async fn list_of_environment(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(id): Path<String>,
    query: super::list::PageQueryResult,
) -> Result<Json<SandboxList>, DefError> {
    state.definitions.get_definition(&account, &id).await?;
    let all = state.vms().launched_sandboxes(&account, Some(&id)).await?;
    sandbox_page(query, all)
}

/// The sandbox, when it belongs to definition `env` (if given).
async fn find(
    state: &AppState,
    account: &AccountId,
    raw: &str,
    env: Option<&str>,
) -> Result<SandboxView, DefError> {
    let id = sandbox_id(raw)?;
    let view = state.vms().launched_sandbox(account, &id).await?;
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

#[utoipa::path(get, path = "/api/v1/sandboxes/{sandbox_id}", tag = "environment definitions",
    operation_id = "retrieveSandbox", summary = "Retrieve a sandbox",
    params(("sandbox_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = SandboxResource),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub(super) async fn retrieve(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(raw): Path<String>,
) -> Result<Json<SandboxResource>, DefError> {
    Ok(Json(render(&find(&state, &account, &raw, None).await?)))
}

#[utoipa::path(get, path = "/api/v1/environments/{id}/sandboxes/{sandbox_id}",
    tag = "environment definitions", operation_id = "retrieveEnvironmentSandbox",
    summary = "Retrieve one of the definition's sandboxes",
    params(("id" = String, Path), ("sandbox_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = SandboxResource),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub(super) async fn retrieve_of_environment(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path((env, raw)): Path<(String, String)>,
) -> Result<Json<SandboxResource>, DefError> {
    Ok(Json(render(
        &find(&state, &account, &raw, Some(&env)).await?,
    )))
}

#[utoipa::path(delete, path = "/api/v1/sandboxes/{sandbox_id}", tag = "environment definitions",
    operation_id = "deleteSandbox", summary = "Delete a sandbox and what it kept",
    params(("sandbox_id" = String, Path)), security(("bearer" = [])),
    responses((status = 204, description = "Deleted"),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub(super) async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(raw): Path<String>,
) -> Result<StatusCode, DefError> {
    let view = find(&state, &account, &raw, None).await?;
    state
        .vms()
        .delete_launched_sandbox(&account, &view.vm.id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/environments/{id}/sandboxes/{sandbox_id}",
    tag = "environment definitions", operation_id = "deleteEnvironmentSandbox",
    summary = "Delete one of the definition's sandboxes",
    params(("id" = String, Path), ("sandbox_id" = String, Path)), security(("bearer" = [])),
    responses((status = 204, description = "Deleted"),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub(super) async fn delete_of_environment(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path((env, raw)): Path<(String, String)>,
) -> Result<StatusCode, DefError> {
    let view = find(&state, &account, &raw, Some(&env)).await?;
    state
        .vms()
        .delete_launched_sandbox(&account, &view.vm.id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/sandboxes/{sandbox_id}/stop", tag = "environment definitions",
    operation_id = "stopSandbox", summary = "Stop a sandbox (its files stay when the definition preserves them)",
    params(("sandbox_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = SandboxResource),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse)))]
pub(super) async fn stop(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(raw): Path<String>,
) -> Result<Json<SandboxResource>, DefError> {
    let view = find(&state, &account, &raw, None).await?;
    state.vms().stop_vm(&account, &view.vm.id).await?;
    Ok(Json(render(
        &state.vms().launched_sandbox(&account, &view.vm.id).await?,
    )))
}

#[utoipa::path(post, path = "/api/v1/sandboxes/{sandbox_id}/start", tag = "environment definitions",
    operation_id = "startSandbox", summary = "Start a stopped sandbox",
    params(("sandbox_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = SandboxResource),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse)))]
pub(super) async fn start(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(raw): Path<String>,
) -> Result<Json<SandboxResource>, DefError> {
    let view = find(&state, &account, &raw, None).await?;
    state.vms().start_vm(&account, &view.vm.id, true).await?;
    Ok(Json(render(
        &state.vms().launched_sandbox(&account, &view.vm.id).await?,
    )))
}

/// A command to run to its end.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SandboxExecRequest)]
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

#[utoipa::path(post, path = "/api/v1/sandboxes/{sandbox_id}/exec", tag = "environment definitions",
    operation_id = "execSandbox", summary = "Run a command to its end",
    params(("sandbox_id" = String, Path)), request_body = ExecBody, security(("bearer" = [])),
    responses((status = 200, body = ExecResult),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub(super) async fn exec(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Json<ExecResult>, DefError> {
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
        started: None,
        user: None,
        argv: b.command.argv(),
        env: b.env.into_iter().collect(),
        cwd: b.cwd,
        stdin: b.stdin.map(Bytes::from),
        stdin_stream: None,
        timeout: b.timeout_seconds.map(Duration::from_secs),
    };
    let out = state
        .vms()
        .exec_collect(&account, &view.vm.id, request)
        .await?;
    Ok(Json(ExecResult::new(
        &out.status,
        &out.stdout,
        &out.stderr,
        out.truncated,
    )))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct FileQuery {
    /// A path in the sandbox: absolute, or relative to its `work_dir`.
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

#[utoipa::path(get, path = "/api/v1/sandboxes/{sandbox_id}/files", tag = "environment definitions",
    operation_id = "readSandboxFile", summary = "Read a file",
    params(("sandbox_id" = String, Path), FileQuery), security(("bearer" = [])),
    responses((status = 200, description = "The file's bytes, or a directory's entries",
            content((String = "application/octet-stream"), (DirectoryEntries = "application/json"))),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
        (status = 409, description = "The sandbox is not running", body = ErrorResponse),
        (status = 422, body = ErrorResponse)))]
pub(super) async fn read_file(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(raw): Path<String>,
    q: FileQueryResult,
) -> Result<Response, DefError> {
    let q = file_query(q)?;
    let view = find(&state, &account, &raw, None).await?;
    let path = file_path(&q, &view)?;
    match state.vms().read_file(&account, &view.vm.id, &path).await? {
        FileContent::File { size, data, .. } => Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_LENGTH, size.to_string()),
            ],
            Body::from_stream(data),
        )
            .into_response()),
        FileContent::Directory(entries) => Ok(Json(DirectoryEntries {
            path: path.as_str().to_owned(),
            entries: entries.iter().map(|e| e.name.clone()).collect(),
        })
        .into_response()),
    }
}

#[utoipa::path(put, path = "/api/v1/sandboxes/{sandbox_id}/files", tag = "environment definitions",
    operation_id = "writeSandboxFile", summary = "Write a file (parents created)",
    params(("sandbox_id" = String, Path), FileQuery), security(("bearer" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, description = "Written", body = WrittenFile),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
        (status = 409, description = "The sandbox is not running", body = ErrorResponse),
        (status = 422, body = ErrorResponse)))]
pub(super) async fn write_file(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(raw): Path<String>,
    q: FileQueryResult,
    body: Body,
) -> Result<Json<WrittenFile>, DefError> {
    let q = file_query(q)?;
    let view = find(&state, &account, &raw, None).await?;
    let path = file_path(&q, &view)?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let size = state
        .vms()
        .write_file(&account, &view.vm.id, &path, None, Box::pin(stream))
        .await?;
    Ok(Json(WrittenFile {
        path: path.as_str().to_owned(),
        bytes: size,
    }))
}
