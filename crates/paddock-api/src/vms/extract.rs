//! Extractors that reject in the VM API's own error format, replacing
//! axum's plain-text 400/415/422 rejections.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use paddock_core::ids::AccountId;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::{ApiError, ValidationError};
use crate::AppState;

/// The authenticated caller's account; 401 otherwise.
pub struct Caller(pub AccountId);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        crate::auth::authenticate(parts, state)
            .await
            .map(Caller)
            .map_err(ApiError::from)
    }
}

/// The caller's account when the request presents a key (a wrong key is
/// still 401); `None` when it presents none, for routes anyone may read.
pub struct MaybeCaller(pub Option<AccountId>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if crate::auth::presented_key(parts).is_none() {
            return Ok(MaybeCaller(None));
        }
        crate::auth::authenticate(parts, state)
            .await
            .map(|a| MaybeCaller(Some(a)))
            .map_err(ApiError::from)
    }
}

/// The authenticated caller's account and user (whose SSH keys log in
/// as them); 401 otherwise.
pub struct CallerUser(pub paddock_core::model::Principal);

impl FromRequestParts<AppState> for CallerUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        crate::auth::authenticate_principal(parts, state)
            .await
            .map(CallerUser)
            .map_err(ApiError::from)
    }
}

/// Turns a serde error at `path` into FastAPI's validation entry.
pub fn serde_error(
    root: &str,
    path: &serde_path_to_error::Path,
    e: &serde_json::Error,
) -> ValidationError {
    let mut loc = vec![json!(root)];
    for seg in path.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => loc.push(json!(index)),
            serde_path_to_error::Segment::Map { key } => loc.push(json!(key)),
            serde_path_to_error::Segment::Enum { variant } => loc.push(json!(variant)),
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    let kind = if e.is_syntax() || e.is_eof() {
        "json_invalid"
    } else if e.is_data() {
        "type_error"
    } else {
        "value_error"
    };
    ValidationError {
        loc,
        msg: e.to_string(),
        kind: kind.to_owned(),
    }
}

/// Reads a JSON value of the body's field `field` as `T`; a mismatch is a
/// 422 at `["body", field, …]`.
pub fn parse_json_value<T: DeserializeOwned>(
    value: serde_json::Value,
    field: &str,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut loc = vec![json!("body"), json!(field)];
        for seg in e.path().iter() {
            if let serde_path_to_error::Segment::Map { key } = seg {
                loc.push(json!(key));
            }
        }
        ApiError::Validation(vec![ValidationError {
            loc,
            msg: e.inner().to_string(),
            kind: "value_error".to_owned(),
        }])
    })
}

/// Parses JSON text into `T`, with field paths in errors.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::field(&["body"], "Field required", "missing"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de)
        .map_err(|e| ApiError::Validation(vec![serde_error("body", e.path(), e.inner())]))
}

/// A JSON body; invalid JSON, wrong types or a missing body are 422s
/// naming the field.
pub struct ValidJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ValidJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::Status(e.status(), e.body_text()))?;
        parse_json(&bytes).map(ValidJson)
    }
}

/// Query parameters; a bad one is a 422 at `["query", …]`.
pub struct ValidQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ValidQuery)
            .map_err(|e| {
                let field = e.path().to_string();
                let loc: Vec<&str> = if field == "." {
                    vec!["query"]
                } else {
                    vec!["query", &field]
                };
                ApiError::field(&loc, e.inner().to_string(), "value_error")
            })
    }
}

/// Path parameters; one that does not parse (`/v1/custom-domains/x` for a
/// number) is a 422 at `["path", name]`, as FastAPI answers.
pub struct ValidPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ValidPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ValidPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let message = e.body_text();
                Err(match e.into_kind() {
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::DeserializeError { key, .. }
                    | ErrorKind::InvalidUtf8InPathParam { key } => {
                        ApiError::field(&["path", &key], message, "value_error")
                    }
                    _ => ApiError::field(&["path"], message, "value_error"),
                })
            }
            Err(other) => Err(ApiError::Status(other.status(), other.body_text())),
        }
    }
}

/// `Option<Caller>`: `None` when no key is presented at all (the handler
/// may find one in the body); a wrong key is still a 401.
impl axum::extract::OptionalFromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, ApiError> {
        if crate::auth::presented_key(parts).is_none() {
            return Ok(None);
        }
        <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}
