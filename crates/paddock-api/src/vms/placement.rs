//! Where a VM of the VM API is made, when several nodes share the store:
//! the create goes to the node with the most memory left (spread: a node
//! lost takes the fewest VMs with it, and sandboxes on 2-core hosts
//! contend least), this node when it is among the best. A create placed
//! on another node is sent there whole, with the caller's own key (that
//! node checks it) and the internal token that tells it to make the VM
//! itself.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Marks a create another node placed here: its value is the internal
/// token, so no tenant can send it.
pub(crate) const PLACED_HERE: HeaderName = HeaderName::from_static("x-paddock-placed");

/// What the create asks that placement weighs: memory, provider, and
/// whether it names what only one node holds on its disk (volumes, a
/// snapshot's layers): such a create is made where it was received.
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
        names("volumes") || names("snapshot_id"),
    )
}

/// Sends `POST /v1/vms` to the node placement picks; every other request
/// goes on here.
pub(crate) async fn place_create(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != axum::http::Method::POST || request.uri().path() != "/v1/vms" {
        return next.run(request).await;
    }
    let token = state.service.internal_token();
    let placed_here = request
        .headers()
        .get(&PLACED_HERE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| crate::internal::same_secret(v, &token));
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
    let (memory_mb, provider, node_local) = ask(&bytes);
    let provider = provider.unwrap_or_else(|| state.vms().provider_name().to_owned());
    let placed = if node_local {
        Ok(None)
    } else {
        cluster.place(&provider, memory_mb).await
    };
    let target = match placed {
        Ok(target) => target,
        Err(e) => {
            tracing::warn!(error = %paddock_core::error::error_chain(&e), "placement failed; making the VM here");
            None
        }
    };
    let Some(node) = target else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/v1/vms");
    let url = format!("{}{path}", node.address.trim_end_matches('/'));
    let mut forward = state.cluster_http.post(&url).body(bytes.clone());
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
        if !hop_by_hop && name != PLACED_HERE {
            forward = forward.header(name, value);
        }
    }
    let forward = forward.header(
        PLACED_HERE,
        HeaderValue::from_str(&token).unwrap_or(HeaderValue::from_static("")),
    );
    match forward.send().await {
        Ok(answer) => {
            let status = answer.status();
            let headers = answer.headers().clone();
            let body = answer.bytes().await.unwrap_or_default();
            let mut response = (status, body).into_response();
            for (name, value) in &headers {
                if !matches!(
                    name.as_str(),
                    "connection" | "content-length" | "transfer-encoding"
                ) {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(e) => {
            tracing::warn!(node = %node.id, error = %e, "the node placed on did not answer; making the VM here");
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ask;

    #[test]
    fn creates_naming_a_nodes_files_stay_where_they_came() {
        assert_eq!(ask(br#"{"memory_mb": 256}"#), (256, None, false));
        assert_eq!(
            ask(br#"{"provider": "microvm", "volumes": []}"#),
            (0, Some("microvm".into()), false)
        );
        assert!(ask(br#"{"volumes": [{"volume_id": "vol_x", "mount_path": "/d"}]}"#).2);
        assert!(ask(br#"{"snapshot_id": "snap_x"}"#).2);
        assert!(!ask(b"not json").2);
    }
}
