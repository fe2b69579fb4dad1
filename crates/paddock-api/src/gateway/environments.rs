//! Environments: create, get, list, update, delete, `:connect`,
//! `:disconnect`, `:batchDelete`.

use axum::extract::{Path, State};
use axum::Json;
use paddock_core::model::Principal;
use paddock_gateway::{
    ConnectRequest, DisconnectRequest, EnvironmentInput, EnvironmentPatch, MetadataPatch,
};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::error::GatewayError;
use super::list::{self, GetQuery, ListQuery};
use super::update_mask::{Cleared, Mutable, UpdateQuery};
use super::views::{to_json, DevEnvironmentList, Empty, EnvironmentView};
use super::wire::{self, ConnectionBody, EnvironmentBody, ENVIRONMENTS};
use super::{
    from_value, patch_body, plain_id, required, split_segment, unknown_method, AccountPath,
    BatchDeleteBody, EnvironmentPath, GJson, GQuery, Who,
};
use crate::AppState;

super::create_body!(CreateBody, CreateEnvironmentBody, environment: EnvironmentBody, environment_id, "environment");

#[utoipa::path(post, path = "/v1/accounts/{account_id}/environments", tag = "environments",
    operation_id = "createDevEnvironment", params(AccountPath), request_body = CreateBody,
    responses((status = 200, body = EnvironmentView)))]
pub async fn create(
    State(state): State<AppState>,
    Who(who): Who,
    GJson(body): GJson<CreateBody>,
) -> Result<Json<Value>, GatewayError> {
    let (id, e) = body.into_parts()?;
    let input = EnvironmentInput {
        display_name: e.display_name.unwrap_or_default(),
        base_image_ref: required(
            e.base_image_ref.filter(|r| !r.is_empty()),
            "environment.baseImageRef",
        )?,
        shared: e.shared.unwrap_or(false),
        annotations: e.annotations.unwrap_or_default(),
    };
    let env = state.gateway.create_environment(&who, &id, input).await?;
    Ok(Json(to_json(EnvironmentView::from(&env))))
}

#[utoipa::path(get, path = "/v1/accounts/{account_id}/environments", tag = "environments",
    operation_id = "listDevEnvironments", params(AccountPath, ListQuery),
    responses((status = 200, body = DevEnvironmentList)))]
pub async fn list(
    State(state): State<AppState>,
    Who(who): Who,
    GQuery(q): GQuery<ListQuery>,
) -> Result<Json<DevEnvironmentList>, GatewayError> {
    let items = state
        .gateway
        .list_environments(&who)
        .await?
        .iter()
        .map(|e| to_json(EnvironmentView::from(e)))
        .collect();
    Ok(Json(list::page(&ENVIRONMENTS, items, &q)?.into()))
}

#[utoipa::path(get, path = "/v1/accounts/{account_id}/environments/{environment_id}",
    tag = "environments", operation_id = "getDevEnvironment", params(EnvironmentPath, GetQuery),
    responses((status = 200, body = EnvironmentView)))]
pub async fn get(
    State(state): State<AppState>,
    Who(who): Who,
    Path(path): Path<EnvironmentPath>,
    GQuery(q): GQuery<GetQuery>,
) -> Result<Json<Value>, GatewayError> {
    let id = plain_id(&path.environment_id)?;
    let env = state.gateway.get_environment(&who, id).await?;
    Ok(Json(list::apply_read_mask(
        &ENVIRONMENTS,
        to_json(EnvironmentView::from(&env)),
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

#[utoipa::path(patch, path = "/v1/accounts/{account_id}/environments/{environment_id}",
    tag = "environments", operation_id = "updateDevEnvironment",
    params(EnvironmentPath, UpdateQuery), request_body = EnvironmentBody,
    responses((status = 200, body = EnvironmentView)))]
pub async fn update(
    State(state): State<AppState>,
    Who(who): Who,
    Path(path): Path<EnvironmentPath>,
    GQuery(q): GQuery<UpdateQuery>,
    GJson(raw): GJson<Value>,
) -> Result<Json<Value>, GatewayError> {
    let (id, body): (_, EnvironmentBody) = patch_body(&path.environment_id, raw, &q, &MUTABLE)?;
    let patch = EnvironmentPatch {
        metadata: MetadataPatch {
            display_name: body.display_name,
            annotations: body.annotations,
            shared: body.shared,
        },
        base_image_ref: body.base_image_ref,
    };
    let env = state.gateway.update_environment(&who, id, patch).await?;
    Ok(Json(to_json(EnvironmentView::from(&env))))
}

#[utoipa::path(delete, path = "/v1/accounts/{account_id}/environments/{environment_id}",
    tag = "environments", operation_id = "deleteDevEnvironment", params(EnvironmentPath),
    responses((status = 200, body = Empty)))]
pub async fn delete(
    State(state): State<AppState>,
    Who(who): Who,
    Path(path): Path<EnvironmentPath>,
) -> Result<Json<Empty>, GatewayError> {
    let id = plain_id(&path.environment_id)?;
    state.gateway.delete_environment(&who, id).await?;
    Ok(Json(Empty {}))
}

/// Where to connect, and the editor's version to install.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ConnectEnvironmentBody)]
pub struct ConnectBody {
    /// Required, with its `nodePoolId`.
    connection: Option<ConnectionBody>,
    #[serde(default)]
    vscode_version: String,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = DisconnectEnvironmentBody)]
pub struct DisconnectBody {
    /// Stop without waiting for the snapshot of its home.
    #[serde(default)]
    force: bool,
    /// Drop the environment's snapshots; its next connect starts from the
    /// base image.
    #[serde(default)]
    reset_snapshots: bool,
}

/// POST on an item: `:connect` or `:disconnect`.
pub async fn method(
    State(state): State<AppState>,
    Who(who): Who,
    Path(path): Path<EnvironmentPath>,
    GJson(body): GJson<Value>,
) -> Result<Json<Empty>, GatewayError> {
    match split_segment(&path.environment_id) {
        (id, Some("connect")) => connect(&state, &who, id, from_value(body)?).await,
        (id, Some("disconnect")) => disconnect(&state, &who, id, from_value(body)?).await,
        (_, m) => Err(unknown_method(
            m.unwrap_or_default(),
            &["connect", "disconnect"],
        )),
    }
}

#[utoipa::path(post, path = "/v1/accounts/{account_id}/environments/{environment_id}:connect",
    tag = "environments", operation_id = "connectDevEnvironment", params(EnvironmentPath),
    request_body = ConnectBody, responses((status = 200, body = Empty)))]
async fn connect(
    state: &AppState,
    who: &Principal,
    id: &str,
    body: ConnectBody,
) -> Result<Json<Empty>, GatewayError> {
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
    state.gateway.connect_environment(who, id, req).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(post, path = "/v1/accounts/{account_id}/environments/{environment_id}:disconnect",
    tag = "environments", operation_id = "disconnectDevEnvironment", params(EnvironmentPath),
    request_body = DisconnectBody, responses((status = 200, body = Empty)))]
async fn disconnect(
    state: &AppState,
    who: &Principal,
    id: &str,
    body: DisconnectBody,
) -> Result<Json<Empty>, GatewayError> {
    let req = DisconnectRequest {
        force: body.force,
        reset_snapshots: body.reset_snapshots,
    };
    state.gateway.disconnect_environment(who, id, req).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(post, path = "/v1/accounts/{account_id}/environments:batchDelete",
    tag = "environments", operation_id = "batchDeleteDevEnvironments", params(AccountPath),
    request_body = BatchDeleteBody, responses((status = 200, body = Empty)))]
pub async fn batch_delete(
    State(state): State<AppState>,
    Who(who): Who,
    GJson(body): GJson<BatchDeleteBody>,
) -> Result<Json<Empty>, GatewayError> {
    let ids = body.ids(who.account_id.as_str(), "environments")?;
    state.gateway.batch_delete_environments(&who, &ids).await?;
    Ok(Json(Empty {}))
}
