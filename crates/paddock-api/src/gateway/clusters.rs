//! Clusters: create, get, list, update, delete, `:getConnectionInfo`.

use axum::extract::{Path, State};
use axum::Json;
use paddock_core::model::gateway::ClusterBackend;
use paddock_gateway::{ClusterInput, ClusterPatch};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::GatewayError;
use super::from_value;
use super::list::{self, GetQuery, ListQuery};
use super::update_mask::{self, Cleared, Mutable, UpdateQuery};
use super::wire::{self, ClusterBody, CLUSTERS};
use super::{plain_id, split_segment, unknown_method, GJson, GQuery, Who};
use crate::AppState;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBody {
    cluster: Option<ClusterBody>,
    cluster_id: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    Who(who): Who,
    GJson(body): GJson<CreateBody>,
) -> Result<Json<Value>, GatewayError> {
    let id = body
        .cluster_id
        .ok_or_else(|| GatewayError::invalid("clusterId", "is required"))?;
    let c = body
        .cluster
        .ok_or_else(|| GatewayError::invalid("cluster", "is required"))?;
    let input = ClusterInput {
        display_name: c.display_name.unwrap_or_default(),
        fake_cluster: c.fake_cluster.map(Into::into),
        eks_cluster: c.eks_cluster.map(Into::into),
    };
    let cluster = state
        .gateway
        .create_cluster(&who.account_id, &id, input)
        .await?;
    Ok(Json(wire::cluster(&cluster)))
}

pub async fn list(
    State(state): State<AppState>,
    Who(who): Who,
    GQuery(q): GQuery<ListQuery>,
) -> Result<Json<Value>, GatewayError> {
    let items = state
        .gateway
        .list_clusters(&who.account_id)
        .await?
        .iter()
        .map(wire::cluster)
        .collect();
    Ok(Json(list::page(&CLUSTERS, items, &q)?))
}

/// POST on an item: its getter custom method only (`:getConnectionInfo`), as
/// AIP-136 clients send it.
pub async fn post_method(
    state: State<AppState>,
    who: Who,
    path: Path<(String, String)>,
    query: GQuery<GetQuery>,
) -> Result<Json<Value>, GatewayError> {
    super::require_method(&path.1, &["getConnectionInfo"])?;
    get_or_method(state, who, path, query).await
}

pub async fn get_or_method(
    State(state): State<AppState>,
    Who(who): Who,
    Path((_, segment)): Path<(String, String)>,
    GQuery(q): GQuery<GetQuery>,
) -> Result<Json<Value>, GatewayError> {
    let (id, method) = split_segment(&segment);
    let cluster = state.gateway.get_cluster(&who.account_id, id).await?;
    match method {
        None => Ok(Json(list::apply_read_mask(
            &CLUSTERS,
            wire::cluster(&cluster),
            q.read_mask.as_deref(),
        )?)),
        Some("getConnectionInfo") => match cluster.backend {
            // This host's clusters are reached through paddock's own API;
            // there is no Kubernetes endpoint to put in a kubeconfig.
            ClusterBackend::Host | ClusterBackend::Fake(_) => Ok(Json(json!({
                "endpoint": "",
                "caData": "",
                "provider": "paddock",
                "message": "this cluster is the paddock host itself: use this API (environments, batch jobs) or the VM API; it has no Kubernetes endpoint",
            }))),
            ClusterBackend::Eks(_) => Err(GatewayError::Core(
                paddock_core::CoreError::FailedPrecondition(format!(
                    "cluster {id:?} is {}: {}",
                    cluster.state.as_str(),
                    cluster.status.message
                )),
            )),
        },
        Some(m) => Err(unknown_method(m, &["getConnectionInfo"])),
    }
}

/// What a PATCH may change (see `update_mask.rs`).
const MUTABLE: Mutable = Mutable {
    listing: &CLUSTERS,
    fields: &[("displayName", Cleared::Text)],
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
    let body: ClusterBody = from_value(raw)?;
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
    Ok(Json(wire::cluster(&cluster)))
}

pub async fn delete(
    State(state): State<AppState>,
    Who(who): Who,
    Path((_, segment)): Path<(String, String)>,
) -> Result<Json<Value>, GatewayError> {
    let id = plain_id(&segment)?;
    state.gateway.delete_cluster(&who.account_id, id).await?;
    Ok(Json(json!({})))
}
