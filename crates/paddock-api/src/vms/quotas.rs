//! `GET /v1/quotas`: the caller's account limits, as the operator set them
//! (`[quotas]`), beside what it holds now. A limit of `null` is none.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use paddock_core::quotas::{Quota, Usage};

use super::error::ApiError;
use super::extract::Caller;
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaResponse {
    /// A limit of `null` is none.
    pub limits: Quota,
    pub usage: Usage,
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
    Ok(Json(QuotaResponse { limits, usage }))
}
