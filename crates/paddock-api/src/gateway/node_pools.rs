//! Node pools: create, get, list, update, delete, `:getStats`,
//! `:batchDelete`.

use axum::extract::{Path, State};
use axum::Json;
use paddock_core::model::gateway::NodePool;
use paddock_core::model::Principal;
use paddock_gateway::{MetadataPatch, NodePoolInput, NodePoolPatch};
use serde_json::Value;

use super::error::GatewayError;
use super::list::{self, GetQuery, ListQuery, Listing};
use super::update_mask::{Cleared, Mutable, UpdateQuery};
use super::views::{to_json, Empty, NodePoolList, NodePoolStatsView, NodePoolView};
use super::wire::{NodePoolBody, NODE_POOLS};
use super::{
    patch_body, plain_id, split_segment, unknown_method, AccountPath, BatchDeleteBody, GJson,
    GQuery, NodePoolPath, Who,
};
use crate::AppState;

super::create_body!(CreateBody, CreateNodePoolBody, node_pool: NodePoolBody, node_pool_id, "node pool");

async fn render(state: &AppState, pool: &NodePool) -> Result<Value, GatewayError> {
    let stats = state.gateway.node_pool_stats(pool).await?;
    Ok(to_json(NodePoolView::new(pool, &stats)))
}

#[utoipa::path(post, path = "/v1/accounts/{account_id}/nodePools", tag = "nodePools",
    operation_id = "createNodePool", params(AccountPath), request_body = CreateBody,
    responses((status = 200, body = NodePoolView)))]
pub async fn create(
    State(state): State<AppState>,
    Who(who): Who,
    GJson(body): GJson<CreateBody>,
) -> Result<Json<Value>, GatewayError> {
    let (id, p) = body.into_parts()?;
    let input = NodePoolInput {
        display_name: p.display_name.unwrap_or_default(),
        min_node_count: p.min_node_count,
        max_node_count: p.max_node_count,
        overprovision_node_count: p.overprovision_node_count,
        fake_node_pool: p.fake_node_pool.map(Into::into),
        eks_node_pool: p.eks_node_pool.map(Into::into),
        annotations: p.annotations.unwrap_or_default(),
        cluster_id: p.cluster_id,
    };
    let pool = state
        .gateway
        .create_node_pool(&who.account_id, &id, input)
        .await?;
    Ok(Json(render(&state, &pool).await?))
}

#[utoipa::path(get, path = "/v1/accounts/{account_id}/nodePools", tag = "nodePools",
    operation_id = "listNodePools", params(AccountPath, ListQuery),
    responses((status = 200, body = NodePoolList)))]
pub async fn list(
    State(state): State<AppState>,
    Who(who): Who,
    GQuery(q): GQuery<ListQuery>,
) -> Result<Json<NodePoolList>, GatewayError> {
    let items = state
        .gateway
        .list_node_pools_with_stats(&who.account_id)
        .await?
        .iter()
        .map(|(pool, stats)| to_json(NodePoolView::new(pool, stats)))
        .collect();
    Ok(Json(list::page(&NODE_POOLS, items, &q)?.into()))
}

const STATS: Listing = Listing {
    plural: "",
    fields: &[
        "nodeCount",
        "ranksPerNode",
        "environmentCount",
        "environmentRanks",
        "batchJobCount",
        "batchJobRanks",
    ],
    default_order: "nodeCount",
};

/// POST on an item: its getter custom method only (`:getStats`), as
/// AIP-136 clients send it.
pub async fn post_method(
    state: State<AppState>,
    who: Who,
    path: Path<NodePoolPath>,
    query: GQuery<GetQuery>,
) -> Result<Json<Value>, GatewayError> {
    super::require_method(&path.node_pool_id, &["getStats"])?;
    get_or_method(state, who, path, query).await
}

/// GET on an item: the pool, or its `:getStats`.
pub async fn get_or_method(
    State(state): State<AppState>,
    Who(who): Who,
    Path(path): Path<NodePoolPath>,
    GQuery(q): GQuery<GetQuery>,
) -> Result<Json<Value>, GatewayError> {
    match split_segment(&path.node_pool_id) {
        (id, None) => get(&state, &who, id, q).await,
        (id, Some("getStats")) => get_stats(&state, &who, id, q).await,
        (_, Some(m)) => Err(unknown_method(m, &["getStats"])),
    }
}

#[utoipa::path(get, path = "/v1/accounts/{account_id}/nodePools/{node_pool_id}", tag = "nodePools",
    operation_id = "getNodePool", params(NodePoolPath, GetQuery),
    responses((status = 200, body = NodePoolView)))]
async fn get(
    state: &AppState,
    who: &Principal,
    id: &str,
    q: GetQuery,
) -> Result<Json<Value>, GatewayError> {
    let pool = state.gateway.get_node_pool(&who.account_id, id).await?;
    Ok(Json(list::apply_read_mask(
        &NODE_POOLS,
        render(state, &pool).await?,
        q.read_mask.as_deref(),
    )?))
}

/// Also answers POST (AIP-136's convention for custom methods).
#[utoipa::path(get, path = "/v1/accounts/{account_id}/nodePools/{node_pool_id}:getStats",
    tag = "nodePools", operation_id = "getNodePoolStats", params(NodePoolPath, GetQuery),
    responses((status = 200, body = NodePoolStatsView)))]
async fn get_stats(
    state: &AppState,
    who: &Principal,
    id: &str,
    q: GetQuery,
) -> Result<Json<Value>, GatewayError> {
    let pool = state.gateway.get_node_pool(&who.account_id, id).await?;
    let stats = state.gateway.node_pool_stats(&pool).await?;
    Ok(Json(list::apply_read_mask(
        &STATS,
        to_json(NodePoolStatsView::from(&stats)),
        q.read_mask.as_deref(),
    )?))
}

/// What a PATCH may change (see `update_mask.rs`).
const MUTABLE: Mutable = Mutable {
    listing: &NODE_POOLS,
    fields: &[
        ("displayName", Cleared::Text),
        ("annotations", Cleared::Map),
        ("minNodeCount", Cleared::Count),
        ("maxNodeCount", Cleared::Count),
        ("overprovisionNodeCount", Cleared::Count),
    ],
};

#[utoipa::path(patch, path = "/v1/accounts/{account_id}/nodePools/{node_pool_id}", tag = "nodePools",
    operation_id = "updateNodePool", params(NodePoolPath, UpdateQuery), request_body = NodePoolBody,
    responses((status = 200, body = NodePoolView)))]
pub async fn update(
    State(state): State<AppState>,
    Who(who): Who,
    Path(path): Path<NodePoolPath>,
    GQuery(q): GQuery<UpdateQuery>,
    GJson(raw): GJson<Value>,
) -> Result<Json<Value>, GatewayError> {
    let (id, body): (_, NodePoolBody) = patch_body(&path.node_pool_id, raw, &q, &MUTABLE)?;
    if body.eks_node_pool.is_some() || body.fake_node_pool.is_some() {
        return Err(GatewayError::invalid(
            "fakeNodePool",
            "a node pool's backend is set at creation",
        ));
    }
    if let Some(cluster) = &body.cluster_id {
        let current = state.gateway.get_node_pool(&who.account_id, id).await?;
        if *cluster != current.cluster_id {
            return Err(GatewayError::invalid(
                "clusterId",
                "a node pool's cluster is set at creation",
            ));
        }
    }
    let patch = NodePoolPatch {
        metadata: MetadataPatch {
            display_name: body.display_name,
            annotations: body.annotations,
            shared: None,
        },
        min_node_count: body.min_node_count,
        max_node_count: body.max_node_count,
        overprovision_node_count: body.overprovision_node_count,
    };
    let pool = state
        .gateway
        .update_node_pool(&who.account_id, id, patch)
        .await?;
    Ok(Json(render(&state, &pool).await?))
}

#[utoipa::path(delete, path = "/v1/accounts/{account_id}/nodePools/{node_pool_id}", tag = "nodePools",
    operation_id = "deleteNodePool", params(NodePoolPath),
    responses((status = 200, body = Empty)))]
pub async fn delete(
    State(state): State<AppState>,
    Who(who): Who,
    Path(path): Path<NodePoolPath>,
) -> Result<Json<Empty>, GatewayError> {
    let id = plain_id(&path.node_pool_id)?;
    state.gateway.delete_node_pool(&who.account_id, id).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(post, path = "/v1/accounts/{account_id}/nodePools:batchDelete", tag = "nodePools",
    operation_id = "batchDeleteNodePools", params(AccountPath), request_body = BatchDeleteBody,
    responses((status = 200, body = Empty)))]
pub async fn batch_delete(
    State(state): State<AppState>,
    Who(who): Who,
    GJson(body): GJson<BatchDeleteBody>,
) -> Result<Json<Empty>, GatewayError> {
    let ids = body.ids(who.account_id.as_str(), "nodePools")?;
    state
        .gateway
        .batch_delete_node_pools(&who.account_id, &ids)
        .await?;
    Ok(Json(Empty {}))
}
