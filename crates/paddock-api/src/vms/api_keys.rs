//! API keys managed by the account's own callers (`/v1/api-keys/`, the
//! `instavm` SDK's `client.api_keys`): create (the key is in that answer
//! only), list and get (a prefix and a fingerprint, never the key),
//! update (name, description, expiry) and delete. A deleted or expired
//! key answers 401 on its next call. `paddock keys` works on the same
//! records.

use axum::extract::State;
use axum::Json;
use paddock_core::clock::Timestamp;
use paddock_core::model::{ApiKey, KeyPatch, KeySettings};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::dto::nullable_text;
use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidPath};
use crate::AppState;

/// The longest a key may be made to live for by `expires_in_days`.
const MAX_EXPIRY_DAYS: u32 = 3650;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// What listings show; `api key` when absent.
    pub name: Option<String>,
    pub description: Option<String>,
    /// When the key stops working (RFC 3339, in the future).
    pub expires_at: Option<String>,
    /// Or: this many days from now (1 to 3650).
    pub expires_in_days: Option<u32>,
    /// The user of the account the key acts for; the account's
    /// administrator when absent.
    pub user_email: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateApiKeyRequest {
    pub name: Option<String>,
    /// A new description; `null` clears it.
    #[serde(default, deserialize_with = "super::dto::present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Value>,
    /// A new expiry (RFC 3339, in the future); `null` clears it.
    #[serde(default, deserialize_with = "super::dto::present")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyResponse {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// The key's first characters, to tell keys apart.
    pub key_prefix: String,
    /// `SHA256:` and 16 hex digits of the key's hash.
    pub fingerprint: String,
    pub user_email: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// Whether the expiry has passed: the key answers 401.
    pub expired: bool,
    /// The key itself: in the answer to its creation only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyDeleted {
    pub id: String,
    pub deleted: bool,
}

fn response(k: &ApiKey, secret: Option<String>) -> ApiKeyResponse {
    ApiKeyResponse {
        id: k.id.to_string(),
        name: k.name.clone(),
        description: k.description.clone(),
        key_prefix: k.prefix.clone(),
        fingerprint: k.fingerprint.clone(),
        user_email: k.user_email.clone(),
        created_at: k.created_at.to_rfc3339(),
        expires_at: k.expires_at.map(Timestamp::to_rfc3339),
        expired: !k.is_live(Timestamp::now()),
        key: secret,
    }
}

fn instant(field: &str, raw: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse_rfc3339(raw)
        .ok_or_else(|| ApiError::body_field(field, format!("{raw:?} is not an RFC 3339 time")))
}

#[utoipa::path(post, path = "/v1/api-keys/", tag = "api-keys", request_body = CreateApiKeyRequest,
    responses((status = 200, description = "The new key, with the key itself (shown once)",
        body = ApiKeyResponse), (status = 422, body = HttpValidationError)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<CreateApiKeyRequest>,
) -> Result<Json<ApiKeyResponse>, ApiError> {
    let expires_at = match (body.expires_at.as_deref(), body.expires_in_days) {
        (Some(_), Some(_)) => {
            return Err(ApiError::body_field(
                "expires_in_days",
                "set expires_at or expires_in_days, not both",
            ))
        }
        (Some(raw), None) => Some(instant("expires_at", raw)?),
        (None, Some(days)) if (1..=MAX_EXPIRY_DAYS).contains(&days) => {
            Some(Timestamp::now().plus_seconds(u64::from(days) * 86_400))
        }
        (None, Some(_)) => {
            return Err(ApiError::body_field(
                "expires_in_days",
                format!("must be between 1 and {MAX_EXPIRY_DAYS}"),
            ))
        }
        (None, None) => None,
    };
    let settings = KeySettings {
        name: body.name.unwrap_or_else(|| "api key".to_owned()),
        description: body.description,
        expires_at,
        user_email: body.user_email,
    };
    let (key, secret) = state
        .service
        .accounts()
        .create_key_with(&account, settings)
        .await?;
    Ok(Json(response(&key, Some(secret.expose().to_owned()))))
}

#[utoipa::path(get, path = "/v1/api-keys/", tag = "api-keys",
    responses((status = 200, description = "The account's keys, oldest first; never the keys themselves",
        body = Vec<ApiKeyResponse>)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(account): Caller,
) -> Result<Json<Vec<ApiKeyResponse>>, ApiError> {
    let keys = state.service.accounts().account_keys(&account).await?;
    Ok(Json(keys.iter().map(|k| response(k, None)).collect()))
}

#[utoipa::path(get, path = "/v1/api-keys/{key_id}", tag = "api-keys",
    params(("key_id" = String, Path)),
    responses((status = 200, body = ApiKeyResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<ApiKeyResponse>, ApiError> {
    let key = state.service.accounts().account_key(&account, &id).await?;
    Ok(Json(response(&key, None)))
}

#[utoipa::path(patch, path = "/v1/api-keys/{key_id}", tag = "api-keys",
    params(("key_id" = String, Path)), request_body = UpdateApiKeyRequest,
    responses((status = 200, body = ApiKeyResponse), (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
    ValidJson(body): ValidJson<UpdateApiKeyRequest>,
) -> Result<Json<ApiKeyResponse>, ApiError> {
    let expires_at = match nullable_text("expires_at", body.expires_at)? {
        Some(Some(raw)) => Some(Some(instant("expires_at", &raw)?)),
        Some(None) => Some(None),
        None => None,
    };
    let patch = KeyPatch {
        name: body.name,
        description: nullable_text("description", body.description)?,
        expires_at,
    };
    let key = state
        .service
        .accounts()
        .update_account_key(&account, &id, patch)
        .await?;
    Ok(Json(response(&key, None)))
}

#[utoipa::path(delete, path = "/v1/api-keys/{key_id}", tag = "api-keys",
    params(("key_id" = String, Path)),
    responses((status = 200, body = ApiKeyDeleted), (status = 404, body = ErrorDetail)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<ApiKeyDeleted>, ApiError> {
    state
        .service
        .accounts()
        .delete_account_key(&account, &id)
        .await?;
    Ok(Json(ApiKeyDeleted { id, deleted: true }))
}
