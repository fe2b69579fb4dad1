//! `/v1/images`: pull (with progress readable while it runs), list,
//! inspect, delete. An image is addressed by its digest or by the
//! reference it was pulled by (URL-encoded in the path).

use axum::extract::{Path, State};
use axum::Json;
use paddock_core::model::{Image, PullState};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::dto::WaitQuery;
use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidQuery};
use crate::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct PullRequest {
    /// `registry/repo:tag` or `registry/repo@sha256:…`.
    pub reference: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LayerResponse {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImageResponse {
    pub digest: String,
    pub reference: String,
    pub size: u64,
    pub layers: Vec<LayerResponse>,
    pub config_digest: String,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub created_at: String,
}

impl From<Image> for ImageResponse {
    fn from(i: Image) -> Self {
        Self {
            digest: i.digest,
            reference: i.reference,
            size: i.size,
            layers: i
                .layers
                .into_iter()
                .map(|l| LayerResponse {
                    digest: l.digest,
                    size: l.size,
                    media_type: l.media_type,
                })
                .collect(),
            config_digest: i.config_digest,
            env: i
                .config
                .env
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            working_dir: i.config.working_dir,
            user: i.config.user,
            entrypoint: i.config.entrypoint,
            cmd: i.config.cmd,
            labels: i.config.labels,
            created_at: i.created_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LayerProgressResponse {
    pub digest: String,
    pub total: u64,
    pub done: u64,
}

/// A pull: its phase (`resolving`, `downloading`, `done`, `failed`),
/// bytes done and total per layer, and the image once done.
#[derive(Debug, Serialize, ToSchema)]
pub struct PullResponse {
    pub pull_id: String,
    pub reference: String,
    pub status: String,
    pub layers: Vec<LayerProgressResponse>,
    pub image_digest: Option<String>,
    pub error: Option<String>,
    pub image: Option<ImageResponse>,
}

fn pull_response(pull_id: String, s: PullState, image: Option<Image>) -> PullResponse {
    PullResponse {
        pull_id,
        reference: s.reference,
        status: s.phase.as_str().to_owned(),
        layers: s
            .layers
            .into_iter()
            .map(|l| LayerProgressResponse {
                digest: l.digest,
                total: l.total,
                done: l.done,
            })
            .collect(),
        image_digest: s.image_digest,
        error: s.error,
        image: image.map(ImageResponse::from),
    }
}

/// Pull an image. With `wait=false` it returns at once; poll
/// `GET /v1/images/pulls/{pull_id}` for progress.
#[utoipa::path(post, path = "/v1/images", tag = "images", params(WaitQuery), request_body = PullRequest,
    responses((status = 200, body = PullResponse), (status = 404, body = ErrorDetail), (status = 422, body = HttpValidationError), (status = 502, body = ErrorDetail)))]
pub(crate) async fn pull(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidQuery(q): ValidQuery<WaitQuery>,
    ValidJson(body): ValidJson<PullRequest>,
) -> Result<Json<PullResponse>, ApiError> {
    let (id, progress, image) = state
        .service
        .pull_image(&account, &body.reference, q.wait.unwrap_or(true))
        .await?;
    Ok(Json(pull_response(id, progress, image)))
}

/// A pull's progress.
#[utoipa::path(get, path = "/v1/images/pulls/{pull_id}", tag = "images", params(("pull_id" = String, Path)),
    responses((status = 200, body = PullResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn pull_status(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(id): Path<String>,
) -> Result<Json<PullResponse>, ApiError> {
    let progress = state.service.pull_state(&account, &id)?;
    Ok(Json(pull_response(id, progress, None)))
}

/// The account's images.
#[utoipa::path(get, path = "/v1/images", tag = "images", responses((status = 200, body = Vec<ImageResponse>)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(account): Caller,
) -> Result<Json<Vec<ImageResponse>>, ApiError> {
    let images = state.service.list_images(&account).await?;
    Ok(Json(images.into_iter().map(ImageResponse::from).collect()))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ImageKey {
    /// A digest, or a reference (URL-encoded).
    pub key: String,
}

/// Inspect an image: digest, size, layers, config.
#[utoipa::path(get, path = "/v1/images/{key}", tag = "images", params(ImageKey),
    responses((status = 200, body = ImageResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn inspect(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(ImageKey { key }): Path<ImageKey>,
) -> Result<Json<ImageResponse>, ApiError> {
    Ok(Json(state.service.get_image(&account, &key).await?.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedImage {
    pub digest: String,
    /// Bytes of blobs and layers no image needs any more, freed now.
    pub freed_bytes: u64,
}

/// Delete an image (refused while a VM runs it); blobs and layers no
/// image references are garbage-collected.
#[utoipa::path(delete, path = "/v1/images/{key}", tag = "images", params(ImageKey),
    responses((status = 200, body = DeletedImage), (status = 404, body = ErrorDetail), (status = 409, body = ErrorDetail)))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(ImageKey { key }): Path<ImageKey>,
) -> Result<Json<DeletedImage>, ApiError> {
    let image = state.service.get_image(&account, &key).await?;
    let freed = state.service.delete_image(&account, &image.digest).await?;
    Ok(Json(DeletedImage {
        digest: image.digest,
        freed_bytes: freed,
    }))
}
