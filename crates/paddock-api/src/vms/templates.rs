//! Devbox templates as the `instavm` SDK and CLI use them
//! (`/v1/templates…`): the catalog is read without a key, a key adds the
//! account's own templates (drafts included); publish, delete and run
//! take a key.

use axum::extract::State;
use axum::Json;
use paddock_tools::templates::{Run, RunRequest, Template};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, MaybeCaller, ValidJson, ValidPath};
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateResponse {
    pub slug: String,
    pub id: String,
    /// Other names it is found by.
    pub aliases: Vec<String>,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub audience: Option<String>,
    /// `verifying`, `active` or `failed`.
    pub status: String,
    /// Why verification failed.
    pub verify_error: Option<String>,
    pub snapshot_id: Option<String>,
    /// Shipped with paddock.
    pub builtin: bool,
    /// In the catalog everyone sees.
    pub public: bool,
    /// `{verify_error}`, where the SDK also looks.
    #[schema(value_type = Object)]
    pub config: Value,
    #[schema(value_type = Object)]
    pub vm: Value,
    #[schema(value_type = Object)]
    pub terminal: Value,
    #[schema(value_type = Option<Object>)]
    pub app: Value,
    #[schema(value_type = Vec<Object>)]
    pub build: Value,
    #[schema(value_type = Vec<Object>)]
    pub runtime: Value,
    /// The manifest as published.
    #[schema(value_type = Object)]
    pub manifest: Value,
    pub created_at: String,
    pub updated_at: String,
}

pub(crate) fn template_view(t: Template) -> TemplateResponse {
    let m = &t.manifest;
    let text = |k: &str| m[k].as_str().map(str::to_owned);
    TemplateResponse {
        slug: t.id.clone(),
        id: t.id.clone(),
        aliases: m["aliases"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        name: text("name").unwrap_or_else(|| t.id.clone()),
        version: t.version.clone(),
        description: text("description"),
        audience: text("audience"),
        status: t.status.as_str().to_owned(),
        verify_error: t.verify_error.clone(),
        snapshot_id: t.snapshot_id.as_ref().map(ToString::to_string),
        builtin: t.builtin,
        public: t.public,
        config: serde_json::json!({"verify_error": t.verify_error}),
        vm: m["vm"].clone(),
        terminal: m["terminal"].clone(),
        app: m["app"].clone(),
        build: if m["build"].is_array() {
            m["build"].clone()
        } else {
            Value::Array(Vec::new())
        },
        runtime: if m["runtime"].is_array() {
            m["runtime"].clone()
        } else {
            Value::Array(Vec::new())
        },
        manifest: t.manifest.clone(),
        created_at: t.created_at.to_rfc3339(),
        updated_at: t.updated_at.to_rfc3339(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<TemplateResponse>,
}

#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses((status = 200, body = TemplateList), (status = 401, body = ErrorDetail)),
    security((), ("api_key" = []), ("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    MaybeCaller(viewer): MaybeCaller,
) -> Result<Json<TemplateList>, ApiError> {
    let templates = state.templates.list(viewer.as_ref()).await?;
    Ok(Json(TemplateList {
        templates: templates.into_iter().map(template_view).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/templates/{slug}", tag = "templates",
    params(("slug" = String, Path)),
    responses((status = 200, body = TemplateResponse), (status = 401, body = ErrorDetail),
        (status = 404, body = ErrorDetail)),
    security((), ("api_key" = []), ("bearer" = [])))]
pub(crate) async fn get(
    State(state): State<AppState>,
    MaybeCaller(viewer): MaybeCaller,
    ValidPath(slug): ValidPath<String>,
) -> Result<Json<TemplateResponse>, ApiError> {
    let template = state.templates.get(viewer.as_ref(), &slug).await?;
    Ok(Json(template_view(template)))
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PublishTemplateRequest {
    /// A `kind: devbox` manifest (the SDK sends `instavm.yaml`'s).
    #[schema(value_type = Object)]
    pub manifest: Value,
    /// The ready snapshot it runs from.
    pub snapshot_id: String,
    /// Start a VM of it, run its runtime steps and check its app before
    /// it is `active`.
    #[serde(default = "yes")]
    pub verify: bool,
}

#[utoipa::path(post, path = "/v1/templates", tag = "templates",
    request_body = PublishTemplateRequest,
    responses((status = 200, body = TemplateResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn publish(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<PublishTemplateRequest>,
) -> Result<Json<TemplateResponse>, ApiError> {
    let template = state
        .templates
        .publish(&account, body.manifest, &body.snapshot_id, body.verify)
        .await?;
    Ok(Json(template_view(template)))
}

#[utoipa::path(delete, path = "/v1/templates/{slug}", tag = "templates",
    params(("slug" = String, Path)),
    responses((status = 200, body = TemplateResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(slug): ValidPath<String>,
) -> Result<Json<TemplateResponse>, ApiError> {
    Ok(Json(template_view(
        state.templates.delete(&account, &slug).await?,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RunTemplateRequest {
    /// Seconds, or `30m`, `2h`, `1d` (at most 30 days).
    #[schema(value_type = Option<Object>)]
    pub vm_lifetime: Option<Value>,
    pub auto_suspend: Option<bool>,
    pub auto_resume: Option<bool>,
    /// Vaults whose secrets the VM's commands see.
    pub vault_ids: Option<Vec<String>>,
    /// The devbox's name (unique among the account's running devboxes).
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunApp {
    pub port: u16,
    pub share_id: Option<String>,
    pub share_url: Option<String>,
    pub is_public: bool,
    /// A private share's access token (shown once).
    pub token: Option<String>,
    /// Whether the app answered its health path at start.
    pub ready: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunResponse {
    /// The run's id: its VM's.
    pub run_id: String,
    pub vm_id: String,
    pub session_id: String,
    /// The VM's status (`active`).
    pub status: String,
    pub template_slug: String,
    pub template_version: String,
    pub devbox_name: Option<String>,
    pub expires_at: Option<String>,
    #[schema(value_type = Object)]
    pub terminal: Value,
    pub app: Option<RunApp>,
}

fn run_view(state: &AppState, run: Run) -> RunResponse {
    let app = run.manifest.app.as_ref().map(|a| RunApp {
        port: a.port,
        share_id: run.share.as_ref().map(|s| s.share.id.to_string()),
        share_url: run
            .share
            .as_ref()
            .map(|s| state.share_urls.host_url(s.share.host_label())),
        is_public: run.share.as_ref().is_some_and(|s| s.share.is_public),
        token: run
            .share
            .as_ref()
            .and_then(|s| s.token.as_ref())
            .map(|t| t.expose().to_owned()),
        ready: run.app_ready,
    });
    RunResponse {
        run_id: run.vm.id.to_string(),
        vm_id: run.vm.id.to_string(),
        session_id: run.vm.session_id.to_string(),
        status: super::dto::wire_status(run.vm.status).to_owned(),
        template_slug: run.template.id.clone(),
        template_version: run.template.version.clone(),
        devbox_name: run
            .vm
            .metadata
            .get(paddock_tools::templates::DEVBOX_MARK)
            .and_then(|d| d["name"].as_str())
            .map(str::to_owned),
        expires_at: run.vm.expires_at.map(|t| t.to_rfc3339()),
        terminal: run.template.manifest["terminal"].clone(),
        app,
    }
}

#[utoipa::path(post, path = "/v1/templates/{slug}/runs", tag = "templates",
    params(("slug" = String, Path)), request_body = RunTemplateRequest,
    responses((status = 200, body = RunResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError),
        (status = 429, body = ErrorDetail), (status = 503, body = ErrorDetail)))]
pub(crate) async fn run(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(slug): ValidPath<String>,
    ValidJson(body): ValidJson<RunTemplateRequest>,
) -> Result<Json<RunResponse>, ApiError> {
    let request = RunRequest {
        vm_lifetime: body.vm_lifetime,
        auto_suspend: body.auto_suspend,
        auto_resume: body.auto_resume,
        vault_ids: body.vault_ids,
        name: body.name,
    };
    let run = state.templates.run(&account, &slug, request).await?;
    Ok(Json(run_view(&state, run)))
}
