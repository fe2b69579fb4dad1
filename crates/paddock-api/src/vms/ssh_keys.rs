//! SSH public keys as the `instavm` SDK manages them (`/v1/ssh-keys`):
//! add returns the record with its fingerprint, list is `{"keys": […]}`,
//! ids are integers.

use axum::extract::State;
use axum::Json;
use paddock_core::model::SshKey;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, CallerUser, ValidJson, ValidPath};
use crate::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct AddSshKeyRequest {
    /// One OpenSSH public key line: `ssh-ed25519 AAAA… comment`.
    pub public_key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SshKeyResponse {
    pub id: i64,
    pub public_key: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub key_type: String,
    pub comment: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SshKeyList {
    pub keys: Vec<SshKeyResponse>,
}

fn response(k: &SshKey) -> SshKeyResponse {
    SshKeyResponse {
        id: k.id,
        public_key: k.public_key.clone(),
        fingerprint: k.fingerprint.clone(),
        key_type: k.key_type.clone(),
        comment: k.comment.clone(),
        created_at: k.created_at.to_rfc3339(),
    }
}

#[utoipa::path(post, path = "/v1/ssh-keys", tag = "ssh-keys", request_body = AddSshKeyRequest,
    responses((status = 200, body = SshKeyResponse), (status = 409, body = ErrorDetail),
        (status = 422, body = HttpValidationError)))]
pub(crate) async fn add(
    State(state): State<AppState>,
    CallerUser(who): CallerUser,
    ValidJson(body): ValidJson<AddSshKeyRequest>,
) -> Result<Json<SshKeyResponse>, ApiError> {
    let key = state
        .service
        .ssh_keys()
        .add_ssh_key(&who, &body.public_key)
        .await?;
    Ok(Json(response(&key)))
}

#[utoipa::path(get, path = "/v1/ssh-keys", tag = "ssh-keys",
    responses((status = 200, body = SshKeyList)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(account): Caller,
) -> Result<Json<SshKeyList>, ApiError> {
    let keys = state.service.ssh_keys().list_ssh_keys(&account).await?;
    Ok(Json(SshKeyList {
        keys: keys.iter().map(response).collect(),
    }))
}

#[utoipa::path(delete, path = "/v1/ssh-keys/{key_id}", tag = "ssh-keys",
    params(("key_id" = i64, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorDetail)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = raw
        .parse::<i64>()
        .map_err(|_| ApiError::not_found("SSH key"))?;
    state
        .service
        .ssh_keys()
        .delete_ssh_key(&account, id)
        .await?;
    Ok(Json(json!({"id": id, "deleted": true})))
}
