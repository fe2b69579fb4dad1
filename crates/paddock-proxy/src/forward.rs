//! Forwarding one request to a VM's port, streaming both bodies, and
//! splicing upgraded connections (WebSocket) end to end.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONNECTION, HOST, UPGRADE};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::route::text;

pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
];

/// A pooled HTTP/1.1 client to VMs: kept-alive connections make a share
/// cost one pooled request, not a TCP handshake, per request.
pub struct Backend {
    client: Client<HttpConnector, Incoming>,
}

impl Backend {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build(connector);
        Self { client }
    }
}

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    // Names listed in Connection are hop-by-hop too.
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Where a request goes: a VM on this host (by its address, over the
/// pooled client), or one on another node, through a connection that
/// node made to the VM's port (one request per connection).
pub enum Upstream {
    Here(SocketAddr),
    Tunnel {
        stream: paddock_core::provider::PortStream,
        target: SocketAddr,
    },
}

impl Upstream {
    fn target(&self) -> SocketAddr {
        match self {
            Self::Here(target) | Self::Tunnel { target, .. } => *target,
        }
    }

    async fn send(
        self,
        backend: &Backend,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, String> {
        match self {
            Self::Here(_) => backend.client.request(req).await.map_err(|e| e.to_string()),
            Self::Tunnel { stream, .. } => {
                // One connection, so the request line is in origin form
                // (the pooled client makes it so itself).
                let mut req = req;
                let origin = req
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .parse::<Uri>()
                    .map_err(|e| e.to_string())?;
                *req.uri_mut() = origin;
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| e.to_string())?;
                // Driven until the exchange (or an upgraded WebSocket) ends.
                tokio::spawn(async move {
                    let _ = connection.with_upgrades().await;
                });
                sender.send_request(req).await.map_err(|e| e.to_string())
            }
        }
    }
}

pub async fn forward(
    backend: &Backend,
    mut req: Request<Incoming>,
    upstream: Upstream,
    strip_prefix: Option<&str>,
    peer: SocketAddr,
    tls: bool,
) -> Response<ProxyBody> {
    let target = upstream.target();
    let upgrade = req.headers().get(UPGRADE).cloned();
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let path = match strip_prefix.and_then(|p| path.strip_prefix(p)) {
        Some("") => "/".to_owned(),
        Some(rest) if rest.starts_with('?') => format!("/{rest}"),
        Some(rest) => rest.to_owned(),
        None => path.to_owned(),
    };
    let Ok(uri) = format!("http://{target}{path}").parse::<Uri>() else {
        return text(StatusCode::BAD_REQUEST, "bad request path\n");
    };
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if let Some(u) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, u);
    }
    if let Ok(h) = HeaderValue::from_str(&authority) {
        headers.insert(HOST, h.clone());
        headers.insert("x-forwarded-host", h);
    }
    if let Ok(ip) = HeaderValue::from_str(&peer.ip().to_string()) {
        headers.append("x-forwarded-for", ip);
    }
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );

    let mut resp = match upstream.send(backend, req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, %target, "share backend unreachable");
            return text(
                StatusCode::BAD_GATEWAY,
                &format!("nothing answers on port {} of the VM\n", target.port()),
            );
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let backend_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, backend_upgrade) {
                    Ok((client, vm)) => {
                        let (mut client, mut vm) = (TokioIo::new(client), TokioIo::new(vm));
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut vm).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "share upgrade failed"),
                }
            });
            let (parts, _) = resp.into_parts();
            return Response::from_parts(
                parts,
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed(),
            );
        }
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.boxed())
}
