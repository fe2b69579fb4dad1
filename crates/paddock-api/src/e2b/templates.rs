//! E2B's template routes: register a build (`POST /v3/templates`), start
//! it with the SDK's steps (`POST /v2/templates/{id}/builds/{build}`),
//! poll its status and log (`GET …/status?logsOffset=`), list, look up by
//! id or alias, delete.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use paddock_e2b::{BuildSpec, BuildStatus, BuildStep};
use serde::Deserialize;

use super::extract::{E2bCaller, E2bJson, E2bQuery};
use super::views::{
    AliasView, BuildLogEntry, BuildReason, BuildRequested, BuildStatusView, BuildView, E2bError,
    FilesLink, TemplateView, TemplateWithBuilds,
};
use super::RestError;
use crate::AppState;

/// The most log lines one status call returns (as E2B's API does).
const LOG_PAGE: usize = 100;

/// A build to register (E2B's `TemplateBuildRequestV3`).
#[derive(Deserialize, serde::Serialize, Default, utoipa::ToSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct BuildRequestBody {
    name: Option<String>,
    alias: Option<String>,
    tags: Option<Vec<String>>,
    cpu_count: Option<u32>,
    #[serde(rename = "memoryMB")]
    memory_mb: Option<u32>,
}

/// One step: `RUN` (command, user), `ENV` (name/value pairs), `WORKDIR`,
/// `USER`; `COPY` is refused.
#[derive(Deserialize, serde::Serialize, Default, utoipa::ToSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct StepBody {
    #[serde(rename = "type")]
    kind: String,
    args: Option<Vec<String>>,
    files_hash: Option<String>,
}

/// What to build (E2B's `TemplateBuildStartV2`).
#[derive(Deserialize, serde::Serialize, Default, utoipa::ToSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct BuildStartBody {
    from_image: Option<String>,
    from_template: Option<String>,
    steps: Option<Vec<StepBody>>,
    start_cmd: Option<String>,
    ready_cmd: Option<String>,
}

/// Register a build of template `name` (made if new).
#[utoipa::path(post, path = "/e2b/v3/templates", tag = "e2b", operation_id = "e2b_request_template_build",
    request_body = BuildRequestBody,
    responses((status = 202, body = BuildRequested), (status = 409, body = E2bError)))]
pub async fn request_build(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    E2bJson(b): E2bJson<BuildRequestBody>,
) -> Result<Response, RestError> {
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
    let body = BuildRequested {
        template_id: t.id.clone(),
        build_id: t.build_id.clone(),
        public: false,
        names: vec![t.name.clone()],
        aliases: vec![t.name.clone()],
        tags: t.tags.clone(),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Start a registered build with the SDK's steps; its progress is the
/// status route's.
#[utoipa::path(post, path = "/e2b/v2/templates/{template_id}/builds/{build_id}", tag = "e2b",
    operation_id = "e2b_start_template_build",
    params(("template_id" = String, Path), ("build_id" = String, Path)), request_body = BuildStartBody,
    responses((status = 202, description = "Started"), (status = 400, body = E2bError), (status = 409, body = E2bError)))]
pub async fn start_build(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    Path((template_id, build_id)): Path<(String, String)>,
    E2bJson(b): E2bJson<BuildStartBody>,
) -> Result<Response, RestError> {
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
}

#[derive(Deserialize, serde::Serialize, Default, utoipa::IntoParams)]
#[serde(default, rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct StatusParams {
    /// Log lines already read.
    logs_offset: Option<usize>,
    /// At most this many lines (1 to 100, the default).
    limit: Option<usize>,
}

/// A build's status and its log from `logsOffset`.
#[utoipa::path(get, path = "/e2b/templates/{template_id}/builds/{build_id}/status", tag = "e2b",
    operation_id = "e2b_template_build_status",
    params(("template_id" = String, Path), ("build_id" = String, Path), StatusParams),
    responses((status = 200, body = BuildStatusView)))]
pub async fn build_status(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    Path((template_id, build_id)): Path<(String, String)>,
    E2bQuery(q): E2bQuery<StatusParams>,
) -> Result<Response, RestError> {
    let limit = q.limit.unwrap_or(LOG_PAGE).clamp(1, LOG_PAGE);
    let (t, lines) = state
        .e2b
        .template_build(
            &account,
            &template_id,
            &build_id,
            q.logs_offset.unwrap_or(0),
            limit,
        )
        .await?;
    let body = BuildStatusView {
        template_id: t.id.clone(),
        build_id: t.build_id.clone(),
        status: t.status.as_str(),
        logs: lines.iter().map(|l| l.message.clone()).collect(),
        log_entries: lines
            .iter()
            .map(|l| BuildLogEntry {
                timestamp: l.at.to_rfc3339(),
                level: l.level,
                message: l.message.clone(),
            })
            .collect(),
        reason: (t.status == BuildStatus::Error).then(|| BuildReason {
            message: t
                .reason
                .clone()
                .unwrap_or_else(|| "the build failed".into()),
        }),
    };
    Ok(Json(body).into_response())
}

/// Whether the files of a `COPY` step (by their hash) are here, and
/// where to upload them when not: a signed URL, as E2B's presigned one.
#[utoipa::path(get, path = "/e2b/templates/{template_id}/files/{hash}", tag = "e2b",
    operation_id = "e2b_template_files",
    params(("template_id" = String, Path), ("hash" = String, Path)),
    responses((status = 201, body = FilesLink), (status = 400, body = E2bError)))]
pub async fn files(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    Path((template_id, hash)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Result<Response, RestError> {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let (present, path) = state
        .e2b
        .template_files_link(&account, &template_id, &hash)
        .await?;
    let host = host.ok_or_else(|| RestError::new(StatusCode::BAD_REQUEST, "no Host header"))?;
    let body = FilesLink {
        present,
        url: (!present).then(|| format!("http://{host}{path}")),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize, Default)]
pub struct UploadQuery {
    token: Option<String>,
}

/// Receives a `COPY` step's archive at the URL `files` handed out; the
/// token in the URL is the authorization.
pub async fn upload(
    State(state): State<AppState>,
    Path((account, template_id, hash)): Path<(String, String, String)>,
    E2bQuery(q): E2bQuery<UploadQuery>,
    body: axum::body::Body,
) -> Result<Response, RestError> {
    use futures::TryStreamExt;
    let token = q
        .token
        .ok_or_else(|| RestError::new(StatusCode::UNAUTHORIZED, "no token"))?;
    let account: paddock_core::ids::AccountId = account
        .parse()
        .map_err(|_| RestError::new(StatusCode::NOT_FOUND, "no such upload"))?;
    let body = body.into_data_stream().map_err(std::io::Error::other);
    let size = state
        .e2b
        .store_template_files(&account, &template_id, &hash, &token, Box::pin(body))
        .await?;
    Ok(Json(serde_json::json!({ "size": size })).into_response())
}

/// The account's templates.
#[utoipa::path(get, path = "/e2b/templates", tag = "e2b", operation_id = "e2b_list_templates",
    responses((status = 200, body = Vec<TemplateView>)))]
pub async fn list(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
) -> Result<Response, RestError> {
    let all: Vec<TemplateView> = state
        .e2b
        .list_templates(&account)
        .await?
        .iter()
        .map(TemplateView::from)
        .collect();
    Ok(Json(all).into_response())
}

/// The account's templates (the SDK's v2 route; the same answer).
#[utoipa::path(get, path = "/e2b/v2/templates", tag = "e2b", operation_id = "e2b_list_templates_v2",
    responses((status = 200, body = Vec<TemplateView>)))]
pub async fn list_v2(state: State<AppState>, caller: E2bCaller) -> Result<Response, RestError> {
    list(state, caller).await
}

/// A template by id or name, with its latest build.
#[utoipa::path(get, path = "/e2b/templates/{template_id}", tag = "e2b", operation_id = "e2b_get_template",
    params(("template_id" = String, Path)), responses((status = 200, body = TemplateWithBuilds)))]
pub async fn get(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    Path(id): Path<String>,
) -> Result<Response, RestError> {
    let t = state.e2b.get_template(&account, &id).await?;
    let body = TemplateWithBuilds {
        template: TemplateView::from(&t),
        builds: vec![BuildView {
            build_id: t.build_id.clone(),
            status: t.status.as_str(),
            created_at: t.update_time.to_rfc3339(),
            updated_at: t.update_time.to_rfc3339(),
            cpu_count: t.cpu_count,
            memory_mb: t.memory_mb,
        }],
    };
    Ok(Json(body).into_response())
}

/// The template an alias names.
#[utoipa::path(get, path = "/e2b/templates/aliases/{alias}", tag = "e2b", operation_id = "e2b_template_alias",
    params(("alias" = String, Path)), responses((status = 200, body = AliasView)))]
pub async fn alias(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    Path(alias): Path<String>,
) -> Result<Response, RestError> {
    let t = state.e2b.get_template(&account, &alias).await?;
    Ok(Json(AliasView {
        template_id: t.id,
        public: false,
    })
    .into_response())
}

/// Delete a template (sandboxes made from it go on).
#[utoipa::path(delete, path = "/e2b/templates/{template_id}", tag = "e2b", operation_id = "e2b_delete_template",
    params(("template_id" = String, Path)), responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(state): State<AppState>,
    E2bCaller(account): E2bCaller,
    Path(id): Path<String>,
) -> Result<Response, RestError> {
    state.e2b.delete_template(&account, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
