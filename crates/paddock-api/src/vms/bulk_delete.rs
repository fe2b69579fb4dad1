//! `POST /v1/vms/bulk-delete`: ending many of the caller's VMs in one
//! call (paddock's own route; the VM API has none).

use axum::extract::State;
use axum::Json;
use paddock_core::model::Metadata;
use paddock_core::vms::bulk_delete::VmSelection;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson};
use super::{session_id, vm_id};
use crate::AppState;

/// Which VMs to delete: those named, those of a session, those whose
/// metadata holds every pair given; what several of them name together.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct BulkDeleteRequest {
    /// At most 10,000.
    #[serde(default)]
    pub vm_ids: Vec<String>,
    pub session_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Metadata,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkDeleteResponse {
    /// How many VMs this call ended.
    pub deleted: usize,
    pub vm_ids: Vec<String>,
    /// VMs it could not end, and why.
    pub failed: Vec<BulkDeleteFailure>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkDeleteFailure {
    pub vm_id: String,
    pub detail: String,
}

/// Terminate many VMs at once: their sandboxes in parallel, their
/// networks released together. VMs that have ended already are skipped.
#[utoipa::path(post, path = "/v1/vms/bulk-delete", tag = "vms",
    request_body = BulkDeleteRequest,
    responses((status = 200, body = BulkDeleteResponse), (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError)))]
pub(crate) async fn bulk_delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<BulkDeleteRequest>,
) -> Result<Json<BulkDeleteResponse>, ApiError> {
    let selection = VmSelection {
        vm_ids: body
            .vm_ids
            .iter()
            .map(|raw| vm_id(raw))
            .collect::<Result<_, _>>()?,
        session_id: body.session_id.as_deref().map(session_id).transpose()?,
        metadata: body.metadata,
    };
    let done = state.vms().delete_vms(&account, selection).await?;
    Ok(Json(BulkDeleteResponse {
        deleted: done.deleted.len(),
        vm_ids: done.deleted.iter().map(ToString::to_string).collect(),
        failed: done
            .failed
            .into_iter()
            .map(|(id, detail)| BulkDeleteFailure {
                vm_id: id.to_string(),
                detail,
            })
            .collect(),
    }))
}
