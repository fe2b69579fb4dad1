//! Environments: create, get, list, update, delete, `:connect`,
//! `:disconnect`, `:batchDelete`.

use axum::extract::{Path, State};
use axum::Json;
use paddock_gateway::{
    ConnectRequest, DisconnectRequest, EnvironmentInput, EnvironmentPatch, MetadataPatch,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::GatewayError;
use super::list::{self, GetQuery, ListQuery};
use super::update_mask::{self, Cleared, Mutable, UpdateQuery};
use super::wire::{self, ConnectionBody, EnvironmentBody, ENVIRONMENTS};
use super::{
    from_value, plain_id, split_segment, unknown_method, BatchDeleteBody, GJson, GQuery, Who,
};
use crate::AppState;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBody {
    environment: Option<EnvironmentBody>,
    environment_id: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    Who(who): Who,
    GJson(body): GJson<CreateBody>,
) -> Result<Json<Value>, GatewayError> {
    let id = body
        .environment_id
        .ok_or_else(|| GatewayError::invalid("environmentId", "is required"))?;
    let e = body
        .environment
        .ok_or_else(|| GatewayError::invalid("environment", "is required"))?;
    let input = EnvironmentInput {
        display_name: e.display_name.unwrap_or_default(),
        base_image_ref: e
            .base_image_ref
            .filter(|r| !r.is_empty())
            .ok_or_else(|| GatewayError::invalid("environment.baseImageRef", "is required"))?,
        shared: e.shared.unwrap_or(false),
        annotations: e.annotations.unwrap_or_default(),
    };
    let env = state.gateway.create_environment(&who, &id, input).await?;
    Ok(Json(wire::environment(&env)))
}

pub async fn list(
    State(state): State<AppState>,
    Who(who): Who,
    GQuery(q): GQuery<ListQuery>,
) -> Result<Json<Value>, GatewayError> {
    let items = state
        .gateway
        .list_environments(&who)
        .await?
        .iter()
        .map(wire::environment)
        .collect();
    Ok(Json(list::page(&ENVIRONMENTS, items, &q)?))
}

pub async fn get(
    State(state): State<AppState>,
    Who(who): Who,
    Path((_, segment)): Path<(String, String)>,
    GQuery(q): GQuery<GetQuery>,
) -> Result<Json<Value>, GatewayError> {
    let id = plain_id(&segment)?;
    let env = state.gateway.get_environment(&who, id).await?;
    Ok(Json(list::apply_read_mask(
        &ENVIRONMENTS,
        wire::environment(&env),
        q.read_mask.as_deref(),
    )?))
}

/// What a PATCH may change (see `update_mask.rs`).
const MUTABLE: Mutable = Mutable {
    listing: &ENVIRONMENTS,
    fields: &[
        ("displayName", Cleared::Text),
        ("baseImageRef", Cleared::Text),
        ("shared", Cleared::Flag),
        ("annotations", Cleared::Map),
    ],
};

pub async fn update(
    State(state): State<AppState>,
    Who(who): Who,
    Path((_, segment)): Path<(String, String)>,
    GQuery(q): GQuery<UpdateQuery>,
    GJson(raw): GJson<Value>,
) -> Result<Json<Value>, GatewayError> {
    let id = plain_id(&segment)?;
    let raw = update_mask::apply(raw, &q, &MUTABLE)?;
    let body: EnvironmentBody = from_value(raw)?;
    let patch = EnvironmentPatch {
        metadata: MetadataPatch {
            display_name: body.display_name,
            annotations: body.annotations,
            shared: body.shared,
        },
        base_image_ref: body.base_image_ref,
    };
    let env = state.gateway.update_environment(&who, id, patch).await?;
    Ok(Json(wire::environment(&env)))
}

pub async fn delete(
    State(state): State<AppState>,
    Who(who): Who,
    Path((_, segment)): Path<(String, String)>,
) -> Result<Json<Value>, GatewayError> {
    let id = plain_id(&segment)?;
    state.gateway.delete_environment(&who, id).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectBody {
    connection: Option<ConnectionBody>,
    #[serde(default)]
    vscode_version: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisconnectBody {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    reset_snapshots: bool,
}

/// `:connect` and `:disconnect`.
pub async fn method(
    State(state): State<AppState>,
    Who(who): Who,
    Path((_, segment)): Path<(String, String)>,
    GJson(body): GJson<Value>,
) -> Result<Json<Value>, GatewayError> {
    let (id, method) = split_segment(&segment);
    match method {
        Some("connect") => {
            let body: ConnectBody = from_value(body)?;
            let c = body
                .connection
                .ok_or_else(|| GatewayError::invalid("connection", "is required"))?;
            let req = ConnectRequest {
                node_pool_id: c
                    .node_pool_id
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| GatewayError::invalid("connection.nodePoolId", "is required"))?,
                num_ranks: wire::ranks("connection.numRanks", c.num_ranks)?.unwrap_or(1),
                role: c.role,
                use_local_storage: c.use_local_storage,
                vscode_version: body.vscode_version,
            };
            state.gateway.connect_environment(&who, id, req).await?;
        }
        Some("disconnect") => {
            let body: DisconnectBody = from_value(body)?;
            let req = DisconnectRequest {
                force: body.force,
                reset_snapshots: body.reset_snapshots,
            };
            state.gateway.disconnect_environment(&who, id, req).await?;
        }
        Some(m) => return Err(unknown_method(m, &["connect", "disconnect"])),
        None => return Err(unknown_method("", &["connect", "disconnect"])),
    }
    Ok(Json(json!({})))
}

pub async fn batch_delete(
    State(state): State<AppState>,
    Who(who): Who,
    GJson(body): GJson<BatchDeleteBody>,
) -> Result<Json<Value>, GatewayError> {
    let ids = body.ids(who.account_id.as_str(), "environments")?;
    state.gateway.batch_delete_environments(&who, &ids).await?;
    Ok(Json(json!({})))
}
