//! Which node answers a VM API call, when several nodes share the store.
//!
//! A create goes to the node with the most memory left (spread: a node
//! lost takes the fewest VMs with it, and sandboxes on 2-core hosts
//! contend least), this node when it is among the best. A change to a VM
//! (delete, patch, suspend, snapshot, egress, …) goes to the node that runs
//! it. Either is sent there whole, with the caller's own key (that node
//! checks it) and the internal token that tells it to act itself. Reads
//! are answered from the store here; exec, files and terminals reach the
//! sandbox through its node's agent tunnel instead (they stream).

use axum::body::{Body, Bytes};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use paddock_core::ids::VmId;
use paddock_core::model::Node;

use crate::AppState;

/// Marks a call another node sent here to act on: its value is the
/// sending node's internal token, so no tenant can send it.
pub(crate) const PLACED_HERE: HeaderName = HeaderName::from_static("x-paddock-placed");

/// The address of the client whose call another node sent here, for the
/// audit record this node writes; believed only beside a valid
/// [`PLACED_HERE`].
pub(crate) const CLIENT_ADDRESS: HeaderName = HeaderName::from_static("x-paddock-client-address");

/// Marks an answer another node gave to a call this node sent there. That
/// node audited the call: it checked the caller's key, which this node
/// never looked at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forwarded;

/// Whether `headers` carry a valid [`PLACED_HERE`]: the call was sent
/// here by another node of the installation.
pub(crate) fn placed_by_a_node(state: &AppState, headers: &HeaderMap) -> bool {
    headers
        .get(&PLACED_HERE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| state.service.internal_caller(v))
        .is_some()
}

/// What the create asks that placement weighs: memory, provider, and
/// whether it names what only one node holds on its disk (volumes): such
/// a create is made where it was received. (A snapshot's layers are
/// fetched from the node that took it.)
fn ask(body: &[u8]) -> (u64, Option<String>, bool) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let names = |field: &str| match &v[field] {
        serde_json::Value::Null => false,
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::String(s) => !s.is_empty(),
        _ => true,
    };
    (
        v["memory_mb"].as_u64().unwrap_or(0),
        v["provider"].as_str().map(str::to_owned),
        names("volumes"),
    )
}

/// The VM a change names, for the VM API's `/v1/vms/{id}…` changes that
/// its node must make; `None` for reads and for the calls that stream
/// through the agent tunnel (exec, files, terminals).
fn changed_vm(method: &Method, path: &str) -> Option<VmId> {
    if *method == Method::GET || *method == Method::HEAD {
        return None;
    }
    let rest = path.strip_prefix("/v1/vms/")?;
    let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
    let streams = ["exec", "files", "pty", "execute"]
        .iter()
        .any(|s| sub == *s || sub.starts_with(&format!("{s}/")));
    if streams {
        return None;
    }
    id.parse().ok()
}

/// Routes VM API creates and changes to the node that must make them;
/// every other request goes on here.
pub(crate) async fn route_to_node(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let create = request.method() == Method::POST && request.uri().path() == "/v1/vms";
    let changed = changed_vm(request.method(), request.uri().path());
    if !create && changed.is_none() {
        return next.run(request).await;
    }
    let token = state.service.internal_token();
    let placed_here = placed_by_a_node(&state, request.headers());
    let Some(cluster) = state.cluster.clone().filter(|_| !placed_here) else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, state.http.json_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return super::error::ApiError::from(paddock_core::CoreError::invalid(
                "body",
                "the request body is too large",
            ))
            .into_response()
        }
    };
    let target = if let Some(vm) = changed {
        // Its node, while it is alive; a lost VM's record is changed here.
        match state.vms().node_of(&vm).await {
            Ok(Some(node)) => cluster.live_node(&node).await.ok().flatten(),
            _ => None,
        }
    } else {
        let (memory_mb, provider, node_local) = ask(&bytes);
        let provider = provider.unwrap_or_else(|| state.vms().provider_name().to_owned());
        if node_local {
            None
        } else {
            cluster
                .place(Some(&provider), memory_mb, &Default::default())
                .await.unwrap_or_else(|e| {
                tracing::warn!(error = %paddock_core::error::error_chain(&e), "placement failed; making the VM here");
                None
            })
        }
    };
    let Some(node) = target else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    match send_to(&state, &node, &parts, bytes.clone(), &token).await {
        Ok(response) => response,
        Err(e) if create => {
            tracing::warn!(node = %node.id, error = %e, "the node placed on did not answer; making the VM here");
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => super::error::ApiError::from(paddock_core::CoreError::Unavailable(format!(
            "the VM's node {} did not answer: {e}",
            node.id
        )))
        .into_response(),
    }
}

/// Sends the call to `node` as it came, with the internal token; its
/// answer as it gave it.
async fn send_to(
    state: &AppState,
    node: &Node,
    parts: &Parts,
    body: Bytes,
    token: &str,
) -> Result<Response, reqwest::Error> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}{path}", node.address.trim_end_matches('/'));
    let mut forward = state
        .cluster_http
        .request(parts.method.clone(), &url)
        .body(body);
    for (name, value) in &parts.headers {
        let hop_by_hop = matches!(
            name.as_str(),
            "host"
                | "connection"
                | "content-length"
                | "transfer-encoding"
                | "keep-alive"
                | "upgrade"
        );
        if !hop_by_hop && *name != PLACED_HERE && *name != CLIENT_ADDRESS {
            forward = forward.header(name, value);
        }
    }
    if let Some(ConnectInfo(client)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        forward = forward.header(CLIENT_ADDRESS, client.ip().to_string());
    }
    let answer = forward
        .header(
            PLACED_HERE,
            HeaderValue::from_str(token).unwrap_or(HeaderValue::from_static("")),
        )
        .send()
        .await?;
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = answer.bytes().await?;
    let mut response = (status, body).into_response();
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "connection" | "content-length" | "transfer-encoding"
        ) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response.extensions_mut().insert(Forwarded);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::{ask, changed_vm};
    use axum::http::Method;

    #[test]
    fn changes_to_a_vm_go_to_its_node_and_streams_through_the_tunnel() {
        let vm = "vm_abcdefghij0123456789";
        let changed = |m: Method, p: &str| changed_vm(&m, &p.replace("{vm}", vm)).is_some();
        assert!(changed(Method::DELETE, "/v1/vms/{vm}"));
        assert!(changed(Method::PATCH, "/v1/vms/{vm}"));
        assert!(changed(Method::POST, "/v1/vms/{vm}/suspend"));
        assert!(changed(Method::PUT, "/v1/vms/{vm}/egress"));
        assert!(!changed(Method::GET, "/v1/vms/{vm}"));
        assert!(!changed(Method::POST, "/v1/vms/{vm}/exec"));
        assert!(!changed(Method::PUT, "/v1/vms/{vm}/files"));
        assert!(!changed(Method::POST, "/v1/vms/{vm}/pty/sessions"));
        assert!(!changed(Method::POST, "/v1/vms/bulk-delete"));
        assert!(!changed(Method::POST, "/v1/vms"));
    }

    #[test]
    fn creates_naming_a_nodes_files_stay_where_they_came() {
        assert_eq!(ask(br#"{"memory_mb": 256}"#), (256, None, false));
        assert_eq!(
            ask(br#"{"provider": "microvm", "volumes": []}"#),
            (0, Some("microvm".into()), false)
        );
        assert!(ask(br#"{"volumes": [{"volume_id": "vol_x", "mount_path": "/d"}]}"#).2);
        assert!(!ask(br#"{"snapshot_id": "snap_x"}"#).2);
        assert!(!ask(b"not json").2);
    }
}
