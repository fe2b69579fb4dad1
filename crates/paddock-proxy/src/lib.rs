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
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub use route::Router;
pub use tls::{serve_tls, Certificates};

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The parent domain of share hosts (`localhost` by default: every
    /// `*.localhost` name is loopback to browsers and curl).
    pub domain: String,
}

/// Serves shares on `listener` until the process ends.
pub async fn serve(listener: TcpListener, router: Arc<Router>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "share proxy accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = Arc::clone(&router);
        tokio::spawn(serve_connection(TokioIo::new(stream), peer, router, false));
    }
}

/// Serves one client connection (plain or TLS) with HTTP/1.1 or HTTP/2.
pub async fn serve_connection<I>(io: I, peer: SocketAddr, router: Arc<Router>, tls: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<Incoming>| {
        let router = Arc::clone(&router);
        async move { Ok::<_, std::convert::Infallible>(router.handle(req, peer, tls).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection_with_upgrades(io, svc).await {
        tracing::debug!(error = %e, %peer, "share connection ended with an error");
    }
}
