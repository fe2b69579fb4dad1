//! What paddock's public listeners (the API and the share proxy) do with a
//! connection before HTTP:
//!
//! - admit it under caps, in all and per client address; one over either
//!   gets a written 503 with `Retry-After` and is closed at once;
//! - give it `head_timeout` to send its first bytes (hyper-util reads them
//!   to tell HTTP/1 from HTTP/2 before hyper's head timer exists, so a
//!   silent connection would otherwise stay open for good);
//! - serve it with an HTTP builder whose HTTP/1 head timer is the same
//!   `head_timeout`: counted whenever the connection waits for a request
//!   head, so it is both the slow-header and the keep-alive idle timeout.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpStream;

/// A listener's limits on its clients.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub head_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            head_timeout: Duration::from_secs(15),
            max_connections: 16_384,
            max_connections_per_client: 4_096,
        }
    }
}

/// Open connections of one listener, in all and per client address.
pub struct Admissions {
    limits: ConnectionLimits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; its place is freed when this drops.
pub struct Admitted {
    admissions: Arc<Admissions>,
    client: IpAddr,
}

impl Admissions {
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A place for a connection from `client`, or `None` over a cap.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Option<Admitted> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let from_client = open.1.get(&client).copied().unwrap_or(0);
        if open.0 >= self.limits.max_connections
            || from_client >= self.limits.max_connections_per_client
        {
            return None;
        }
        open.0 += 1;
        open.1.insert(client, from_client + 1);
        Some(Admitted {
            admissions: Arc::clone(self),
            client,
        })
    }

    /// Admits `stream` from `peer`, or answers it 503 and drops it.
    pub fn admit_or_refuse(
        self: &Arc<Self>,
        stream: &TcpStream,
        peer: SocketAddr,
    ) -> Option<Admitted> {
        let admitted = self.admit(peer.ip());
        if admitted.is_none() {
            tracing::debug!(%peer, "connection refused: over the connection cap");
            // Without waiting on the client: the answer fits a fresh
            // socket's send buffer, and one that does not read it loses
            // nothing it was promised.
            let _ = stream.try_write(OVER_CAPACITY);
        }
        admitted
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .admissions
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
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

/// The HTTP/2 connection preface, which hyper-util looks for.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits up to `deadline` for the bytes that tell the protocol: enough of
/// them to differ from the HTTP/2 preface, or all of it. `false`: the
/// client was silent, or closed first; drop it.
pub async fn first_bytes_within(stream: &TcpStream, deadline: Duration) -> bool {
    matches!(
        tokio::time::timeout(deadline, protocol_known(stream)).await,
        Ok(Ok(true))
    )
}

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

/// The HTTP/1 and HTTP/2 connection builder, with `head_timeout` as the
/// HTTP/1 head timer and the HTTP/2 keep-alive ping's deadline.
pub fn http_builder(head_timeout: Duration) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(head_timeout);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admissions_cap_in_all_and_per_client_and_free_on_drop() {
        let a = Admissions::new(ConnectionLimits {
            max_connections: 3,
            max_connections_per_client: 2,
            ..ConnectionLimits::default()
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

    #[tokio::test]
    async fn a_silent_client_is_dropped_and_a_talking_one_is_served() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        assert!(!first_bytes_within(&accepted, Duration::from_millis(100)).await);

        let talking = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        talking.try_write(b"GET / HTTP/1.1\r\n").expect("write");
        assert!(first_bytes_within(&accepted, Duration::from_secs(5)).await);

        // A prefix of the HTTP/2 preface that stops: not enough to tell.
        let dribbling = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        dribbling.try_write(b"PRI * HT").expect("write");
        assert!(!first_bytes_within(&accepted, Duration::from_millis(200)).await);
    }
}
