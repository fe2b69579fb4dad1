//! Node pools: create, get, list, update, delete, `:getStats`,
//! `:batchDelete`.

use axum::extract::{Path, State};
use axum::Json;
use paddock_core::model::gateway::NodePool;
use paddock_gateway::{MetadataPatch, NodePoolInput, NodePoolPatch};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::GatewayError;
use super::from_value;
use super::list::{self, GetQuery, ListQuery, Listing};
use super::update_mask::{self, Cleared, Mutable, UpdateQuery};
use super::wire::{self, NodePoolBody, NODE_POOLS};
use super::{plain_id, split_segment, unknown_method, BatchDeleteBody, GJson, GQuery, Who};
use crate::AppState;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBody {
    node_pool: Option<NodePoolBody>,
    node_pool_id: Option<String>,
}

async fn render(state: &AppState, pool: &NodePool) -> Result<Value, GatewayError> {
    let stats = state.gateway.node_pool_stats(pool).await?;
    Ok(wire::node_pool(pool, &stats))
}

pub async fn create(
    State(state): State<AppState>,
    Who(who): Who,
    GJson(body): GJson<CreateBody>,
) -> Result<Json<Value>, GatewayError> {
    let id = body
        .node_pool_id
        .ok_or_else(|| GatewayError::invalid("nodePoolId", "is required"))?;
    let p = body
        .node_pool
        .ok_or_else(|| GatewayError::invalid("nodePool", "is required"))?;
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

pub async fn list(
    State(state): State<AppState>,
    Who(who): Who,
    GQuery(q): GQuery<ListQuery>,
) -> Result<Json<Value>, GatewayError> {
    let items = state
        .gateway
        .list_node_pools_with_stats(&who.account_id)
        .await?
        .iter()
        .map(|(pool, stats)| wire::node_pool(pool, stats))
        .collect();
    Ok(Json(list::page(&NODE_POOLS, items, &q)?))
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
    path: Path<(String, String)>,
    query: GQuery<GetQuery>,
) -> Result<Json<Value>, GatewayError> {
    super::require_method(&path.1, &["getStats"])?;
    get_or_method(state, who, path, query).await
}

pub async fn get_or_method(
    State(state): State<AppState>,
    Who(who): Who,
    Path((_, segment)): Path<(String, String)>,
    GQuery(q): GQuery<GetQuery>,
) -> Result<Json<Value>, GatewayError> {
    let (id, method) = split_segment(&segment);
    let pool = state.gateway.get_node_pool(&who.account_id, id).await?;
    match method {
        None => Ok(Json(list::apply_read_mask(
            &NODE_POOLS,
            render(&state, &pool).await?,
            q.read_mask.as_deref(),
        )?)),
        Some("getStats") => {
            let stats = state.gateway.node_pool_stats(&pool).await?;
            Ok(Json(list::apply_read_mask(
                &STATS,
                wire::node_pool_stats(&stats),
                q.read_mask.as_deref(),
            )?))
        }
        Some(m) => Err(unknown_method(m, &["getStats"])),
    }
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

pub async fn update(
    State(state): State<AppState>,
    Who(who): Who,
    Path((_, segment)): Path<(String, String)>,
    GQuery(q): GQuery<UpdateQuery>,
    GJson(raw): GJson<Value>,
) -> Result<Json<Value>, GatewayError> {
    let id = plain_id(&segment)?;
    let raw = update_mask::apply(raw, &q, &MUTABLE)?;
    let body: NodePoolBody = from_value(raw)?;
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

pub async fn delete(
    State(state): State<AppState>,
    Who(who): Who,
    Path((_, segment)): Path<(String, String)>,
) -> Result<Json<Value>, GatewayError> {
    let id = plain_id(&segment)?;
    state.gateway.delete_node_pool(&who.account_id, id).await?;
    Ok(Json(json!({})))
}

pub async fn batch_delete(
    State(state): State<AppState>,
    Who(who): Who,
    GJson(body): GJson<BatchDeleteBody>,
) -> Result<Json<Value>, GatewayError> {
    let ids = body.ids(who.account_id.as_str(), "nodePools")?;
    state
        .gateway
        .batch_delete_node_pools(&who.account_id, &ids)
        .await?;
    Ok(Json(json!({})))
}
