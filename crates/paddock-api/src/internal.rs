//! The endpoints nodes of one installation call on each other: never a
//! tenant's (they take a node's internal token, `{node id}.{MAC of the
//! master key over it}`, which no API key is and which names the calling
//! node; they are not in the OpenAPI document).
//!
//! `GET /internal/v1/vms/{id}/agent` upgrades the connection and splices it
//! to a sandbox's agent socket: another node then speaks the agent
//! protocol to the sandbox as if the socket were its own, so exec, files,
//! PTYs and jobs of a VM work through any node.
//!
//! `GET /internal/v1/blobs/{digest}` streams a blob this node holds (a
//! layer of a snapshot taken here), which another node verifies against
//! the digest as it stores it.
//!
//! `GET /internal/v1/vms/{id}/ports/{port}` upgrades the connection and
//! splices it to a TCP connection this node makes to that port of one of
//! its sandboxes: another node's share proxy reaches the VM's shares and
//! published ports through it.
//!
//! `POST /internal/v1/calls` makes a change only this node can make (a
//! create placed here, a delete, suspend, … of a VM it runs) for another
//! node: a [`NodeCall`] in, the record it changed out, or the error as a
//! [`WireError`] (422), which the caller turns back into the error.

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use paddock_core::cluster::{NodeCall, WireError};
use paddock_core::cluster::{AGENT_UPGRADE as UPGRADE_PROTOCOL, PORT_UPGRADE};
use paddock_core::ids::VmId;

use crate::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/internal/v1/vms/{id}/agent", get(agent_tunnel))
        .route("/internal/v1/blobs/{digest}", get(blob))
        .route("/internal/v1/calls", post(node_call))
        .route("/internal/v1/vms/{id}/ports/{port}", get(port_tunnel))
}

/// The node that sent the request, by the internal token it carries.
pub(crate) fn calling_node(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Option<paddock_core::ids::NodeId> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))?;
    state.service.internal_caller(token)
}

fn is_a_node(request: &Request, state: &AppState) -> bool {
    calling_node(state, request.headers()).is_some()
}

/// Why an upgrade request is refused before its target is looked at: a
/// caller that is not a node (401), or an upgrade to another protocol.
fn refuse_upgrade(request: &Request, state: &AppState, protocol: &str) -> Option<Response> {
    if !is_a_node(request, state) {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                "this endpoint is for the installation's nodes",
            )
                .into_response(),
        );
    }
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok());
    (upgrade != Some(protocol)).then(|| {
        (
            StatusCode::UPGRADE_REQUIRED,
            format!("upgrade to {protocol}"),
        )
            .into_response()
    })
}

/// Copies `from` to `to` until `from` ends or either fails, then closes
/// `to`'s writing side so that its reader sees the end.
async fn pipe(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}

/// Answers the upgrade to `protocol` and splices the upgraded connection
/// to `target` until either side closes.
fn splice<T>(request: Request, target: T, protocol: &'static str) -> Response
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let upgraded = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgraded.await else {
            return;
        };
        // Each direction on its own, as a socket's two halves are: the
        // target (an agent that wrote a command's exit) may close while
        // the caller's last bytes are on their way to it, and the write
        // that fails then must not cut off what the target said before
        // it closed (`copy_bidirectional` gives up on both at the first
        // error, losing the exit).
        let (node_rd, node_wr) = tokio::io::split(TokioIo::new(upgraded));
        let (target_rd, target_wr) = tokio::io::split(target);
        tokio::join!(pipe(node_rd, target_wr), pipe(target_rd, node_wr));
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(protocol));
    response
}

async fn agent_tunnel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    if let Some(refused) = refuse_upgrade(&request, &state, UPGRADE_PROTOCOL) {
        return refused;
    }
    let Ok(id) = id.parse::<VmId>() else {
        return (StatusCode::NOT_FOUND, "no such VM").into_response();
    };
    let socket = match state.vms().local_agent_socket(&id).await {
        Ok(socket) => socket,
        Err(paddock_core::CoreError::NotFound { .. }) => {
            return (StatusCode::NOT_FOUND, "no such VM runs on this node").into_response();
        }
        Err(e) => {
            let why = paddock_core::error::error_chain(&e);
            return (StatusCode::CONFLICT, why).into_response();
        }
    };
    // Connected before the answer, so a sandbox that is gone is a 404, not
    // a tunnel that closes at once.
    let agent = match tokio::net::UnixStream::connect(&socket).await {
        Ok(agent) => agent,
        Err(_) => return (StatusCode::NOT_FOUND, "the sandbox is not running").into_response(),
    };
    // Ends when either side closes: the agent sees its caller go.
    splice(request, agent, UPGRADE_PROTOCOL)
}

async fn blob(
    State(state): State<AppState>,
    Path(digest): Path<String>,
    request: Request,
) -> Response {
    if !is_a_node(&request, &state) {
        return (
            StatusCode::UNAUTHORIZED,
            "this endpoint is for the installation's nodes",
        )
            .into_response();
    }
    let Some(path) = state.vms().local_blob(&digest).await else {
        return (StatusCode::NOT_FOUND, "no such blob on this node").into_response();
    };
    match tokio::fs::File::open(&path).await {
        Ok(file) => {
            let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
            ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
        }
        Err(_) => (StatusCode::NOT_FOUND, "no such blob on this node").into_response(),
    }
}

/// The largest call body: a create's spec with its environment.
const CALL_BODY_BYTES: usize = 4 * 1024 * 1024;

async fn node_call(State(state): State<AppState>, request: Request) -> Response {
    let Some(caller) = calling_node(&state, request.headers()) else {
        return (
            StatusCode::UNAUTHORIZED,
            "this endpoint is for the installation's nodes",
        )
            .into_response();
    };
    let body = match axum::body::to_bytes(request.into_body(), CALL_BODY_BYTES).await {
        Ok(body) => body,
        Err(e) => return (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response(),
    };
    let call: NodeCall = match serde_json::from_slice(&body) {
        Ok(call) => call,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not a call this node knows: {e}"),
            )
                .into_response()
        }
    };
    let what = call.what();
    tracing::debug!(call = what, from = %caller, "a node's call");
    match state.vms().answer_node_call(call).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(e) => {
            tracing::debug!(call = what, error = %paddock_core::error::error_chain(&e), "a node's call was refused");
            // The calling node reads the kind from the body and answers
            // its own caller in that caller's surface's format.
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(WireError::from(&e)),
            )
                .into_response()
        }
    }
}

/// Where a port tunnel connects from: the host, to the VM's address (by
/// default), or inside the VM's network namespace to `inside`.
#[derive(serde::Deserialize)]
struct PortQuery {
    inside: Option<std::net::IpAddr>,
}

async fn port_tunnel(
    State(state): State<AppState>,
    Path((id, port)): Path<(String, u16)>,
    axum::extract::Query(query): axum::extract::Query<PortQuery>,
    request: Request,
) -> Response {
    if let Some(refused) = refuse_upgrade(&request, &state, PORT_UPGRADE) {
        return refused;
    }
    let Ok(id) = id.parse::<VmId>() else {
        return (StatusCode::NOT_FOUND, "no such VM").into_response();
    };
    // Connected before the answer, so a port nothing listens on is an
    // error the other node reports, not a tunnel that closes at once.
    let connected = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        match query.inside {
            Some(ip) => state.vms().connect_in_local_vm(&id, ip, port).await,
            None => {
                let address = state.vms().local_port_address(&id, port).await?;
                tokio::net::TcpStream::connect(address).await.map_err(|e| {
                    paddock_core::CoreError::Unavailable(format!(
                        "nothing answers on port {port} of the VM: {e}"
                    ))
                })
            }
        }
    })
    .await;
    let vm = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(paddock_core::CoreError::NotFound { .. })) => {
            return (StatusCode::NOT_FOUND, "no such VM runs on this node").into_response();
        }
        Ok(Err(e)) => {
            let why = paddock_core::error::error_chain(&e);
            return (StatusCode::BAD_GATEWAY, why).into_response();
        }
        Err(_) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("nothing answers on port {port} of the VM"),
            )
                .into_response()
        }
    };
    let _ = vm.set_nodelay(true);
    splice(request, vm, PORT_UPGRADE)
}
