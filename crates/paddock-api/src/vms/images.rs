//! `/v1/images`: pull (with progress readable while it runs), list,
//! inspect, delete. An image is addressed by its digest or by the
//! reference it was pulled by (URL-encoded in the path).

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use paddock_core::build::{BuildEvent, BuildRequest};
use paddock_core::model::{Image, PullState};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::dto::WaitQuery;
use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidPath, ValidQuery};
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
    responses((status = 200, body = PullResponse), (status = 404, body = ErrorDetail), (status = 422, body = HttpValidationError), (status = 403, body = ErrorDetail, description = "The registry is not one the server may use (`only_listed_registries`)"), (status = 502, body = ErrorDetail, description = "The registry could not be reached or refused the request")))]
pub(crate) async fn pull(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidQuery(q): ValidQuery<WaitQuery>,
    ValidJson(body): ValidJson<PullRequest>,
) -> Result<Json<PullResponse>, ApiError> {
    let (id, progress, image) = state
        .service
        .images()
        .pull(&account, &body.reference, q.wait.unwrap_or(true))
        .await?;
    Ok(Json(pull_response(id, progress, image)))
}

/// A pull's progress.
#[utoipa::path(get, path = "/v1/images/pulls/{pull_id}", tag = "images", params(("pull_id" = String, Path)),
    responses((status = 200, body = PullResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn pull_status(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<PullResponse>, ApiError> {
    let progress = state.service.images().pull_state(&account, &id)?;
    Ok(Json(pull_response(id, progress, None)))
}

/// The account's images.
#[utoipa::path(get, path = "/v1/images", tag = "images", responses((status = 200, body = Vec<ImageResponse>)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(account): Caller,
) -> Result<Json<Vec<ImageResponse>>, ApiError> {
    let images = state.service.images().list(&account).await?;
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
    ValidPath(ImageKey { key }): ValidPath<ImageKey>,
) -> Result<Json<ImageResponse>, ApiError> {
    Ok(Json(
        state.service.images().get(&account, &key).await?.into(),
    ))
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
    ValidPath(ImageKey { key }): ValidPath<ImageKey>,
) -> Result<Json<DeletedImage>, ApiError> {
    let (image, freed) = state.service.images().delete(&account, &key).await?;
    Ok(Json(DeletedImage {
        digest: image.digest,
        freed_bytes: freed,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct BuildBody {
    /// An inline Dockerfile: FROM, RUN, ENV, WORKDIR, USER, ARG, LABEL,
    /// CMD, ENTRYPOINT and `COPY <<EOF /path` heredocs.
    pub dockerfile: String,
    /// The reference the built image is stored under.
    pub tag: String,
    #[serde(default)]
    pub build_args: std::collections::BTreeMap<String, String>,
}

fn line(v: serde_json::Value) -> bytes::Bytes {
    let mut b = serde_json::to_vec(&v).unwrap_or_default();
    b.push(b'\n');
    bytes::Bytes::from(b)
}

/// Build an image from an inline Dockerfile. The response streams the
/// build log as newline-delimited JSON: `{"type":"step",…,"cached":…}`,
/// `{"type":"stdout"|"stderr","data":…}`, then `{"type":"done","image":…}`
/// or `{"type":"error","detail":…}`. A Dockerfile that does not parse is a
/// 422 naming its line, before anything runs.
#[utoipa::path(post, path = "/v1/images/build", tag = "images", request_body = BuildBody,
    responses((status = 200, description = "application/x-ndjson build log"), (status = 422, body = HttpValidationError), (status = 403, body = ErrorDetail, description = "The registry is not one the server may use (`only_listed_registries`)"), (status = 502, body = ErrorDetail, description = "The registry could not be reached or refused the request")))]
pub(crate) async fn build(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<BuildBody>,
) -> Result<Response, ApiError> {
    paddock_core::service::Vms::parse_dockerfile(&body.dockerfile)?;
    if !body.tag.contains(['/', ':']) && body.tag.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(ApiError::body_field("tag", "not an image reference"));
    }
    let request = BuildRequest {
        dockerfile: body.dockerfile,
        tag: body.tag,
        build_args: body.build_args.into_iter().collect(),
        context: Default::default(),
    };
    let slot = state.vms().start_image_build(&account).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<BuildEvent>(64);
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(64);
    let service = state.service.clone();
    tokio::spawn(async move {
        let forward = async {
            while let Some(event) = rx.recv().await {
                let v = match event {
                    BuildEvent::Step {
                        index,
                        total,
                        line,
                        text,
                        cached,
                    } => json!({
                        "type": "step", "index": index, "total": total, "line": line,
                        "instruction": text, "cached": cached,
                    }),
                    BuildEvent::Stdout(b) => {
                        json!({"type": "stdout", "data": String::from_utf8_lossy(&b)})
                    }
                    BuildEvent::Stderr(b) => {
                        json!({"type": "stderr", "data": String::from_utf8_lossy(&b)})
                    }
                };
                if out_tx.send(Ok(line(v))).await.is_err() {
                    return;
                }
            }
        };
        let (result, ()) = tokio::join!(
            service.vms().build_image(&account, slot, request, tx),
            forward
        );
        let last = match result {
            Ok(image) => {
                json!({"type": "done", "image": serde_json::to_value(ImageResponse::from(image)).unwrap_or_default()})
            }
            Err(e) => json!({"type": "error", "detail": e.to_string()}),
        };
        let _ = out_tx.send(Ok(line(last))).await;
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(out_rx)),
    )
        .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PushBody {
    /// Where to push: `registry/repo:tag`.
    pub target: String,
}

/// Push a stored image (pulled or built) to a registry.
#[utoipa::path(post, path = "/v1/images/{key}/push", tag = "images", params(ImageKey), request_body = PushBody,
    responses((status = 200, description = "{digest, target}"), (status = 404, body = ErrorDetail), (status = 403, body = ErrorDetail, description = "The registry is not one the server may use (`only_listed_registries`)"), (status = 502, body = ErrorDetail, description = "The registry could not be reached or refused the request")))]
pub(crate) async fn push(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(ImageKey { key }): ValidPath<ImageKey>,
    ValidJson(body): ValidJson<PushBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let digest = state.vms().push_image(&account, &key, &body.target).await?;
    Ok(Json(json!({"digest": digest, "target": body.target})))
}
