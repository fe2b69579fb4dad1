//! The share proxy. One listener serves every share:
//!
//! - `http://{label}.{domain}/…`, where `label` is the share id without
//!   its `shr_` prefix (wildcard DNS for `*.{domain}` points here);
//! - `http://{any host}/_share/{label}/…`, the path form for setups
//!   without wildcard DNS (the prefix is stripped before forwarding).
//!
//! A private share needs its token: `X-Share-Token`, `Authorization:
//! Bearer`, HTTP basic auth (token as password), or the cookie set by a
//! one-time `?paddock_login=` URL. Without it the answer is 401 and the VM
//! is never contacted. Requests, upgrades (WebSocket) and bodies stream
//! through untouched, to `http://{vm address}:{port}` over HTTP/1.1.

mod auth;
mod forward;
mod route;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use paddock_listener::{first_bytes_within, http_builder, Admissions};
use std::time::Duration;
use tokio::net::TcpListener;

pub use paddock_listener::ConnectionLimits;

pub use route::Router;
pub use tls::{serve_tls, Certificates};

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The parent domain of share hosts (`localhost` by default: every
    /// `*.localhost` name is loopback to browsers and curl).
    pub domain: String,
}

/// Serves shares on `listener` until the process ends, within `limits`
/// (connection caps, the head timeout: `paddock-listener`).
pub async fn serve(listener: TcpListener, router: Arc<Router>, limits: ConnectionLimits) {
    let admissions = Admissions::new(limits);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "share proxy accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admitted) = admissions.admit_or_refuse(&stream, peer) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = Arc::clone(&router);
        tokio::spawn(async move {
            if first_bytes_within(&stream, limits.head_timeout).await {
                let io = TokioIo::new(stream);
                serve_connection(io, peer, router, false, limits.head_timeout).await;
            }
            drop(admitted);
        });
    }
}

/// Serves one client connection (plain or TLS) with HTTP/1.1 or HTTP/2,
/// a request head due within `head_timeout` of the connection waiting.
pub async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    router: Arc<Router>,
    tls: bool,
    head_timeout: Duration,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<Incoming>| {
        let router = Arc::clone(&router);
        async move { Ok::<_, std::convert::Infallible>(router.handle(req, peer, tls).await) }
    });
    let builder = http_builder(head_timeout);
    if let Err(e) = builder.serve_connection_with_upgrades(io, svc).await {
        tracing::debug!(error = %e, %peer, "share connection ended with an error");
    }
}
