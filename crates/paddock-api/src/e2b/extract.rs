//! What the E2B control plane's handlers take: the caller's account (the
//! SDK's `X-API-KEY`), a JSON body (empty is the body's defaults) and
//! query parameters, each refused in E2B's error format.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use paddock_core::ids::AccountId;

use super::RestError;
use crate::AppState;

/// The account whose key the request carries.
pub struct E2bCaller(pub AccountId);

impl FromRequestParts<AppState> for E2bCaller {
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, RestError> {
        Ok(Self(crate::auth::authenticate(parts, state).await?))
    }
}

/// A JSON body; an empty one is `T::default()`; an invalid one is a 400
/// naming the field; one over [`MAX_JSON`] is a 413.
pub struct E2bJson<T>(pub T);

/// The largest JSON body read (the code interpreter's routes have no
/// route-wide limit: code may be long, but not unbounded).
pub const MAX_JSON: usize = 16 << 20;

impl<T: serde::de::DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for E2bJson<T> {
    type Rejection = RestError;

    async fn from_request(request: Request, _: &S) -> Result<Self, RestError> {
        let bytes = axum::body::to_bytes(request.into_body(), MAX_JSON)
            .await
            .map_err(|e| {
                let inner = e.into_inner();
                if inner.is::<http_body_util::LengthLimitError>() {
                    RestError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("body: at most {} MiB", MAX_JSON >> 20),
                    )
                } else {
                    RestError::new(StatusCode::BAD_REQUEST, format!("body: {inner}"))
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de).map(Self).map_err(|e| {
            RestError::new(
                StatusCode::BAD_REQUEST,
                format!("body.{}: {}", e.path(), e.inner()),
            )
        })
    }
}

/// Query parameters; invalid ones are a 400.
pub struct E2bQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for E2bQuery<T> {
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, RestError> {
        axum::extract::Query::try_from_uri(&parts.uri)
            .map(|q| Self(q.0))
            .map_err(|e| RestError::new(StatusCode::BAD_REQUEST, e.body_text()))
    }
}
