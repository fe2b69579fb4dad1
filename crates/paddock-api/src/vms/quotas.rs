//! `GET /v1/quotas`: the caller's account limits, as the operator set them
//! (`[quotas]`), beside what it holds now. A limit of `null` is none.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::Caller;
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaLimits {
    /// VMs holding host resources at once (creating, running, stopping).
    pub max_vms: Option<u64>,
    pub max_memory_mb: Option<u64>,
    pub max_vcpus: Option<u64>,
    /// The sizes of the account's volumes together.
    pub max_volume_mb: Option<u64>,
    /// Its snapshots' sizes together: at or past it, no more user snapshots.
    pub max_snapshot_mb: Option<u64>,
    /// Image builds running at once.
    pub max_image_builds: Option<u64>,
    /// Authenticated requests per second, sustained, on every surface.
    pub requests_per_second: Option<u32>,
    /// Requests above the rate allowed in a burst.
    pub burst: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaUsage {
    pub vms: u64,
    pub memory_mb: u64,
    pub vcpus: u64,
    pub volume_mb: u64,
    pub snapshot_mb: u64,
    pub image_builds: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaResponse {
    pub limits: QuotaLimits,
    pub usage: QuotaUsage,
}

/// The account's quotas and what it uses of them. A create past a
/// capacity limit is a 403 naming the quota; a request past the rate is a
/// 429 with `Retry-After`.
#[utoipa::path(get, path = "/v1/quotas", tag = "quotas",
    responses((status = 200, body = QuotaResponse)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(account): Caller,
) -> Result<Json<QuotaResponse>, ApiError> {
    let (limits, usage) = state.service.quota_and_usage(&account).await?;
    Ok(Json(QuotaResponse {
        limits: QuotaLimits {
            max_vms: limits.max_vms,
            max_memory_mb: limits.max_memory_mb,
            max_vcpus: limits.max_vcpus,
            max_volume_mb: limits.max_volume_mb,
            max_snapshot_mb: limits.max_snapshot_mb,
            max_image_builds: limits.max_image_builds,
            requests_per_second: limits.requests_per_second,
            burst: limits.burst,
        },
        usage: QuotaUsage {
            vms: usage.vms,
            memory_mb: usage.memory_mb,
            vcpus: usage.vcpus,
            volume_mb: usage.volume_mb,
            snapshot_mb: usage.snapshot_mb,
            image_builds: usage.image_builds,
        },
    }))
}
