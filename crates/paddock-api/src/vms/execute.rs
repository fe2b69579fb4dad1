//! Running commands: InstaVM's `/execute` (collected output) and
//! `/execute_async` (a task polled later), and paddock's streaming
//! `POST /v1/vms/{vm_id}/exec` (newline-delimited JSON as output comes).

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use bytes::Bytes;
use paddock_core::exec::{ExecEvent, ExecRequest};
use paddock_core::ids::{AccountId, ExecutionId};
use paddock_core::model::{Execution, ExecutionStatus, Vm};
use serde_json::{json, Value};

use super::dto::{
    ExecuteAsyncResponse, ExecuteRequest, ExecuteResponse, ExecutionResponse, StreamExecRequest,
};
use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidPath};
use super::{vm_id, vm_spec, VmSettings};
use crate::AppState;

const DEFAULT_TIMEOUT: i64 = 60;
const MAX_TIMEOUT: i64 = 600;
/// InstaVM's SDK uses the command's `timeout` as its HTTP timeout too, so
/// the command is stopped this much earlier for the answer to arrive in
/// time.
const RESPONSE_MARGIN: Duration = Duration::from_millis(250);

/// The argv for `/execute`'s `command` in `language`.
fn argv_for(language: Option<&str>, code: String) -> Result<Vec<String>, ApiError> {
    let (program, flag) = match language.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("sh") | Some("shell") => ("/bin/sh", "-c"),
        Some("bash") => ("/bin/bash", "-c"),
        Some("python") | Some("python3") => ("python3", "-c"),
        Some(other) => {
            return Err(ApiError::body_field(
                "language",
                format!("unsupported language {other:?}: use python, bash or sh"),
            ))
        }
    };
    Ok(vec![program.to_owned(), flag.to_owned(), code])
}

/// The request's VM: its session's, or a new session's when none is named.
async fn target_vm(
    state: &AppState,
    account: &AccountId,
    session: Option<String>,
) -> Result<Vm, ApiError> {
    match session {
        Some(raw) => {
            let sid = raw.parse().map_err(|e: paddock_core::ids::InvalidId| {
                ApiError::body_field("session_id", e.to_string())
            })?;
            Ok(state.vms().session_vm(account, &sid).await?)
        }
        None => {
            let spec = vm_spec(&state.service, VmSettings::default())?;
            Ok(state.vms().create_vm(account, spec, true).await?)
        }
    }
}

async fn authenticate_exec(
    state: &AppState,
    caller: Option<Caller>,
    body_key: Option<&str>,
) -> Result<AccountId, ApiError> {
    match (caller, body_key) {
        (Some(Caller(a)), _) => Ok(a),
        (None, Some(k)) => Ok(state.service.accounts().authenticate(k).await?),
        (None, None) => Err(paddock_core::CoreError::Unauthenticated.into()),
    }
}

fn parse_execute(body: &mut ExecuteRequest) -> Result<ExecRequest, ApiError> {
    let code = body
        .command
        .take()
        .or(body.code.take())
        .ok_or_else(|| ApiError::field(&["body", "command"], "Field required", "missing"))?;
    let timeout = body.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if !(1..=MAX_TIMEOUT).contains(&timeout) {
        return Err(ApiError::body_field(
            "timeout",
            format!("must be between 1 and {MAX_TIMEOUT}"),
        ));
    }
    Ok(ExecRequest {
        argv: argv_for(body.language.as_deref(), code)?,
        timeout: Some(Duration::from_secs(timeout as u64).saturating_sub(RESPONSE_MARGIN)),
        ..Default::default()
    })
}

/// What `/execute` and `/execute_async` share: the caller's account, the
/// session's VM, and the command with the env of the vaults it names.
async fn prepare_execute(
    state: &AppState,
    caller: Option<Caller>,
    body: &mut ExecuteRequest,
) -> Result<(AccountId, Vm, ExecRequest), ApiError> {
    let account = authenticate_exec(state, caller, body.api_key.as_deref()).await?;
    let mut request = parse_execute(body)?;
    let vaults = super::vault_ids(body.vault_ids.take())?;
    let vm = target_vm(state, &account, body.session_id.take()).await?;
    request.env.extend(
        state
            .service
            .vaults()
            .command_secrets(&account, &vaults)
            .await?,
    );
    Ok((account, vm, request))
}

/// Run a command in the session's VM and return its output.
#[utoipa::path(post, path = "/execute", tag = "exec", request_body = ExecuteRequest,
    responses((status = 200, body = ExecuteResponse), (status = 404, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn execute(
    State(state): State<AppState>,
    caller: Option<Caller>,
    ValidJson(mut body): ValidJson<ExecuteRequest>,
) -> Result<Json<ExecuteResponse>, ApiError> {
    let (account, vm, request) = prepare_execute(&state, caller, &mut body).await?;
    let out = state.vms().exec_collect(&account, &vm.id, request).await?;
    Ok(Json(ExecuteResponse {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        exit_code: out.status.exit_code(),
        execution_time: out.status.wall_time.as_secs_f64(),
        cpu_time: out.status.cpu_time.as_secs_f64(),
        timed_out: out.status.timed_out,
        oom_killed: out.status.oom_killed,
        truncated: out.truncated,
        session_id: vm.session_id.to_string(),
        vm_id: vm.id.to_string(),
    }))
}

/// Start a command in the background; poll `GET /v1/executions/{task_id}`.
#[utoipa::path(post, path = "/execute_async", tag = "exec", request_body = ExecuteRequest,
    responses((status = 200, body = ExecuteAsyncResponse), (status = 422, body = HttpValidationError)))]
pub(crate) async fn execute_async(
    State(state): State<AppState>,
    caller: Option<Caller>,
    ValidJson(mut body): ValidJson<ExecuteRequest>,
) -> Result<Json<ExecuteAsyncResponse>, ApiError> {
    let (account, vm, request) = prepare_execute(&state, caller, &mut body).await?;
    let execution = state.vms().exec_async(&account, &vm, request).await?;
    Ok(Json(ExecuteAsyncResponse {
        task_id: execution.id.to_string(),
        status: execution.status.as_str().to_owned(),
        session_id: vm.session_id.to_string(),
        vm_id: vm.id.to_string(),
    }))
}

fn execution_response(e: Execution) -> ExecutionResponse {
    ExecutionResponse {
        task_id: e.id.to_string(),
        status: e.status.as_str().to_owned(),
        is_complete: e.status != ExecutionStatus::Running,
        serialized_stdout: e.stdout,
        serialized_stderr: e.stderr,
        exit_code: e.exit_code,
        execution_time: e.execution_time,
        cpu_time: e.cpu_time,
        error: e.error,
        created_at: e.created_at.to_rfc3339(),
        completed_at: e.completed_at.map(|t| t.to_rfc3339()),
    }
}

/// An asynchronous execution's state and, once complete, its output.
#[utoipa::path(get, path = "/v1/executions/{task_id}", tag = "exec",
    params(("task_id" = String, Path)),
    responses((status = 200, body = ExecutionResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get_execution(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<ExecutionResponse>, ApiError> {
    let id: ExecutionId = raw.parse().map_err(|_| ApiError::not_found("Execution"))?;
    let execution = state.vms().get_execution(&account, &id).await?;
    Ok(Json(execution_response(execution)))
}

fn chunk_line(stream: &str, data: &Bytes) -> Value {
    match std::str::from_utf8(data) {
        Ok(text) => json!({"type": stream, "data": text}),
        Err(_) => {
            json!({"type": stream, "data_b64": base64::engine::general_purpose::STANDARD.encode(data)})
        }
    }
}

/// Run a command and stream its output as newline-delimited JSON:
/// `{"type":"stdout"|"stderr","data":…}` (or `data_b64` for bytes that are
/// not UTF-8) as output comes, then `{"type":"exit","exit_code":…}`.
/// Closing the response kills the command.
#[utoipa::path(post, path = "/v1/vms/{vm_id}/exec", tag = "exec",
    params(("vm_id" = String, Path)), request_body = StreamExecRequest,
    responses((status = 200, description = "application/x-ndjson stream of output and exit events"), (status = 404, body = ErrorDetail), (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn stream_exec(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<StreamExecRequest>,
) -> Result<Response, ApiError> {
    let id = vm_id(&raw)?;
    let argv = match body.command {
        Value::String(s) if !s.trim().is_empty() => vec!["/bin/sh".into(), "-c".into(), s],
        Value::Array(items) if !items.is_empty() => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(ApiError::body_field(
                    "command",
                    "argv items must be strings",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(ApiError::body_field(
                "command",
                "must be a non-empty string or argv array",
            ))
        }
    };
    let timeout = match body.timeout_seconds {
        None => None,
        Some(t) if (1..=86_400).contains(&t) => Some(Duration::from_secs(t as u64)),
        Some(_) => {
            return Err(ApiError::body_field(
                "timeout_seconds",
                "must be between 1 and 86400",
            ))
        }
    };
    if let Some(cwd) = &body.cwd {
        paddock_core::exec::SandboxPath::parse(cwd)
            .map_err(|e| ApiError::body_field("cwd", e.0))?;
    }
    let env = paddock_core::model::Env::new(body.env.unwrap_or_default())
        .map_err(|e| ApiError::field(&["body", "env", &e.name], e.reason, "value_error"))?;
    let request = ExecRequest {
        started: None,
        user: None,
        argv,
        env: env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        cwd: body.cwd,
        stdin: body.stdin.map(Bytes::from),
        stdin_stream: None,
        timeout,
    };
    let events = state.vms().exec(&account, &id, request).await?;
    let lines = futures::stream::unfold(events, |mut events| async move {
        let line = match events.recv().await? {
            Ok(ExecEvent::Stdout(b)) => chunk_line("stdout", &b),
            Ok(ExecEvent::Stderr(b)) => chunk_line("stderr", &b),
            Ok(ExecEvent::Exit(s)) => json!({
                "type": "exit",
                "exit_code": s.exit_code(),
                "signal": s.signal,
                "timed_out": s.timed_out,
                "oom_killed": s.oom_killed,
                "execution_time": s.wall_time.as_secs_f64(),
                "cpu_time": s.cpu_time.as_secs_f64(),
            }),
            Err(e) => json!({"type": "error", "detail": e.to_string()}),
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), events))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}
