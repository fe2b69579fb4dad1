//! A VM's host counters as they are now (`GET /v1/vms/{vm_id}/metrics`):
//! the CPU time and memory its cgroup has charged, and the limits it runs
//! under. The counters only grow (CPU) or move (memory); a client that
//! wants a rate reads twice and divides, so the server keeps no history.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorDetail};
use super::extract::{Caller, ValidPath};
use super::vm_id;
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct VmMetrics {
    pub vm_id: String,
    /// When the counters were read, RFC 3339.
    pub sampled_at: String,
    /// CPU time used since the VM started, in seconds; `null` where its
    /// provider keeps no counters.
    pub cpu_seconds: Option<f64>,
    /// Memory charged to the VM now (page cache included), in bytes.
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: u64,
    pub vcpu_count: u32,
}

/// A running VM's CPU time and memory now, from its cgroup.
#[utoipa::path(get, path = "/v1/vms/{vm_id}/metrics", tag = "vms",
    params(("vm_id" = String, Path)),
    responses((status = 200, body = VmMetrics), (status = 404, body = ErrorDetail), (status = 409, body = ErrorDetail)))]
pub(crate) async fn vm_metrics(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<VmMetrics>, ApiError> {
    let (vm, counters) = state.vms().running_usage(&account, &vm_id(&raw)?).await?;
    Ok(Json(VmMetrics {
        vm_id: vm.id.to_string(),
        sampled_at: paddock_core::clock::Timestamp::now().to_rfc3339(),
        cpu_seconds: counters.map(|c| c.cpu_ns as f64 / 1e9),
        memory_bytes: counters.map(|c| c.memory_bytes),
        memory_limit_bytes: u64::from(vm.resources.memory_mb()) * 1024 * 1024,
        vcpu_count: vm.resources.vcpu_count(),
    }))
}
