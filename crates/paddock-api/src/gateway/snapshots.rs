//! Environment snapshots: list, get, delete. They are taken by
//! `:disconnect`; nothing else makes one.

use axum::extract::{Path, State};
use axum::Json;
use paddock_core::model::gateway::StatusCode;
use serde_json::Value;

use super::error::GatewayError;
use super::list::{self, GetQuery, ListQuery};
use super::views::{to_json, Empty, SnapshotList, SnapshotView};
use super::wire::SNAPSHOTS;
use super::{AccountPath, GQuery, SnapshotPath, Who};
use crate::AppState;

#[utoipa::path(get, path = "/v1/accounts/{account_id}/snapshots", tag = "snapshots",
    operation_id = "listSnapshots", params(AccountPath, ListQuery),
    responses((status = 200, body = SnapshotList)))]
pub async fn list(
    State(state): State<AppState>,
    Who(who): Who,
    GQuery(q): GQuery<ListQuery>,
) -> Result<Json<SnapshotList>, GatewayError> {
    let items = state
        .gateway
        .list_environment_snapshots(&who)
        .await?
        .iter()
        .map(|(env, s)| to_json(SnapshotView::new(&who.account_id, env, s)))
        .collect();
    Ok(Json(list::page(&SNAPSHOTS, items, &q)?.into()))
}

/// Refused (UNIMPLEMENTED): not in the document.
pub async fn create(Who(_): Who) -> Result<Json<Empty>, GatewayError> {
    Err(GatewayError::Status(
        StatusCode::Unimplemented,
        "snapshots are taken when an environment disconnects (:disconnect); they cannot be created directly".into(),
    ))
}

#[utoipa::path(get, path = "/v1/accounts/{account_id}/snapshots/{snapshot_id}", tag = "snapshots",
    operation_id = "getSnapshot", params(SnapshotPath, GetQuery),
    responses((status = 200, body = SnapshotView)))]
pub async fn get(
    State(state): State<AppState>,
    Who(who): Who,
    Path(path): Path<SnapshotPath>,
    GQuery(q): GQuery<GetQuery>,
) -> Result<Json<Value>, GatewayError> {
    let (env, s) = state
        .gateway
        .get_environment_snapshot(&who, &path.snapshot_id)
        .await?;
    Ok(Json(list::apply_read_mask(
        &SNAPSHOTS,
        to_json(SnapshotView::new(&who.account_id, &env, &s)),
        q.read_mask.as_deref(),
    )?))
}

#[utoipa::path(delete, path = "/v1/accounts/{account_id}/snapshots/{snapshot_id}", tag = "snapshots",
    operation_id = "deleteSnapshot", params(SnapshotPath),
    responses((status = 200, body = Empty)))]
pub async fn delete(
    State(state): State<AppState>,
    Who(who): Who,
    Path(path): Path<SnapshotPath>,
) -> Result<Json<Empty>, GatewayError> {
    state
        .gateway
        .delete_environment_snapshot(&who, &path.snapshot_id)
        .await?;
    Ok(Json(Empty {}))
}
