//! The Connect protocol (connectrpc.com/docs/protocol) as envd's clients
//! speak it: the JSON codec only (E2B's SDKs never send binary
//! protobuf), unary calls as plain JSON bodies, streams as 5-byte
//! envelopes ending with an end-of-stream message that carries the error.
//!
//! Written here rather than taken from `connectrpc` (connect-rust): that
//! crate generates buffa messages from `.proto` files through `protoc`
//! or `buf` at build time and serves binary protobuf first; the SDKs
//! need neither, and the JSON messages are a handful of serde values.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use paddock_core::error::CoreError;
use serde_json::Value;

/// An envelope's flag: this message ends the stream.
const END_STREAM: u8 = 0x02;
/// An envelope's flag: the message is compressed.
const COMPRESSED: u8 = 0x01;
/// The largest message accepted in a request.
pub const MAX_MESSAGE: usize = 16 << 20;

/// A Connect error: its code (as the protocol names it) and message.
#[derive(Debug, Clone)]
pub struct ConnectError {
    pub code: &'static str,
    pub message: String,
}

impl ConnectError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("invalid_argument", message)
    }

    pub fn unimplemented(what: &str) -> Self {
        Self::new(
            "unimplemented",
            format!("{what} is not implemented by paddock"),
        )
    }

    fn http_status(&self) -> StatusCode {
        match self.code {
            "canceled" => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            "invalid_argument" | "failed_precondition" | "out_of_range" => StatusCode::BAD_REQUEST,
            "deadline_exceeded" => StatusCode::GATEWAY_TIMEOUT,
            "not_found" => StatusCode::NOT_FOUND,
            "already_exists" | "aborted" => StatusCode::CONFLICT,
            "permission_denied" => StatusCode::FORBIDDEN,
            "resource_exhausted" => StatusCode::TOO_MANY_REQUESTS,
            "unimplemented" => StatusCode::NOT_IMPLEMENTED,
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "unauthenticated" => StatusCode::UNAUTHORIZED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn json(&self) -> Value {
        serde_json::json!({ "code": self.code, "message": self.message })
    }
}

impl From<CoreError> for ConnectError {
    fn from(e: CoreError) -> Self {
        let code = match &e {
            CoreError::NotFound { .. } => "not_found",
            CoreError::InvalidArgument { .. } => "invalid_argument",
            CoreError::Conflict(_) => "already_exists",
            CoreError::FailedPrecondition(_) => "failed_precondition",
            CoreError::PermissionDenied(_) => "permission_denied",
            CoreError::ResourceExhausted(_) | CoreError::RateLimited { .. } => "resource_exhausted",
            CoreError::Unauthenticated => "unauthenticated",
            CoreError::Unavailable(_) | CoreError::Upstream(_) => "unavailable",
            CoreError::DeadlineExceeded(_) => "deadline_exceeded",
            CoreError::Runtime(_) | CoreError::Store(_) => "internal",
        };
        let message = match &e {
            CoreError::Runtime(_) | CoreError::Store(_) => {
                tracing::error!(error = %paddock_core::error::error_chain(&e), "an envd call failed");
                "internal error; see the server log".to_owned()
            }
            other => other.to_string(),
        };
        Self { code, message }
    }
}

/// Whether a request is a stream's (`application/connect+json`) rather
/// than a unary call's (`application/json`); other codecs are refused.
pub fn is_streaming(headers: &HeaderMap) -> Result<bool, UnsupportedCodec> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/json" => Ok(false),
        "application/connect+json" => Ok(true),
        other => Err(UnsupportedCodec(other.to_owned())),
    }
}

/// A request in a codec other than Connect's JSON.
#[derive(Debug)]
pub struct UnsupportedCodec(String);

impl IntoResponse for UnsupportedCodec {
    fn into_response(self) -> Response {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content type {:?}: paddock's envd speaks Connect's JSON codec only",
                self.0
            ),
        )
            .into_response()
    }
}

/// A unary call's answer.
pub fn unary(result: Result<Value, ConnectError>) -> Response {
    match result {
        Ok(v) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            v.to_string(),
        )
            .into_response(),
        Err(e) => (
            e.http_status(),
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            e.json().to_string(),
        )
            .into_response(),
    }
}

/// One envelope.
pub fn envelope(flags: u8, message: &Value) -> Bytes {
    let body = message.to_string();
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.put_u8(flags);
    out.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
    out.put_slice(body.as_bytes());
    out.freeze()
}

/// The envelope that ends a stream, with its error if it failed.
pub fn end_of_stream(error: Option<&ConnectError>) -> Bytes {
    let body = match error {
        Some(e) => serde_json::json!({ "error": e.json() }),
        None => serde_json::json!({}),
    };
    envelope(END_STREAM, &body)
}

/// A stream's response: its envelopes as they come.
pub fn stream_response(frames: impl futures::Stream<Item = Bytes> + Send + 'static) -> Response {
    use futures::StreamExt;
    let body = Body::from_stream(frames.map(Ok::<_, std::convert::Infallible>));
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/connect+json"),
        )],
        body,
    )
        .into_response()
}

/// A stream that fails before its first message: just its end.
pub fn stream_error(e: ConnectError) -> Response {
    stream_response(futures::stream::once(
        async move { end_of_stream(Some(&e)) },
    ))
}

/// How a server stream of a source's items is written.
pub struct ServerStream<T> {
    /// Sent before the first item.
    pub opening: Option<Value>,
    /// An item's message, and whether it is the stream's last.
    pub message: fn(&T) -> (Value, bool),
    pub keepalive: Value,
    /// The error the stream ends with when its source stops before its
    /// last item.
    pub cut_short: &'static str,
    /// When the client's deadline (`Connect-Timeout-Ms`) passes: the
    /// stream ends with this `deadline_exceeded` error, or cleanly.
    pub deadline_error: Option<&'static str>,
}

/// A server stream of `items`, with the keepalives the client asked for
/// and its deadline.
pub fn server_stream<T: Send + 'static>(
    mut items: tokio::sync::mpsc::Receiver<T>,
    headers: &HeaderMap,
    shape: ServerStream<T>,
) -> Response {
    let keepalive = keepalive(headers);
    let deadline = timeout(headers);
    let (tx, rx) = tokio::sync::mpsc::channel(32);
    // The task ends when the client goes away (its sends fail).
    tokio::spawn(async move {
        let far = Duration::from_secs(86_400 * 365);
        let until = tokio::time::Instant::now() + deadline.unwrap_or(far);
        let mut ping = tokio::time::interval(keepalive.unwrap_or(far));
        ping.tick().await;
        if let Some(opening) = &shape.opening {
            if tx.send(envelope(0, opening)).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                item = items.recv() => {
                    let Some(item) = item else {
                        let e = ConnectError::new("unavailable", shape.cut_short);
                        let _ = tx.send(end_of_stream(Some(&e))).await;
                        return;
                    };
                    let (message, last) = (shape.message)(&item);
                    if tx.send(envelope(0, &message)).await.is_err() {
                        return;
                    }
                    if last {
                        let _ = tx.send(end_of_stream(None)).await;
                        return;
                    }
                }
                _ = ping.tick(), if keepalive.is_some() => {
                    if tx.send(envelope(0, &shape.keepalive)).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(until), if deadline.is_some() => {
                    let e = shape
                        .deadline_error
                        .map(|m| ConnectError::new("deadline_exceeded", m));
                    let _ = tx.send(end_of_stream(e.as_ref())).await;
                    return;
                }
            }
        }
    });
    stream_response(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Reads envelopes off a request body as they arrive.
#[derive(Default)]
pub struct EnvelopeReader {
    buf: BytesMut,
}

impl EnvelopeReader {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Value>, ConnectError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(ConnectError::new(
                "resource_exhausted",
                format!("a message of {len} bytes is over the {MAX_MESSAGE}-byte limit"),
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        if flags & COMPRESSED != 0 {
            return Err(ConnectError::unimplemented("compressed messages"));
        }
        self.buf.advance(5);
        let body = self.buf.split_to(len);
        if flags & END_STREAM != 0 {
            return Ok(None);
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| ConnectError::invalid(format!("the message is not JSON: {e}")))
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// A stream's one request message, from its whole body.
pub fn single_message(body: &[u8]) -> Result<Value, ConnectError> {
    let mut reader = EnvelopeReader::default();
    reader.push(body);
    reader
        .next_message()?
        .ok_or_else(|| ConnectError::invalid("the stream carries no request message"))
}

/// A unary call's request message.
pub fn unary_message(body: &[u8]) -> Result<Value, ConnectError> {
    if body.is_empty() {
        return Ok(serde_json::json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ConnectError::invalid(format!("the request is not JSON: {e}")))
}

/// The deadline the client set (`Connect-Timeout-Ms`).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// How often the client asked for keepalive messages on a stream
/// (`Keepalive-Ping-Interval`, seconds).
pub fn keepalive(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_across_chunks() {
        let a = envelope(0, &serde_json::json!({"a": 1}));
        let b = envelope(0, &serde_json::json!({"b": 2}));
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        let mut r = EnvelopeReader::default();
        r.push(&all[..3]);
        assert!(r.next_message().expect("ok").is_none());
        r.push(&all[3..]);
        assert_eq!(
            r.next_message().expect("ok"),
            Some(serde_json::json!({"a": 1}))
        );
        assert_eq!(
            r.next_message().expect("ok"),
            Some(serde_json::json!({"b": 2}))
        );
        assert!(r.is_empty());
    }

    #[test]
    fn end_of_stream_carries_the_error() {
        let e = ConnectError::new("not_found", "no such process");
        let frame = end_of_stream(Some(&e));
        assert_eq!(frame[0], END_STREAM);
        let body: Value = serde_json::from_slice(&frame[5..]).expect("json");
        assert_eq!(body["error"]["code"], "not_found");
    }

    #[test]
    fn compressed_and_oversized_messages_are_refused() {
        let mut r = EnvelopeReader::default();
        r.push(&[COMPRESSED, 0, 0, 0, 1, b'x']);
        assert!(r.next_message().is_err());
        let mut r = EnvelopeReader::default();
        r.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(r.next_message().is_err());
    }
}
