//! `/v1/volumes` (volumes and their checkpoints) and `/v1/vms/{vm_id}/volumes`
//! (mounting them in running VMs). Lists are bare JSON arrays, as the
//! `instavm` SDK reads them.

use axum::extract::State;
use axum::Json;
use paddock_core::ids::{CheckpointId, VolumeId};
use paddock_core::model::{validate_mount_path, Attachment, Checkpoint, MountMode, MountRequest};
use paddock_core::volumes::VolumeDetail;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidPath, ValidQuery};
use super::vm_id;
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct VolumeResponse {
    pub id: String,
    pub volume_id: String,
    pub name: String,
    /// The size: writes past it fail with ENOSPC inside the VM.
    pub quota_bytes: u64,
    /// Bytes used by files and filesystem metadata; null if unreadable.
    pub used_bytes: Option<u64>,
    /// `available`, or `attached` while some VM mounts it.
    pub status: String,
    pub mounts: Vec<AttachmentResponse>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<VolumeDetail> for VolumeResponse {
    fn from(d: VolumeDetail) -> Self {
        let v = d.volume;
        Self {
            id: v.id.to_string(),
            volume_id: v.id.to_string(),
            name: v.name,
            quota_bytes: v.size_bytes,
            used_bytes: d.used_bytes,
            status: if d.attachments.is_empty() {
                "available"
            } else {
                "attached"
            }
            .into(),
            mounts: d.attachments.into_iter().map(Into::into).collect(),
            created_at: v.created_at.to_rfc3339(),
            updated_at: v.updated_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointResponse {
    pub id: String,
    pub checkpoint_id: String,
    pub volume_id: String,
    pub name: String,
    pub status: String,
    pub created_at: String,
}

impl From<Checkpoint> for CheckpointResponse {
    fn from(c: Checkpoint) -> Self {
        Self {
            id: c.id.to_string(),
            checkpoint_id: c.id.to_string(),
            volume_id: c.volume_id.to_string(),
            name: c.name,
            status: "ready".into(),
            created_at: c.created_at.to_rfc3339(),
        }
    }
}

/// A volume mounted in a VM.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttachmentResponse {
    pub vm_id: String,
    pub volume_id: String,
    pub mount_path: String,
    pub mode: String,
    /// The checkpoint a read-only mount shows, if not the live volume.
    pub checkpoint_id: Option<String>,
    pub status: String,
    pub created_at: String,
}

impl From<Attachment> for AttachmentResponse {
    fn from(a: Attachment) -> Self {
        Self {
            vm_id: a.vm_id.to_string(),
            volume_id: a.volume_id.to_string(),
            mount_path: a.mount_path,
            mode: a.mode.as_str().into(),
            checkpoint_id: a.checkpoint_id.map(|c| c.to_string()),
            status: "mounted".into(),
            created_at: a.created_at.to_rfc3339(),
        }
    }
}

fn volume_id(raw: &str) -> Result<VolumeId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("Volume"))
}

fn checkpoint_id(raw: &str) -> Result<CheckpointId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("Checkpoint"))
}

/// `VMVolumeMountRequest`: a volume to mount, at create or later.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MountVolumeRequest {
    pub volume_id: String,
    pub mount_path: String,
    /// `rw` (default) or `ro`.
    pub mode: Option<String>,
    /// Read-only: mount this checkpoint instead of the live volume.
    /// Read-write: first restore the volume to it (the volume must be
    /// mounted nowhere).
    pub checkpoint_id: Option<String>,
}

/// Validates a mount request; `loc` is where it sits in the body.
pub(crate) fn mount_request(
    raw: MountVolumeRequest,
    loc: &[&str],
) -> Result<MountRequest, ApiError> {
    let at = |field: &'static str| [loc, &[field]].concat();
    let mode = match raw.mode.as_deref() {
        None => MountMode::ReadWrite,
        Some(m) => MountMode::parse(m)
            .ok_or_else(|| ApiError::field(&at("mode"), "must be rw or ro", "value_error"))?,
    };
    let mount_path = validate_mount_path(&raw.mount_path)
        .map_err(|m| ApiError::field(&at("mount_path"), m, "value_error"))?;
    Ok(MountRequest {
        volume_id: volume_id(&raw.volume_id)?,
        mount_path,
        mode,
        checkpoint_id: raw
            .checkpoint_id
            .as_deref()
            .map(checkpoint_id)
            .transpose()?,
        subpath: None,
    })
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateVolumeRequest {
    pub name: String,
    /// The size in bytes (16 MiB to 16 TiB).
    pub quota_bytes: u64,
}

#[utoipa::path(post, path = "/v1/volumes", tag = "volumes", request_body = CreateVolumeRequest,
    responses((status = 200, body = VolumeResponse), (status = 422, body = HttpValidationError)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<CreateVolumeRequest>,
) -> Result<Json<VolumeResponse>, ApiError> {
    let service = &state.service;
    let volume = service
        .volumes()
        .create(&account, body.name, body.quota_bytes)
        .await?;
    Ok(Json(service.volumes().detail(volume).await?.into()))
}

/// Accepted for the SDK's sake; usage is always read fresh.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    #[allow(dead_code)] // Validated as a bool, nothing more to do.
    pub refresh_usage: Option<bool>,
}

#[utoipa::path(get, path = "/v1/volumes", tag = "volumes", params(UsageQuery),
    responses((status = 200, body = Vec<VolumeResponse>)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidQuery(_usage): ValidQuery<UsageQuery>,
) -> Result<Json<Vec<VolumeResponse>>, ApiError> {
    let volumes = state.service.volumes().list(&account).await?;
    Ok(Json(volumes.into_iter().map(Into::into).collect()))
}

#[utoipa::path(get, path = "/v1/volumes/{volume_id}", tag = "volumes",
    params(("volume_id" = String, Path), UsageQuery),
    responses((status = 200, body = VolumeResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(_usage): ValidQuery<UsageQuery>,
) -> Result<Json<VolumeResponse>, ApiError> {
    let service = &state.service;
    let volume = service.volumes().get(&account, &volume_id(&raw)?).await?;
    Ok(Json(service.volumes().detail(volume).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateVolumeRequest {
    pub name: Option<String>,
    /// A new size; the volume must be mounted nowhere.
    pub quota_bytes: Option<u64>,
}

#[utoipa::path(patch, path = "/v1/volumes/{volume_id}", tag = "volumes",
    params(("volume_id" = String, Path)), request_body = UpdateVolumeRequest,
    responses((status = 200, body = VolumeResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<UpdateVolumeRequest>,
) -> Result<Json<VolumeResponse>, ApiError> {
    if body.name.is_none() && body.quota_bytes.is_none() {
        return Err(ApiError::body_field(
            "name",
            "give name or quota_bytes (or both)",
        ));
    }
    let service = &state.service;
    let volume = service
        .volumes()
        .update(&account, &volume_id(&raw)?, body.name, body.quota_bytes)
        .await?;
    Ok(Json(service.volumes().detail(volume).await?.into()))
}

/// Delete a volume and its checkpoints; refused (409) while mounted.
#[utoipa::path(delete, path = "/v1/volumes/{volume_id}", tag = "volumes",
    params(("volume_id" = String, Path)),
    responses((status = 200, description = "deleted"), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = volume_id(&raw)?;
    state.service.volumes().delete(&account, &id).await?;
    Ok(Json(json!({"deleted": true, "volume_id": id.to_string()})))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreateCheckpointRequest {
    pub name: Option<String>,
}

/// Checkpoint a volume's content; a mounted volume's writers wait for the
/// copy (a reflink where the host filesystem can).
#[utoipa::path(post, path = "/v1/volumes/{volume_id}/checkpoints", tag = "volumes",
    params(("volume_id" = String, Path)), request_body = CreateCheckpointRequest,
    responses((status = 200, body = CheckpointResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn create_checkpoint(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<CreateCheckpointRequest>,
) -> Result<Json<CheckpointResponse>, ApiError> {
    let checkpoint = state
        .service
        .volumes()
        .create_checkpoint(&account, &volume_id(&raw)?, body.name)
        .await?;
    Ok(Json(checkpoint.into()))
}

#[utoipa::path(get, path = "/v1/volumes/{volume_id}/checkpoints", tag = "volumes",
    params(("volume_id" = String, Path)),
    responses((status = 200, body = Vec<CheckpointResponse>), (status = 404, body = ErrorDetail)))]
pub(crate) async fn list_checkpoints(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<Vec<CheckpointResponse>>, ApiError> {
    let checkpoints = state
        .service
        .volumes()
        .list_checkpoints(&account, &volume_id(&raw)?)
        .await?;
    Ok(Json(checkpoints.into_iter().map(Into::into).collect()))
}

#[utoipa::path(delete, path = "/v1/volumes/{volume_id}/checkpoints/{checkpoint_id}",
    tag = "volumes",
    params(("volume_id" = String, Path), ("checkpoint_id" = String, Path)),
    responses((status = 200, description = "deleted"), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail)))]
pub(crate) async fn delete_checkpoint(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((raw_volume, raw_checkpoint)): ValidPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = checkpoint_id(&raw_checkpoint)?;
    state
        .service
        .volumes()
        .delete_checkpoint(&account, &volume_id(&raw_volume)?, &id)
        .await?;
    Ok(Json(
        json!({"deleted": true, "checkpoint_id": id.to_string()}),
    ))
}

/// Mounting is done when the call returns; `wait` is accepted for the SDK.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MountQuery {
    #[allow(dead_code)] // Validated as a bool, nothing more to do.
    pub wait: Option<bool>,
}

#[utoipa::path(post, path = "/v1/vms/{vm_id}/volumes", tag = "volumes",
    params(("vm_id" = String, Path), MountQuery), request_body = MountVolumeRequest,
    responses((status = 200, body = AttachmentResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn mount(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(_wait): ValidQuery<MountQuery>,
    ValidJson(body): ValidJson<MountVolumeRequest>,
) -> Result<Json<AttachmentResponse>, ApiError> {
    let id = vm_id(&raw)?;
    let request = mount_request(body, &["body"])?;
    let attachment = state.vms().attach_volume(&account, &id, request).await?;
    Ok(Json(attachment.into()))
}

#[utoipa::path(get, path = "/v1/vms/{vm_id}/volumes", tag = "volumes",
    params(("vm_id" = String, Path)),
    responses((status = 200, body = Vec<AttachmentResponse>), (status = 404, body = ErrorDetail)))]
pub(crate) async fn list_mounts(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<Vec<AttachmentResponse>>, ApiError> {
    let mounts = state.vms().vm_volumes(&account, &vm_id(&raw)?).await?;
    Ok(Json(mounts.into_iter().map(Into::into).collect()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnmountQuery {
    /// Where to unmount it; every mount of the volume in the VM if absent.
    pub mount_path: Option<String>,
    #[allow(dead_code)] // Validated as a bool, nothing more to do.
    pub wait: Option<bool>,
}

#[utoipa::path(delete, path = "/v1/vms/{vm_id}/volumes/{volume_id}", tag = "volumes",
    params(("vm_id" = String, Path), ("volume_id" = String, Path), UnmountQuery),
    responses((status = 200, description = "unmounted"), (status = 404, body = ErrorDetail)))]
pub(crate) async fn unmount(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((raw_vm, raw_volume)): ValidPath<(String, String)>,
    ValidQuery(q): ValidQuery<UnmountQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let removed = state
        .vms()
        .detach_volume(
            &account,
            &vm_id(&raw_vm)?,
            &volume_id(&raw_volume)?,
            q.mount_path.as_deref(),
        )
        .await?;
    let removed: Vec<AttachmentResponse> = removed.into_iter().map(Into::into).collect();
    Ok(Json(json!({"success": true, "unmounted": removed})))
}

// ---- files -------------------------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VolumeFilesQuery {
    /// A directory, or a path prefix of names in one; empty: the root.
    pub prefix: Option<String>,
    /// Into subdirectories (default true).
    pub recursive: Option<bool>,
    /// 1 to 10000, default 1000.
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VolumeFileResponse {
    /// From the volume's root.
    pub path: String,
    pub size: u64,
    pub is_dir: bool,
    pub modified_at: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VolumeFileQuery {
    /// The file, from the volume's root.
    pub path: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadVolumeFileRequest {
    /// The file, from the volume's root.
    pub path: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VolumeFileContent {
    pub path: String,
    pub size: u64,
    /// The file's bytes, base64.
    pub content: String,
    pub encoding: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VolumeFileWritten {
    pub success: bool,
    pub path: String,
    pub size: u64,
}

/// The volume's files, whether or not a VM has it mounted.
#[utoipa::path(get, path = "/v1/volumes/{volume_id}/files", tag = "volumes",
    params(("volume_id" = String, Path), VolumeFilesQuery),
    responses((status = 200, body = Vec<VolumeFileResponse>), (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError)))]
pub(crate) async fn list_files(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<VolumeFilesQuery>,
) -> Result<Json<Vec<VolumeFileResponse>>, ApiError> {
    let id = volume_id(&raw)?;
    let files = state
        .service
        .volumes()
        .list_files(
            &account,
            &id,
            q.prefix.as_deref().unwrap_or(""),
            q.recursive.unwrap_or(true),
            q.limit.unwrap_or(1000),
        )
        .await
        .map_err(ApiError::in_query)?;
    Ok(Json(
        files
            .into_iter()
            .map(|f| VolumeFileResponse {
                path: f.path,
                size: f.size,
                is_dir: f.is_dir,
                modified_at: paddock_core::clock::Timestamp::from_unix_millis(f.modified_unix_ms)
                    .to_rfc3339(),
            })
            .collect(),
    ))
}

/// A file's bytes (base64 in JSON, as the SDK reads them), at most 64 MiB.
#[utoipa::path(post, path = "/v1/volumes/{volume_id}/files/download", tag = "volumes",
    params(("volume_id" = String, Path)), request_body = DownloadVolumeFileRequest,
    responses((status = 200, body = VolumeFileContent), (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError)))]
pub(crate) async fn download_file(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<DownloadVolumeFileRequest>,
) -> Result<Json<VolumeFileContent>, ApiError> {
    use base64::Engine;
    let id = volume_id(&raw)?;
    let bytes = state
        .service
        .volumes()
        .read_file(&account, &id, &body.path)
        .await?;
    Ok(Json(VolumeFileContent {
        path: body.path,
        size: bytes.len() as u64,
        content: base64::engine::general_purpose::STANDARD.encode(&bytes),
        encoding: "base64".into(),
    }))
}

/// Upload a file into the volume (multipart: `path`, `overwrite`, then
/// `file`), streamed; refused past the volume's size; whole or not at all.
#[utoipa::path(post, path = "/v1/volumes/{volume_id}/files/upload", tag = "volumes",
    params(("volume_id" = String, Path)),
    request_body(content_type = "multipart/form-data", description = "fields path, overwrite (true/false), file"),
    responses((status = 200, body = VolumeFileWritten), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn upload_file(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    mut form: axum::extract::Multipart,
) -> Result<Json<VolumeFileWritten>, ApiError> {
    let id = volume_id(&raw)?;
    let bad_form = |e: axum::extract::multipart::MultipartError| {
        ApiError::field(&["body"], e.body_text(), "value_error")
    };
    let (mut path, mut overwrite) = (None::<String>, false);
    while let Some(mut field) = form.next_field().await.map_err(bad_form)? {
        match field.name().unwrap_or("") {
            "path" => path = Some(field.text().await.map_err(bad_form)?),
            "overwrite" => {
                let raw = field.text().await.map_err(bad_form)?;
                overwrite = match raw.trim() {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    _ => return Err(ApiError::body_field("overwrite", "must be true or false")),
                };
            }
            "file" => {
                let path = path.clone().ok_or_else(|| {
                    ApiError::field(
                        &["body", "path"],
                        "Field required before the file",
                        "missing",
                    )
                })?;
                let service = state.service.clone();
                let (acct, vol, p) = (account.clone(), id.clone(), path.clone());
                let size = super::files::stream_field(&mut field, move |body| async move {
                    service
                        .volumes()
                        .write_file(&acct, &vol, &p, overwrite, body)
                        .await
                })
                .await?;
                return Ok(Json(VolumeFileWritten {
                    success: true,
                    path,
                    size,
                }));
            }
            _ => {}
        }
    }
    Err(ApiError::field(
        &["body", "file"],
        "Field required",
        "missing",
    ))
}

#[utoipa::path(delete, path = "/v1/volumes/{volume_id}/files", tag = "volumes",
    params(("volume_id" = String, Path), VolumeFileQuery),
    responses((status = 200, body = Object), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn delete_file(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<VolumeFileQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = volume_id(&raw)?;
    state
        .service
        .volumes()
        .delete_file(&account, &id, &q.path)
        .await
        .map_err(ApiError::in_query)?;
    Ok(Json(json!({"path": q.path, "deleted": true})))
}
