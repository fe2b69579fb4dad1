//! Clusters: create, get, list, update, delete, `:getConnectionInfo`.

use axum::extract::{Path, State};
use axum::Json;
use paddock_core::model::gateway::ClusterBackend;
use paddock_core::model::Principal;
use paddock_gateway::{ClusterInput, ClusterPatch};
use serde_json::Value;

use super::error::GatewayError;
use super::list::{self, GetQuery, ListQuery};
use super::update_mask::{Cleared, Mutable, UpdateQuery};
use super::views::{to_json, ClusterList, ClusterView, ConnectionInfo, Empty};
use super::wire::{ClusterBody, CLUSTERS};
use super::{
    patch_body, plain_id, split_segment, unknown_method, AccountPath, ClusterPath, GJson, GQuery,
    Who,
};
use crate::AppState;

super::create_body!(CreateBody, CreateClusterBody, cluster: ClusterBody, cluster_id, "cluster");

#[utoipa::path(post, path = "/v1/accounts/{account_id}/clusters", tag = "clusters",
    operation_id = "createCluster", params(AccountPath), request_body = CreateBody,
    responses((status = 200, body = ClusterView)))]
pub async fn create(
    State(state): State<AppState>,
    Who(who): Who,
    GJson(body): GJson<CreateBody>,
) -> Result<Json<Value>, GatewayError> {
    let (id, c) = body.into_parts()?;
    let input = ClusterInput {
        display_name: c.display_name.unwrap_or_default(),
        fake_cluster: c.fake_cluster.map(Into::into),
        eks_cluster: c.eks_cluster.map(Into::into),
    };
    let cluster = state
        .gateway
        .create_cluster(&who.account_id, &id, input)
        .await?;
    Ok(Json(to_json(ClusterView::from(&cluster))))
}

#[utoipa::path(get, path = "/v1/accounts/{account_id}/clusters", tag = "clusters",
    operation_id = "listClusters", params(AccountPath, ListQuery),
    responses((status = 200, body = ClusterList)))]
pub async fn list(
    State(state): State<AppState>,
    Who(who): Who,
    GQuery(q): GQuery<ListQuery>,
) -> Result<Json<ClusterList>, GatewayError> {
    let items = state
        .gateway
        .list_clusters(&who.account_id)
        .await?
        .iter()
        .map(|c| to_json(ClusterView::from(c)))
        .collect();
    Ok(Json(list::page(&CLUSTERS, items, &q)?.into()))
}

/// POST on an item: its getter custom method only (`:getConnectionInfo`), as
/// AIP-136 clients send it.
pub async fn post_method(
    state: State<AppState>,
    who: Who,
    path: Path<ClusterPath>,
    query: GQuery<GetQuery>,
) -> Result<Json<Value>, GatewayError> {
    super::require_method(&path.cluster_id, &["getConnectionInfo"])?;
    get_or_method(state, who, path, query).await
}

/// GET on an item: the cluster, or its `:getConnectionInfo`.
pub async fn get_or_method(
    State(state): State<AppState>,
    Who(who): Who,
    Path(path): Path<ClusterPath>,
    GQuery(q): GQuery<GetQuery>,
) -> Result<Json<Value>, GatewayError> {
    match split_segment(&path.cluster_id) {
        (id, None) => get(&state, &who, id, q).await,
        (id, Some("getConnectionInfo")) => get_connection_info(&state, &who, id)
            .await
            .map(|j| Json(to_json(j.0))),
        (_, Some(m)) => Err(unknown_method(m, &["getConnectionInfo"])),
    }
}

#[utoipa::path(get, path = "/v1/accounts/{account_id}/clusters/{cluster_id}", tag = "clusters",
    operation_id = "getCluster", params(ClusterPath, GetQuery),
    responses((status = 200, body = ClusterView)))]
async fn get(
    state: &AppState,
    who: &Principal,
    id: &str,
    q: GetQuery,
) -> Result<Json<Value>, GatewayError> {
    let cluster = state.gateway.get_cluster(&who.account_id, id).await?;
    Ok(Json(list::apply_read_mask(
        &CLUSTERS,
        to_json(ClusterView::from(&cluster)),
        q.read_mask.as_deref(),
    )?))
}

/// Also answers POST (AIP-136's convention for custom methods).
#[utoipa::path(get, path = "/v1/accounts/{account_id}/clusters/{cluster_id}:getConnectionInfo",
    tag = "clusters", operation_id = "getClusterConnectionInfo", params(ClusterPath),
    responses((status = 200, body = ConnectionInfo)))]
async fn get_connection_info(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<Json<ConnectionInfo>, GatewayError> {
    let cluster = state.gateway.get_cluster(&who.account_id, id).await?;
    match cluster.backend {
        // This host's clusters are reached through paddock's own API;
        // there is no Kubernetes endpoint to put in a kubeconfig.
        ClusterBackend::Host | ClusterBackend::Fake(_) => Ok(Json(ConnectionInfo {
            endpoint: String::new(),
            ca_data: String::new(),
            provider: "paddock".into(),
            message: "this cluster is the paddock host itself: use this API (environments, batch jobs) or the VM API; it has no Kubernetes endpoint".into(),
        })),
        ClusterBackend::Eks(_) => Err(GatewayError::Core(
            paddock_core::CoreError::FailedPrecondition(format!(
                "cluster {id:?} is {}: {}",
                cluster.state.as_str(),
                cluster.status.message
            )),
        )),
    }
}

/// What a PATCH may change (see `update_mask.rs`).
const MUTABLE: Mutable = Mutable {
    listing: &CLUSTERS,
    fields: &[("displayName", Cleared::Text)],
};

#[utoipa::path(patch, path = "/v1/accounts/{account_id}/clusters/{cluster_id}", tag = "clusters",
    operation_id = "updateCluster", params(ClusterPath, UpdateQuery), request_body = ClusterBody,
    responses((status = 200, body = ClusterView)))]
pub async fn update(
    State(state): State<AppState>,
    Who(who): Who,
    Path(path): Path<ClusterPath>,
    GQuery(q): GQuery<UpdateQuery>,
    GJson(raw): GJson<Value>,
) -> Result<Json<Value>, GatewayError> {
    let (id, body): (_, ClusterBody) = patch_body(&path.cluster_id, raw, &q, &MUTABLE)?;
    if body.eks_cluster.is_some() || body.fake_cluster.is_some() {
        return Err(GatewayError::invalid(
            "eksCluster",
            "a cluster's backend is set at creation",
        ));
    }
    let cluster = state
        .gateway
        .update_cluster(
            &who.account_id,
            id,
            ClusterPatch {
                display_name: body.display_name,
            },
        )
        .await?;
    Ok(Json(to_json(ClusterView::from(&cluster))))
}

#[utoipa::path(delete, path = "/v1/accounts/{account_id}/clusters/{cluster_id}", tag = "clusters",
    operation_id = "deleteCluster", params(ClusterPath),
    responses((status = 200, body = Empty)))]
pub async fn delete(
    State(state): State<AppState>,
    Who(who): Who,
    Path(path): Path<ClusterPath>,
) -> Result<Json<Empty>, GatewayError> {
    let id = plain_id(&path.cluster_id)?;
    state.gateway.delete_cluster(&who.account_id, id).await?;
    Ok(Json(Empty {}))
}
