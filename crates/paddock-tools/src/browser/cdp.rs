//! A DevTools protocol client: JSON commands over one WebSocket, each
//! answered by its id, and the browser's events fanned out to whoever
//! listens.
//!
//! Written here rather than taken from `chromiumoxide` or
//! `headless_chrome`: both generate the whole protocol (thousands of types,
//! minutes of compile time) and expect to launch Chrome themselves, while
//! paddock sends a dozen commands to a Chromium that runs inside a
//! sandbox, reached through a stream into the sandbox's network namespace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use paddock_core::provider::PortStream;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// The most bytes one DevTools message may have: a full-page screenshot
/// (base64 PNG, 16,384 px high at most) fits.
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// The longest the browser may take to answer one command (a page stuck
/// in a script holds every evaluation).
const CALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CdpError {
    #[error("the browser closed its DevTools connection")]
    Closed,
    #[error("{method}: {message}")]
    Command { method: String, message: String },
    #[error("the browser did not answer {0} within {CALL_DEADLINE:?}")]
    Deadline(String),
    #[error("the browser's DevTools endpoint: {0}")]
    Endpoint(String),
}

/// One event the browser sent.
#[derive(Debug, Clone)]
pub struct Event {
    pub method: String,
    pub params: Value,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, CdpError>>>>>;

/// A connection to one page target; clones share it.
#[derive(Clone)]
pub struct Cdp {
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    events: broadcast::Sender<Event>,
    /// Set when the browser's side of the connection ended.
    closed: Arc<AtomicBool>,
}

impl Cdp {
    /// The WebSocket path of the browser's first page, asked of its
    /// DevTools HTTP endpoint over `stream` (`GET /json/list`).
    pub async fn page_path(stream: PortStream) -> Result<String, CdpError> {
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| CdpError::Endpoint(e.to_string()))?;
        tokio::spawn(connection);
        let request = hyper::Request::get("/json/list")
            .header(hyper::header::HOST, "127.0.0.1")
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| CdpError::Endpoint(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| CdpError::Endpoint(e.to_string()))?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| CdpError::Endpoint(e.to_string()))?
            .to_bytes();
        let targets: Vec<Value> =
            serde_json::from_slice(&body).map_err(|e| CdpError::Endpoint(e.to_string()))?;
        targets
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .and_then(|url| url.find("/devtools/").map(|at| url[at..].to_owned()))
            .ok_or_else(|| CdpError::Endpoint("the browser has no page open".into()))
    }

    /// Opens the page's DevTools WebSocket over `stream`.
    pub async fn connect(stream: PortStream, path: &str) -> Result<Self, CdpError> {
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        let (socket, _) = tokio_tungstenite::client_async_with_config(
            format!("ws://127.0.0.1{path}"),
            stream,
            Some(config),
        )
        .await
        .map_err(|e| CdpError::Endpoint(e.to_string()))?;
        let (mut sink, mut source) = socket.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Message>();
        let pending: Pending = Arc::default();
        let (events, _) = broadcast::channel(1024);
        tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let answers = Arc::clone(&pending);
        let fan_out = events.clone();
        let closed = Arc::new(AtomicBool::new(false));
        let ended = Arc::clone(&closed);
        tokio::spawn(async move {
            while let Some(Ok(message)) = source.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(message) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                dispatch(message, &answers, &fan_out);
            }
            // The connection ended: every call still waiting fails.
            ended.store(true, Ordering::Release);
            let waiting: Vec<_> = lock(&answers).drain().collect();
            for (_, answer) in waiting {
                let _ = answer.send(Err(CdpError::Closed));
            }
        });
        Ok(Self {
            outgoing,
            pending,
            next_id: Arc::new(AtomicU64::new(1)),
            events,
            closed,
        })
    }

    /// Sends `method` and waits for its answer.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, CdpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        lock(&self.pending).insert(id, answer);
        if !self.is_open() {
            lock(&self.pending).remove(&id);
            return Err(CdpError::Closed);
        }
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        if self.outgoing.send(Message::text(message)).is_err() {
            lock(&self.pending).remove(&id);
            return Err(CdpError::Closed);
        }
        let answered = match tokio::time::timeout(CALL_DEADLINE, answered).await {
            Ok(answered) => answered,
            Err(_) => {
                lock(&self.pending).remove(&id);
                return Err(CdpError::Deadline(method.to_owned()));
            }
        };
        match answered {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(CdpError::Command { message, .. })) => Err(CdpError::Command {
                method: method.to_owned(),
                message,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CdpError::Closed),
        }
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// A handle for a task that answers the browser's requests (share
    /// fetches) while interactions go on.
    pub fn responder(&self) -> Self {
        self.clone()
    }

    /// Whether the connection still stands.
    pub fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && !self.outgoing.is_closed()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Routes one message: an answer to its caller, an event to listeners.
fn dispatch(message: Value, pending: &Pending, events: &broadcast::Sender<Event>) {
    if let Some(id) = message.get("id").and_then(Value::as_u64) {
        let Some(answer) = lock(pending).remove(&id) else {
            return;
        };
        let result = match message.get("error") {
            Some(error) => Err(CdpError::Command {
                method: String::new(),
                message: error["message"].as_str().unwrap_or("failed").to_owned(),
            }),
            None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
        };
        let _ = answer.send(result);
    } else if let Some(method) = message.get("method").and_then(Value::as_str) {
        let _ = events.send(Event {
            method: method.to_owned(),
            params: message.get("params").cloned().unwrap_or(Value::Null),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_reach_their_caller_and_events_their_listeners() {
        let pending: Pending = Arc::default();
        let (events, mut listener) = broadcast::channel(4);
        let (tx, rx) = oneshot::channel();
        lock(&pending).insert(7, tx);
        dispatch(
            json!({"method": "Page.loadEventFired", "params": {"timestamp": 1}}),
            &pending,
            &events,
        );
        dispatch(
            json!({"id": 7, "result": {"frameId": "F"}}),
            &pending,
            &events,
        );
        assert_eq!(
            rx.await.expect("answered").expect("a result")["frameId"],
            "F"
        );
        let event = listener.recv().await.expect("an event");
        assert_eq!(event.method, "Page.loadEventFired");
    }

    #[tokio::test]
    async fn an_error_answer_carries_the_browsers_message() {
        let pending: Pending = Arc::default();
        let (events, _) = broadcast::channel(4);
        let (tx, rx) = oneshot::channel();
        lock(&pending).insert(1, tx);
        dispatch(
            json!({"id": 1, "error": {"code": -32000, "message": "No node"}}),
            &pending,
            &events,
        );
        assert!(
            matches!(rx.await.expect("answered"), Err(CdpError::Command { message, .. }) if message == "No node")
        );
    }
}
