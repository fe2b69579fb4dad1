//! The API's connection handling: who gets a connection, how long a
//! client may take to say what it wants, and how the server stops.
//! `axum::serve` has none of these limits, so the accept loop is here, over
//! hyper-util's connection builder.
//!
//! - At most `max_connections` connections in all and
//!   `max_connections_per_client` from one address; a connection over
//!   either cap gets a 503 with `Retry-After` and is closed at once.
//! - A request head must arrive within `header_read_timeout`, counted from
//!   when the connection starts waiting for it: on a new connection, and
//!   after each response on a kept-alive one. That is hyper's head timer,
//!   so it is also the keep-alive idle timeout: an idle or slow-header
//!   client is dropped after it.
//! - A request body must yield data at least every `body_read_timeout`
//!   (per-frame, so a large upload at any steady speed is unaffected).
//! - Responses, streamed exec output and WebSockets have no deadline.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

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
    /// How long a stopping server waits for requests under way.
    pub shutdown_grace: Duration,
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
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Open connections, in all and per client address.
struct Admissions {
    max_total: usize,
    max_per_client: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; its slot is freed when this drops.
struct Admitted {
    admissions: Arc<Admissions>,
    client: IpAddr,
}

impl Admissions {
    fn admit(self: &Arc<Self>, client: IpAddr) -> Option<Admitted> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let from_client = open.1.get(&client).copied().unwrap_or(0);
        if open.0 >= self.max_total || from_client >= self.max_per_client {
            return None;
        }
        open.0 += 1;
        open.1.insert(client, from_client + 1);
        Some(Admitted {
            admissions: Arc::clone(self),
            client,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .admissions
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.client);
            }
        }
    }
}

/// What a connection over a cap is told before it is closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\n\
content-length: 46\r\n\r\n{\"detail\":\"too many connections; retry later\"}";

/// Serves `app` on `listener` until `shutdown` completes, then waits up to
/// `limits.shutdown_grace` for the requests under way.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let admissions = Arc::new(Admissions {
        max_total: limits.max_connections,
        max_per_client: limits.max_connections_per_client,
        open: Mutex::new((0, HashMap::new())),
    });
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_read_timeout,
    ));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(limits.header_read_timeout);
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
        let Some(admitted) = admissions.admit(peer.ip()) else {
            refuse(stream, peer);
            continue;
        };
        // Streamed responses are many small writes: without TCP_NODELAY,
        // Nagle and the client's delayed ACK add ~40 ms to each exec.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let first_bytes = limits.header_read_timeout;
        tokio::spawn(async move {
            // hyper-util reads the first bytes to tell HTTP/1 from HTTP/2
            // before hyper's head timer exists; bound that wait too.
            match tokio::time::timeout(first_bytes, protocol_known(&stream)).await {
                Ok(Ok(true)) => {}
                _ => {
                    tracing::debug!(%peer, "connection dropped: silent, or gone");
                    return;
                }
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

/// The HTTP/2 connection preface, which hyper-util looks for.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits until the bytes that arrived tell the protocol: enough of them to
/// differ from the HTTP/2 preface, or all of it. `false`: the client
/// closed first.
async fn protocol_known(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; 24];
    loop {
        stream.readable().await?;
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        if n == buf.len() || buf[..n] != H2_PREFACE[..n] {
            return Ok(true);
        }
        // A prefix of the preface so far: wait for more.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Tells a connection over a cap to come back later, without waiting on
/// it: the answer fits a fresh socket's send buffer, and a client that
/// does not read it loses nothing it was promised.
fn refuse(stream: TcpStream, peer: SocketAddr) {
    tracing::debug!(%peer, "connection refused: over the connection cap");
    let _ = stream.try_write(OVER_CAPACITY);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admissions_cap_in_all_and_per_client_and_free_on_drop() {
        let a = Arc::new(Admissions {
            max_total: 3,
            max_per_client: 2,
            open: Mutex::new((0, HashMap::new())),
        });
        let one: IpAddr = [10, 0, 0, 1].into();
        let two: IpAddr = [10, 0, 0, 2].into();
        let first = a.admit(one).expect("first");
        let _second = a.admit(one).expect("second");
        assert!(a.admit(one).is_none(), "per client");
        let _third = a.admit(two).expect("another client");
        assert!(a.admit(two).is_none(), "in all");
        drop(first);
        assert!(a.admit(one).is_some(), "freed on drop");
    }

    #[test]
    fn the_refusal_is_a_whole_http_response() {
        let text = std::str::from_utf8(OVER_CAPACITY).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let _: serde_json::Value = serde_json::from_str(body).expect("JSON body");
    }
}
