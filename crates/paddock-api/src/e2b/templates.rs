//! E2B's template routes: register a build (`POST /v3/templates`), start
//! it with the SDK's steps (`POST /v2/templates/{id}/builds/{build}`),
//! poll its status and log (`GET …/status?logsOffset=`), list, look up by
//! id or alias, delete.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use paddock_e2b::{BuildSpec, BuildStatus, BuildStep, Template};
use serde::Deserialize;
use serde_json::{json, Value};

use super::control::{caller, json_body};
use super::RestError;
use crate::AppState;

/// The most log lines one status call returns (as E2B's API does).
const LOG_PAGE: usize = 100;

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct BuildRequestBody {
    name: Option<String>,
    alias: Option<String>,
    tags: Option<Vec<String>>,
    cpu_count: Option<u32>,
    #[serde(rename = "memoryMB")]
    memory_mb: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct StepBody {
    #[serde(rename = "type")]
    kind: String,
    args: Option<Vec<String>>,
    files_hash: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct BuildStartBody {
    from_image: Option<String>,
    from_template: Option<String>,
    steps: Option<Vec<StepBody>>,
    start_cmd: Option<String>,
    ready_cmd: Option<String>,
}

fn template_json(t: &Template) -> Value {
    json!({
        "templateID": t.id,
        "buildID": t.build_id,
        "cpuCount": t.cpu_count,
        "memoryMB": t.memory_mb,
        "diskSizeMB": 0,
        "public": false,
        "aliases": [t.name],
        "names": [t.name],
        "createdAt": t.create_time.to_rfc3339(),
        "updatedAt": t.update_time.to_rfc3339(),
        "createdBy": null,
        "lastSpawnedAt": null,
        "spawnCount": 0,
        "buildCount": t.build_count,
        "envdVersion": paddock_e2b::ENVD_VERSION,
        "buildStatus": t.status.as_str(),
    })
}

async fn handle<F, Fut>(state: AppState, request: Request, f: F) -> Response
where
    F: FnOnce(AppState, paddock_core::ids::AccountId, Request) -> Fut,
    Fut: std::future::Future<Output = Result<Response, RestError>>,
{
    let run = async {
        let (account, request) = caller(&state, request).await?;
        f(state.clone(), account, request).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn request_build(State(state): State<AppState>, request: Request) -> Response {
    handle(state, request, |state, account, request| async move {
        let b: BuildRequestBody = json_body(request).await?;
        let name = b
            .name
            .or(b.alias)
            .ok_or_else(|| RestError::new(StatusCode::BAD_REQUEST, "name: required"))?;
        let t = state
            .e2b
            .request_template_build(
                &account,
                &name,
                b.tags.unwrap_or_default(),
                b.cpu_count,
                b.memory_mb,
            )
            .await?;
        let body = json!({
            "templateID": t.id,
            "buildID": t.build_id,
            "public": false,
            "names": [t.name],
            "aliases": [t.name],
            "tags": t.tags,
        });
        Ok((StatusCode::ACCEPTED, Json(body)).into_response())
    })
    .await
}

pub async fn start_build(
    State(state): State<AppState>,
    Path((template_id, build_id)): Path<(String, String)>,
    request: Request,
) -> Response {
    handle(state, request, |state, account, request| async move {
        let b: BuildStartBody = json_body(request).await?;
        let spec = BuildSpec {
            from_image: b.from_image.filter(|s| !s.is_empty()),
            from_template: b.from_template.filter(|s| !s.is_empty()),
            steps: b
                .steps
                .unwrap_or_default()
                .into_iter()
                .map(|s| BuildStep {
                    kind: s.kind,
                    args: s.args.unwrap_or_default(),
                    files_hash: s.files_hash,
                })
                .collect(),
            start_cmd: b.start_cmd,
            ready_cmd: b.ready_cmd,
        };
        state
            .e2b
            .start_template_build(&account, &template_id, &build_id, spec)
            .await?;
        Ok(StatusCode::ACCEPTED.into_response())
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct StatusParams {
    logs_offset: Option<usize>,
    limit: Option<usize>,
}

pub async fn build_status(
    State(state): State<AppState>,
    Path((template_id, build_id)): Path<(String, String)>,
    request: Request,
) -> Response {
    handle(state, request, |state, account, request| async move {
        let q: StatusParams = axum::extract::Query::try_from_uri(request.uri())
            .map(|q| q.0)
            .map_err(|e| RestError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
        let limit = q.limit.unwrap_or(LOG_PAGE).clamp(1, LOG_PAGE);
        let (t, lines) = state
            .e2b
            .template_build(&account, &template_id, &build_id, q.logs_offset.unwrap_or(0), limit)
            .await?;
        let entries: Vec<Value> = lines
            .iter()
            .map(|l| json!({ "timestamp": l.at.to_rfc3339(), "level": l.level, "message": l.message }))
            .collect();
        let logs: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        let mut body = json!({
            "templateID": t.id,
            "buildID": t.build_id,
            "status": t.status.as_str(),
            "logs": logs,
            "logEntries": entries,
        });
        if t.status == BuildStatus::Error {
            body["reason"] = json!({ "message": t.reason.unwrap_or_else(|| "the build failed".into()) });
        }
        Ok(Json(body).into_response())
    })
    .await
}

pub async fn files(Path((_, hash)): Path<(String, String)>) -> Response {
    RestError::new(
        StatusCode::BAD_REQUEST,
        format!("files {hash}: COPY is not supported by paddock's template builds (its builder has no build context)"),
    )
    .into_response()
}

pub async fn list(State(state): State<AppState>, request: Request) -> Response {
    handle(state, request, |state, account, _| async move {
        let all: Vec<Value> = state
            .e2b
            .list_templates(&account)
            .await?
            .iter()
            .map(template_json)
            .collect();
        Ok(Json(all).into_response())
    })
    .await
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    handle(state, request, |state, account, _| async move {
        let t = state.e2b.get_template(&account, &id).await?;
        let mut body = template_json(&t);
        body["builds"] = json!([{
            "buildID": t.build_id,
            "status": t.status.as_str(),
            "createdAt": t.update_time.to_rfc3339(),
            "updatedAt": t.update_time.to_rfc3339(),
            "cpuCount": t.cpu_count,
            "memoryMB": t.memory_mb,
        }]);
        Ok(Json(body).into_response())
    })
    .await
}

pub async fn alias(
    State(state): State<AppState>,
    Path(alias): Path<String>,
    request: Request,
) -> Response {
    handle(state, request, |state, account, _| async move {
        let t = state.e2b.get_template(&account, &alias).await?;
        Ok(Json(json!({ "templateID": t.id, "public": false })).into_response())
    })
    .await
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    handle(state, request, |state, account, _| async move {
        state.e2b.delete_template(&account, &id).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}
