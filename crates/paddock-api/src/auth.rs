//! Who is calling: an API key from `X-API-Key`, `Authorization: Bearer`,
//! or, for WebSocket clients that cannot set headers, a
//! `paddock.key.<key>` entry in `Sec-WebSocket-Protocol` (what a browser
//! can send without putting the key in a URL) or the `api_key` query
//! parameter. Surfaces render the rejection in their own format.

use axum::http::request::Parts;
use paddock_core::ids::AccountId;
use paddock_core::CoreError;

use crate::AppState;

/// The key in a request's headers, if any.
pub fn header_key(headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        if !v.trim().is_empty() {
            return Some(v.trim().to_owned());
        }
    }
    let v = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// The subprotocol a browser offers to carry its key on a WebSocket
/// upgrade: `new WebSocket(url, ["paddock.v1", "paddock.key." + key])`.
/// The server answers with [`WEBSOCKET_PROTOCOL`], never echoing the key.
pub const WEBSOCKET_KEY_PREFIX: &str = "paddock.key.";
/// The subprotocol the server selects when a client offers its key in
/// `Sec-WebSocket-Protocol`.
pub const WEBSOCKET_PROTOCOL: &str = "paddock.v1";

/// The key offered as a `paddock.key.<key>` WebSocket subprotocol, if any.
fn websocket_protocol_key(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WEBSOCKET_KEY_PREFIX))
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
}

/// The key a request presents, if any: headers first (a WebSocket
/// subprotocol among them), then `api_key` in the query.
pub fn presented_key(parts: &Parts) -> Option<String> {
    presented_in(&parts.headers, &parts.uri)
}

/// [`presented_key`] of a request's headers and URI.
pub fn presented_in(headers: &axum::http::HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    if let Some(k) = header_key(headers).or_else(|| websocket_protocol_key(headers)) {
        return Some(k);
    }
    uri.query().and_then(|q| {
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == "api_key").then(|| percent_decode(v))
        })
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                }
                Err(_) => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The account the request's key acts for.
pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<AccountId, CoreError> {
    authenticate_principal(parts, state)
        .await
        .map(|who| who.account_id)
}

/// The account and user the request's key (headers, then the query)
/// acts for.
pub async fn authenticate_principal(
    parts: &Parts,
    state: &AppState,
) -> Result<paddock_core::model::Principal, CoreError> {
    let key = presented_key(parts).ok_or(CoreError::Unauthenticated)?;
    authenticate_presented(parts.extensions.get(), state, &key).await
}

/// The account and user `key` acts for; the audit layer learns who acted
/// through `slot`.
pub async fn authenticate_presented(
    slot: Option<&crate::audit::AuditSlot>,
    state: &AppState,
    key: &str,
) -> Result<paddock_core::model::Principal, CoreError> {
    let (who, key_id) = state.service.accounts().authenticate_key(key).await?;
    if let Some(slot) = slot {
        slot.set(crate::audit::Actor {
            who: who.clone(),
            key_id: key_id.to_string(),
        });
    }
    Ok(who)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_websocket_subprotocol_carries_the_key() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            axum::http::HeaderValue::from_static("paddock.v1, paddock.key.pdk_abc"),
        );
        let uri: axum::http::Uri = "/x?api_key=other".parse().expect("uri");
        assert_eq!(presented_in(&headers, &uri).as_deref(), Some("pdk_abc"));
        headers.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            axum::http::HeaderValue::from_static("paddock.v1, paddock.key."),
        );
        assert_eq!(presented_in(&headers, &uri).as_deref(), Some("other"));
    }

    #[test]
    fn decodes_query_keys() {
        assert_eq!(percent_decode("pdk_ab%2Bc"), "pdk_ab+c");
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
