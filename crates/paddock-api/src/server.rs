//! The API's connection handling: who gets a connection, how long a
//! client may take to say what it wants, and how the server stops.
//! `axum::serve` has none of these limits, so the accept loop is here, over
//! hyper-util's connection builder.
//!
//! - Connection caps and the head timeout are `paddock-listener`'s (the
//!   share proxy has the same): at most `max_connections` in all and
//!   `max_connections_per_client` from one address, and a request head
//!   within `header_read_timeout` of the connection waiting for one (which
//!   makes it the keep-alive idle timeout too).
//! - A request body must yield data at least every `body_read_timeout`
//!   (per-frame, so a large upload at any steady speed is unaffected).
//! - Responses, streamed exec output and WebSockets have no deadline.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use paddock_listener::{first_bytes_within, http_builder, Admissions, ConnectionLimits};
use tokio::net::TcpListener;

/// The operator's HTTP limits (`[http]`).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// JSON bodies on every surface; file uploads stream and have none.
    pub json_body_bytes: usize,
    /// The bodies of the routes that take a command (exec, execute,
    /// execute_async, a definition sandbox's exec): a 16 MiB script with
    /// JSON's escapes.
    pub command_body_bytes: usize,
    /// The bodies read whole before their handler runs, server-wide
    /// (`body_budget.rs`); past it, a request is a 503 before it is read.
    pub body_budget_bytes: usize,
    /// How long a stopping server waits for requests under way.
    pub shutdown_grace: Duration,
}

impl HttpLimits {
    /// What `paddock-listener` enforces before HTTP.
    pub fn connections(&self) -> ConnectionLimits {
        ConnectionLimits {
            head_timeout: self.header_read_timeout,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
        }
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(15),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 16_384,
            max_connections_per_client: 4_096,
            json_body_bytes: 16 * 1024 * 1024,
            command_body_bytes: 64 * 1024 * 1024,
            body_budget_bytes: 1024 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then waits up to
/// `limits.shutdown_grace` for the requests under way.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let admissions = Admissions::new(limits.connections());
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_read_timeout,
    ));
    let builder = http_builder(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(admitted) = admissions.admit_or_refuse(&stream, peer) else {
            continue;
        };
        // Streamed responses are many small writes: without TCP_NODELAY,
        // Nagle and the client's delayed ACK add ~40 ms to each exec.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
        // The audit layer names the address a request came from.
        let service = TowerToHyperService::new(tower::Layer::layer(
            &axum::Extension(axum::extract::ConnectInfo(peer)),
            app.clone(),
        ));
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let first_bytes = limits.header_read_timeout;
        tokio::spawn(async move {
            if !first_bytes_within(&stream, first_bytes).await {
                tracing::debug!(%peer, "connection dropped: silent, or gone");
                return;
            }
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(admitted);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("requests still under way at shutdown were cut");
    }
}
