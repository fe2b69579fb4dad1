//! `/v1/vms`: create, list, get, update, delete.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use paddock_core::exposed::{DomainRequest, Exposure};
use paddock_core::ids::VaultId;
use paddock_core::model::{VmFilter, VmPatch, VmStatusSet};

use super::dto::{
    parse_wire_status, CreateVmRequest, ListVmsQuery, PatchVmRequest, VmResponse, WaitQuery,
};
use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidPath, ValidQuery};
use super::{lifetime, vm_id, vm_spec, VmSettings};
use crate::AppState;

/// Create a VM.
#[utoipa::path(post, path = "/v1/vms", tag = "vms", params(WaitQuery),
    request_body = CreateVmRequest,
    responses((status = 200, body = VmResponse), (status = 422, body = HttpValidationError), (status = 401, body = ErrorDetail),
        (status = 404, body = ErrorDetail, description = "A snapshot, image, volume or vault the body names does not exist"),
        (status = 409, body = ErrorDetail, description = "A custom domain the body asks for is routed already"),
        (status = 403, body = ErrorDetail, description = "A quota of the account would be exceeded (max_vms, max_memory_mb, max_vcpus: the message names it), or the image's registry is not one the server may use (`only_listed_registries`)"), (status = 502, body = ErrorDetail, description = "The registry could not be reached or refused the request"),
        (status = 503, body = ErrorDetail, description = "The host has no room for another sandbox (addresses, ids)")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidQuery(q): ValidQuery<WaitQuery>,
    ValidJson(body): ValidJson<CreateVmRequest>,
) -> Result<Json<VmResponse>, ApiError> {
    let share = body
        .share
        .as_ref()
        .filter(|v| !v.is_null())
        .map(super::shares::parse_create_share)
        .transpose()?;
    let domain = body
        .custom_domain
        .as_ref()
        .filter(|v| !v.is_null())
        .map(super::domains::parse_vm_domain)
        .transpose()?;
    if domain.is_some() && share.is_none() {
        return Err(ApiError::body_field(
            "custom_domain",
            "a custom domain routes to the VM's share: set share too",
        ));
    }
    let spec = vm_spec(
        &state.service,
        VmSettings {
            session_id: body.session_id,
            vm_lifetime_seconds: body.vm_lifetime_seconds,
            memory_mb: body.memory_mb,
            vcpu_count: body.vcpu_count,
            disk_mb: body.disk_mb,
            metadata: body.metadata,
            env: body.env,
            image_variant: body.image_variant,
            snapshot_id: body.snapshot_id,
            snapshot_on_terminate: body.snapshot_on_terminate,
            snapshot_name: body.snapshot_name,
            vault_ids: body.vault_ids,
            volumes: body.volumes,
            egress_policy: body.egress_policy,
            provider: body.provider,
            auto_suspend: body.auto_suspend,
            auto_resume: body.auto_resume,
        },
    )?;
    if paddock_tools::desktops::is_desktop(&spec) {
        // A desktop is viewed through its viewer (a share made with it
        // would be a second door), and answers once it is up.
        if share.is_some() {
            return Err(ApiError::body_field(
                "share",
                "a computer-use desktop is viewed through GET /v1/computeruse/{session_id}/viewer-url",
            ));
        }
        let vm = state.desktops.create(&account, spec).await?;
        return Ok(Json(VmResponse::from(&vm)));
    }
    let exposure = share.map(|(port, is_public)| Exposure {
        port,
        is_public,
        domain: domain.map(|d| DomainRequest {
            domain: d.domain,
            dns_provider: d.dns_provider,
            dns_credentials: d.dns_credentials,
        }),
    });
    let created = state
        .vms()
        .create_exposed_vm(&account, spec, q.wait.unwrap_or(true), exposure)
        .await?;
    let mut response = VmResponse::from(&created.vm);
    response.share = created
        .share
        .map(|s| serde_json::json!(super::shares::share_response(&state.share_urls, &s)));
    response.custom_domain = created
        .domain
        .map(|d| serde_json::json!(super::domains::domain_response(&state.share_urls, &d)));
    Ok(Json(response))
}

async fn list(
    state: AppState,
    account: paddock_core::ids::AccountId,
    q: ListVmsQuery,
    all: bool,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field(
            &["query", "limit"],
            "must be between 1 and 1000",
            "value_error",
        ));
    }
    let statuses = match (&q.status, all || q.include_terminated.unwrap_or(false)) {
        (Some(s), _) => VmStatusSet::of(&[parse_wire_status(s).ok_or_else(|| {
            ApiError::field(
                &["query", "status"],
                format!("unknown status {s:?}"),
                "value_error",
            )
        })?]),
        (None, true) => VmStatusSet::default(),
        (None, false) => VmStatusSet::active(),
    };
    let filter = VmFilter {
        session_id: q
            .session_id
            .map(|s| {
                s.parse().map_err(|e: paddock_core::ids::InvalidId| {
                    ApiError::field(&["query", "session_id"], e.to_string(), "value_error")
                })
            })
            .transpose()?,
        statuses,
        after: q
            .cursor
            .map(|c| {
                c.parse().map_err(|_| {
                    ApiError::field(
                        &["query", "cursor"],
                        "not a cursor from this API",
                        "value_error",
                    )
                })
            })
            .transpose()?,
        // One more than asked tells whether another page exists.
        limit: limit + 1,
    };
    let mut vms = state.vms().list_vms(&account, &filter).await?;
    let mut headers = HeaderMap::new();
    if vms.len() > limit as usize {
        vms.truncate(limit as usize);
        if let Some(last) = vms.last() {
            if let Ok(v) = last.id.as_str().parse() {
                headers.insert("x-next-cursor", v);
            }
        }
    }
    let body: Vec<VmResponse> = vms.iter().map(VmResponse::from).collect();
    Ok((headers, Json(body)).into_response())
}

/// List VMs: creating and active ones unless `include_terminated` or a
/// `status` is given; newest first; the `x-next-cursor` header, when
/// present, fetches the next page.
#[utoipa::path(get, path = "/v1/vms", tag = "vms", params(ListVmsQuery),
    responses((status = 200, body = Vec<VmResponse>), (status = 422, body = HttpValidationError)))]
pub(crate) async fn list_active(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidQuery(q): ValidQuery<ListVmsQuery>,
) -> Result<Response, ApiError> {
    list(state, account, q, false).await
}

/// List every VM record, ended ones included.
#[utoipa::path(get, path = "/v1/vms/", tag = "vms", params(ListVmsQuery),
    responses((status = 200, body = Vec<VmResponse>)))]
pub(crate) async fn list_all(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidQuery(q): ValidQuery<ListVmsQuery>,
) -> Result<Response, ApiError> {
    list(state, account, q, true).await
}

/// Suspend a running VM: its provider saves its memory and filesystem
/// into the data dir and stops it (no process, memory or CPU held); it
/// rests `suspended` until resumed or deleted. A microVM started from an
/// image can; the others answer 409 saying why.
#[utoipa::path(post, path = "/v1/vms/{vm_id}/suspend", tag = "vms",
    params(("vm_id" = String, Path)),
    responses((status = 200, body = VmResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail)))]
pub(crate) async fn suspend(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<VmResponse>, ApiError> {
    let vm = state.vms().suspend_vm(&account, &vm_id(&raw)?).await?;
    Ok(Json(VmResponse::from(&vm)))
}

/// Resume a suspended VM where it was: the same processes and memory, the
/// same `vm_id`, session, address, shares and egress policy. It answers
/// once the VM runs; with `wait=false`, at once, the VM still `suspended`
/// until it runs (a resume that fails leaves its reason in
/// `status_reason`).
#[utoipa::path(post, path = "/v1/vms/{vm_id}/resume", tag = "vms",
    params(("vm_id" = String, Path), WaitQuery),
    responses((status = 200, body = VmResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail)))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<WaitQuery>,
) -> Result<Json<VmResponse>, ApiError> {
    let id = vm_id(&raw)?;
    let vm = if q.wait.unwrap_or(true) {
        state.vms().resume_vm(&account, &id).await?
    } else {
        state.vms().dispatch_resume(&account, &id).await?
    };
    Ok(Json(VmResponse::from(&vm)))
}

/// Get a VM.
#[utoipa::path(get, path = "/v1/vms/{vm_id}", tag = "vms",
    params(("vm_id" = String, Path)),
    responses((status = 200, body = VmResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<VmResponse>, ApiError> {
    let vm = state.vms().get_vm(&account, &vm_id(&raw)?).await?;
    Ok(Json(VmResponse::from(&vm)))
}

/// Change a running VM: metadata, lifetime (counted from now), memory and
/// vCPUs (applied to its cgroups at once).
#[utoipa::path(patch, path = "/v1/vms/{vm_id}", tag = "vms",
    params(("vm_id" = String, Path)), request_body = PatchVmRequest,
    responses((status = 200, body = VmResponse), (status = 404, body = ErrorDetail), (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn patch(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<PatchVmRequest>,
) -> Result<Json<VmResponse>, ApiError> {
    let id = vm_id(&raw)?;
    if let Some(name) = &body.snapshot_name {
        paddock_core::model::validate_name(name)
            .map_err(|m| ApiError::body_field("snapshot_name", m))?;
    }
    let patch = VmPatch {
        metadata: body.metadata,
        lifetime_seconds: lifetime(body.vm_lifetime_seconds)?,
        memory_mb: body.memory_mb,
        vcpu_count: body.vcpu_count,
        snapshot_on_terminate: body.snapshot_on_terminate,
        snapshot_name: body.snapshot_name,
        egress_policy: body
            .egress_policy
            .filter(|v| !v.is_null())
            .map(|v| super::egress_policy(&v, "egress_policy"))
            .transpose()?,
        vault_ids: vault_ids_patch(body.vault_ids)?,
        auto_suspend: body.auto_suspend,
        auto_resume: body.auto_resume,
    };
    let vm = state.vms().patch_vm(&account, &id, patch).await?;
    Ok(Json(VmResponse::from(&vm)))
}

/// Terminate a VM and free everything it held. Idempotent.
#[utoipa::path(delete, path = "/v1/vms/{vm_id}", tag = "vms",
    params(("vm_id" = String, Path)),
    responses((status = 200, body = VmResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<VmResponse>, ApiError> {
    let vm = state.vms().delete_vm(&account, &vm_id(&raw)?).await?;
    Ok(Json(VmResponse::from(&vm)))
}

/// PATCH's `vault_ids`: absent or null changes nothing.
fn vault_ids_patch(raw: Option<Vec<String>>) -> Result<Option<Vec<VaultId>>, ApiError> {
    raw.map(|ids| super::vault_ids(Some(ids))).transpose()
}
