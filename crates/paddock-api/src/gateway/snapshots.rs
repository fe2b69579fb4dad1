//! Environment snapshots: list, get, delete. They are taken by
//! `:disconnect`; nothing else makes one.

use axum::extract::{Path, State};
use axum::Json;
use paddock_core::model::gateway::StatusCode;
use serde_json::{json, Value};

use super::error::GatewayError;
use super::list::{self, GetQuery, ListQuery};
use super::wire::{self, SNAPSHOTS};
use super::{GQuery, Who};
use crate::AppState;

pub async fn list(
    State(state): State<AppState>,
    Who(who): Who,
    GQuery(q): GQuery<ListQuery>,
) -> Result<Json<Value>, GatewayError> {
    let items = state
        .gateway
        .list_environment_snapshots(&who)
        .await?
        .iter()
        .map(|(env, s)| wire::snapshot(&who.account_id, env, s))
        .collect();
    Ok(Json(list::page(&SNAPSHOTS, items, &q)?))
}

pub async fn create(Who(_): Who) -> Result<Json<Value>, GatewayError> {
    Err(GatewayError::Status(
        StatusCode::Unimplemented,
        "snapshots are taken when an environment disconnects (:disconnect); they cannot be created directly".into(),
    ))
}

pub async fn get(
    State(state): State<AppState>,
    Who(who): Who,
    Path((_, id)): Path<(String, String)>,
    GQuery(q): GQuery<GetQuery>,
) -> Result<Json<Value>, GatewayError> {
    let (env, s) = state.gateway.get_environment_snapshot(&who, &id).await?;
    Ok(Json(list::apply_read_mask(
        &SNAPSHOTS,
        wire::snapshot(&who.account_id, &env, &s),
        q.read_mask.as_deref(),
    )?))
}

pub async fn delete(
    State(state): State<AppState>,
    Who(who): Who,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, GatewayError> {
    state.gateway.delete_environment_snapshot(&who, &id).await?;
    Ok(Json(json!({})))
}
