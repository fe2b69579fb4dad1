//! Snapshots and clones: `POST /v1/vms/{vm_id}/snapshot`,
//! `POST /v1/vms/{vm_id}/clone`, and `/v1/snapshots` (make one from an
//! image, list, get, delete, push).

use axum::extract::State;
use axum::Json;
use paddock_core::ids::SnapshotId;
use paddock_core::model::{Snapshot, SnapshotKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::dto::WaitQuery;
use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidPath, ValidQuery};
use super::vm_id;
use crate::AppState;

/// A snapshot as InstaVM's clients read it (`snapshot_id` and `id` both).
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotResponse {
    pub snapshot_id: String,
    pub id: String,
    pub name: String,
    /// `creating`, `ready` or `failed`.
    pub status: String,
    /// `user` or `system`.
    pub snapshot_type: String,
    /// What the snapshot sits on: the image reference or variant the VM ran.
    pub oci_image: String,
    pub vm_id: Option<String>,
    /// Bytes of the snapshot's own layer (what the VM changed).
    pub size_bytes: u64,
    /// The snapshot image's manifest digest, once ready.
    pub digest: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
}

impl From<Snapshot> for SnapshotResponse {
    fn from(s: Snapshot) -> Self {
        Self {
            snapshot_id: s.id.to_string(),
            id: s.id.to_string(),
            name: s.name,
            status: s.status.as_str().to_owned(),
            snapshot_type: s.kind.as_str().to_owned(),
            oci_image: s.source,
            vm_id: s.vm_id.map(|v| v.to_string()),
            size_bytes: s.size,
            digest: s.image.map(|i| i.digest),
            last_error: s.error,
            created_at: s.created_at.to_rfc3339(),
        }
    }
}

fn snapshot_id(raw: &str) -> Result<SnapshotId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("Snapshot"))
}

/// `POST /v1/vms/{vm_id}/snapshot`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct SnapshotVmRequest {
    /// Unique per account; default: the snapshot's id.
    pub name: Option<String>,
}

/// Snapshot a running VM: its processes are frozen while what it changed
/// is packed into a layer, then thawed.
#[utoipa::path(post, path = "/v1/vms/{vm_id}/snapshot", tag = "snapshots",
    params(("vm_id" = String, Path), WaitQuery), request_body = SnapshotVmRequest,
    responses((status = 200, body = SnapshotResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn snapshot_vm(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(_wait): ValidQuery<WaitQuery>,
    ValidJson(body): ValidJson<SnapshotVmRequest>,
) -> Result<Json<SnapshotResponse>, ApiError> {
    let id = vm_id(&raw)?;
    let name = body.name;
    let snapshot = state.vms().snapshot_vm(&account, &id, name).await?;
    Ok(Json(snapshot.into()))
}

/// `POST /v1/vms/{vm_id}/clone`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CloneRequest {
    /// The name of the snapshot the clone goes through.
    pub snapshot_name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CloneResponse {
    pub vm_id: String,
    pub session_id: String,
    pub status: String,
    pub snapshot_id: String,
    /// Always false: the snapshot is kept (the clone runs on its layers).
    pub snapshot_deleted: bool,
}

/// A new VM from a fresh snapshot of a running or suspended one, with its
/// settings.
#[utoipa::path(post, path = "/v1/vms/{vm_id}/clone", tag = "snapshots",
    params(("vm_id" = String, Path), WaitQuery), request_body = CloneRequest,
    responses((status = 200, body = CloneResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn clone_vm(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<WaitQuery>,
    ValidJson(body): ValidJson<CloneRequest>,
) -> Result<Json<CloneResponse>, ApiError> {
    let id = vm_id(&raw)?;
    let name = body.snapshot_name;
    let (vm, snapshot) = state
        .vms()
        .clone_vm(&account, &id, name, q.wait.unwrap_or(true))
        .await?;
    Ok(Json(CloneResponse {
        vm_id: vm.id.to_string(),
        session_id: vm.session_id.to_string(),
        status: super::dto::wire_status(vm.status).to_owned(),
        snapshot_id: snapshot.id.to_string(),
        snapshot_deleted: false,
    }))
}

/// `POST /v1/snapshots`: a snapshot of an image, made asynchronously.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateSnapshotRequest {
    pub oci_image: String,
    pub name: Option<String>,
    /// `user` (default) or `system`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Accepted for the SDK's sake; a snapshot's VM sets its own shape.
    pub vcpu_count: Option<i64>,
    pub memory_mb: Option<i64>,
    /// Built over the image before the snapshot is taken (the SDK's
    /// template publish): `post_build_cmd` runs in a build sandbox,
    /// `template_app_cmd` and `template_app_cwd` become the image's
    /// command. Poll the snapshot until `ready`.
    #[schema(value_type = Option<Object>)]
    pub build_args: Option<Value>,
}

fn kind(raw: Option<&str>, field: &str) -> Result<Option<SnapshotKind>, ApiError> {
    raw.map(|k| {
        // Environment snapshots are the gateway's own: not made or
        // filtered by kind here.
        SnapshotKind::parse(k)
            .filter(|k| *k != SnapshotKind::Environment)
            .ok_or_else(|| {
                ApiError::field(&[field, "type"], "must be user or system", "value_error")
            })
    })
    .transpose()
}

/// Make a snapshot from an OCI image (pulled if needed). Poll
/// `GET /v1/snapshots/{id}` until `ready` or `failed`.
#[utoipa::path(post, path = "/v1/snapshots", tag = "snapshots",
    params(WaitQuery), request_body = CreateSnapshotRequest,
    responses((status = 200, body = SnapshotResponse), (status = 409, body = ErrorDetail),
        (status = 422, body = HttpValidationError),
        (status = 403, body = ErrorDetail, description = "The image's registry is not one the server may use (`only_listed_registries`)"),
        (status = 404, body = ErrorDetail, description = "The image is not in its registry"),
        (status = 502, body = ErrorDetail, description = "The registry could not be reached or refused the request")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidQuery(q): ValidQuery<WaitQuery>,
    ValidJson(body): ValidJson<CreateSnapshotRequest>,
) -> Result<Json<SnapshotResponse>, ApiError> {
    // Checked like a VM's shape, though an image snapshot runs nothing.
    state
        .vms()
        .resources(body.memory_mb, body.vcpu_count, None)?;
    let kind = kind(body.kind.as_deref(), "body")?.unwrap_or(SnapshotKind::User);
    if let Some(args) = body.build_args.filter(|b| !b.is_null()) {
        let args = super::extract::parse_json_value::<paddock_tools::templates::BuildArgs>(
            args,
            "build_args",
        )?;
        let snapshot = state
            .templates
            .build_snapshot(&account, &body.oci_image, body.name, kind, args)
            .await?;
        return Ok(Json(snapshot.into()));
    }
    let snapshot = state
        .service
        .snapshots()
        .from_image(
            &account,
            body.oci_image,
            body.name,
            kind,
            q.wait.unwrap_or(false),
        )
        .await?;
    Ok(Json(snapshot.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListSnapshotsQuery {
    /// `user` or `system`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
}

/// The account's snapshots, newest first.
#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots", params(ListSnapshotsQuery),
    responses((status = 200, body = [SnapshotResponse]), (status = 422, body = HttpValidationError)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidQuery(q): ValidQuery<ListSnapshotsQuery>,
) -> Result<Json<Vec<SnapshotResponse>>, ApiError> {
    let kind = kind(q.kind.as_deref(), "query")?;
    let snapshots = state.service.snapshots().list(&account, kind).await?;
    Ok(Json(snapshots.into_iter().map(Into::into).collect()))
}

#[utoipa::path(get, path = "/v1/snapshots/{snapshot_id}", tag = "snapshots",
    params(("snapshot_id" = String, Path)),
    responses((status = 200, body = SnapshotResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<SnapshotResponse>, ApiError> {
    let snapshot = state
        .service
        .snapshots()
        .get(&account, &snapshot_id(&raw)?)
        .await?;
    Ok(Json(snapshot.into()))
}

/// Delete a snapshot (refused while a VM runs on it); layers nothing else
/// uses are freed.
#[utoipa::path(delete, path = "/v1/snapshots/{snapshot_id}", tag = "snapshots",
    params(("snapshot_id" = String, Path)),
    responses((status = 200, body = SnapshotResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<SnapshotResponse>, ApiError> {
    let snapshot = state
        .service
        .snapshots()
        .delete(&account, &snapshot_id(&raw)?)
        .await?;
    Ok(Json(snapshot.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PushSnapshotRequest {
    /// `registry/repo:tag` to push to.
    pub target: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PushSnapshotResponse {
    pub target: String,
    pub digest: String,
}

/// Push a snapshot to a registry as an ordinary OCI image.
#[utoipa::path(post, path = "/v1/snapshots/{snapshot_id}/push", tag = "snapshots",
    params(("snapshot_id" = String, Path)), request_body = PushSnapshotRequest,
    responses((status = 200, body = PushSnapshotResponse), (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError),
        (status = 403, body = ErrorDetail, description = "The registry is not one the server may use (`only_listed_registries`)"),
        (status = 502, body = ErrorDetail, description = "The registry could not be reached or refused the request")))]
pub(crate) async fn push(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<PushSnapshotRequest>,
) -> Result<Json<PushSnapshotResponse>, ApiError> {
    let digest = state
        .service
        .snapshots()
        .push(&account, &snapshot_id(&raw)?, &body.target)
        .await?;
    Ok(Json(PushSnapshotResponse {
        target: body.target,
        digest,
    }))
}
