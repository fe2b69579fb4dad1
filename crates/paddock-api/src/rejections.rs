//! The last word on error format. Handlers render their own errors; what
//! they never see — axum's plain-text rejections (a path that does not
//! parse, a WebSocket route called without an upgrade, a body over its
//! limit), the empty 404 of an unknown route, the empty 405 of a known
//! route's unknown method — is rendered here in the format of the surface
//! the request came through, so that no client ever gets plain text.

use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::definitions::error::DefError;

/// The most of a plain-text rejection kept as the message.
const MESSAGE_LIMIT: usize = 4096;

/// Which API a path belongs to, by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surface {
    /// `/v1/…` and the root routes: FastAPI's `{"detail": …}`.
    Vms,
    /// `/v1/accounts/…`: google.rpc.Status.
    Gateway,
    /// `/api/v1/…`: `{"errors": [...], "request_id"}`.
    Definitions,
    /// `/e2b/…`: E2B's `{"code": <status>, "message"}`.
    E2b,
}

impl Surface {
    pub(crate) fn of(path: &str) -> Self {
        if path.starts_with("/api/") {
            Self::Definitions
        } else if path.starts_with("/e2b/") || path == "/e2b" {
            Self::E2b
        } else if path.starts_with("/v1/accounts/") || path == "/v1/accounts" {
            Self::Gateway
        } else {
            Self::Vms
        }
    }
}

/// Re-renders any error response that is not already JSON.
pub async fn uniform(request: Request, next: Next) -> Response {
    let surface = Surface::of(request.uri().path());
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MESSAGE_LIMIT).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        // tower-http's text ("length limit exceeded") names neither the
        // limit nor where it is set.
        "the request body is over this route's limit: [http] json_body_mb, or command_body_mb \
         on the exec routes (a command itself may be 16 MiB)"
            .to_owned()
    } else if text.is_empty() {
        default_message(status, &method)
    } else {
        text
    };
    let mut rendered = render(surface, status, message);
    // Keep what the original said about the method or the wait, and what
    // the layers outside read from it (an answer another node gave).
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            rendered.headers_mut().insert(name, v.clone());
        }
    }
    *rendered.extensions_mut() = parts.extensions;
    rendered
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"))
}

fn default_message(status: StatusCode, method: &Method) -> String {
    match status {
        StatusCode::NOT_FOUND => "Not Found: no such route".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => format!("Method Not Allowed: {method} on this route"),
        other => other.canonical_reason().unwrap_or("Error").to_owned(),
    }
}

fn render(surface: Surface, status: StatusCode, message: String) -> Response {
    match surface {
        Surface::Vms => (status, Json(json!({ "detail": message }))).into_response(),
        Surface::Gateway => (
            status,
            Json(json!({ "code": rpc_code(status), "message": message, "details": [] })),
        )
            .into_response(),
        Surface::Definitions => {
            DefError::new(status, definitions_code(status), message).into_response()
        }
        Surface::E2b => crate::e2b::RestError::new(status, message).into_response(),
    }
}

/// google.rpc.Code for an HTTP status, per the code table the gateway's
/// own errors follow.
fn rpc_code(status: StatusCode) -> i32 {
    match status.as_u16() {
        401 => 16,
        403 => 7,
        404 => 5,
        405 | 501 => 12,
        408 | 504 => 4,
        409 => 10,
        413 | 429 => 8,
        503 => 14,
        400..=499 => 3,
        _ => 13,
    }
}

fn definitions_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        429 => "rate_limited",
        400..=499 => "bad_request",
        _ => "internal_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_prefix_is_its_surface() {
        assert_eq!(Surface::of("/api/v1/environments"), Surface::Definitions);
        assert_eq!(Surface::of("/v1/accounts/a/clusters"), Surface::Gateway);
        assert_eq!(Surface::of("/v1/accountsx"), Surface::Vms);
        assert_eq!(Surface::of("/v1/vms"), Surface::Vms);
        assert_eq!(Surface::of("/execute"), Surface::Vms);
    }

    #[test]
    fn gateway_codes_follow_the_table() {
        assert_eq!(rpc_code(StatusCode::NOT_FOUND), 5);
        assert_eq!(rpc_code(StatusCode::PAYLOAD_TOO_LARGE), 8);
        assert_eq!(rpc_code(StatusCode::BAD_REQUEST), 3);
        assert_eq!(rpc_code(StatusCode::INTERNAL_SERVER_ERROR), 13);
    }
}
