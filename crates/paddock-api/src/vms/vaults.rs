//! `/v1/vaults`: vaults of named secrets, and `POST /v1/vms/{vm_id}/stage-env`.
//! No response carries a secret value: credentials are listed by name.

use axum::extract::State;
use axum::Json;
use paddock_core::ids::{CredentialId, VaultId};
use paddock_core::model::{Credential, Env, SecretValue, Vault};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidPath};
use super::vm_id;
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct VaultResponse {
    pub id: String,
    pub vault_id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Vault> for VaultResponse {
    fn from(v: Vault) -> Self {
        Self {
            id: v.id.to_string(),
            vault_id: v.id.to_string(),
            name: v.name,
            description: v.description,
            created_at: v.created_at.to_rfc3339(),
            updated_at: v.updated_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VaultListResponse {
    pub vaults: Vec<VaultResponse>,
}

/// A credential's metadata; its value is write-only.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialResponse {
    pub id: String,
    pub credential_id: String,
    pub vault_id: String,
    /// The env var it becomes in a VM.
    pub name: String,
    pub credential_type: String,
    pub description: Option<String>,
    pub created_at: String,
    pub rotated_at: Option<String>,
}

impl From<Credential> for CredentialResponse {
    fn from(c: Credential) -> Self {
        Self {
            id: c.id.to_string(),
            credential_id: c.id.to_string(),
            vault_id: c.vault_id.to_string(),
            name: c.name,
            credential_type: c.credential_type,
            description: c.description,
            created_at: c.created_at.to_rfc3339(),
            rotated_at: c.rotated_at.map(|t| t.to_rfc3339()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialListResponse {
    pub credentials: Vec<CredentialResponse>,
}

pub(super) fn vault_id(raw: &str) -> Result<VaultId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("Vault"))
}

fn credential_id(raw: &str) -> Result<CredentialId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("Credential"))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateVaultRequest {
    pub name: String,
    pub description: Option<String>,
}

#[utoipa::path(post, path = "/v1/vaults", tag = "vaults", request_body = CreateVaultRequest,
    responses((status = 200, body = VaultResponse), (status = 422, body = HttpValidationError)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<CreateVaultRequest>,
) -> Result<Json<VaultResponse>, ApiError> {
    let vault = state
        .service
        .vaults()
        .create_vault(&account, body.name, body.description)
        .await?;
    Ok(Json(vault.into()))
}

#[utoipa::path(get, path = "/v1/vaults", tag = "vaults",
    responses((status = 200, body = VaultListResponse)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(account): Caller,
) -> Result<Json<VaultListResponse>, ApiError> {
    let vaults = state.service.vaults().list_vaults(&account).await?;
    Ok(Json(VaultListResponse {
        vaults: vaults.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/vaults/{vault_id}", tag = "vaults",
    params(("vault_id" = String, Path)),
    responses((status = 200, body = VaultResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<VaultResponse>, ApiError> {
    let vault = state
        .service
        .vaults()
        .get_vault(&account, &vault_id(&raw)?)
        .await?;
    Ok(Json(vault.into()))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct UpdateVaultRequest {
    pub name: Option<String>,
    pub description: Option<String>,
}

#[utoipa::path(patch, path = "/v1/vaults/{vault_id}", tag = "vaults",
    params(("vault_id" = String, Path)), request_body = UpdateVaultRequest,
    responses((status = 200, body = VaultResponse), (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<UpdateVaultRequest>,
) -> Result<Json<VaultResponse>, ApiError> {
    let vault = state
        .service
        .vaults()
        .update_vault(&account, &vault_id(&raw)?, body.name, body.description)
        .await?;
    Ok(Json(vault.into()))
}

/// Delete a vault and every credential in it.
#[utoipa::path(delete, path = "/v1/vaults/{vault_id}", tag = "vaults",
    params(("vault_id" = String, Path)),
    responses((status = 200, description = "deleted"), (status = 404, body = ErrorDetail)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = vault_id(&raw)?;
    state.service.vaults().delete_vault(&account, &id).await?;
    Ok(Json(json!({"deleted": true, "vault_id": id.to_string()})))
}

/// Credential names only: what a vault offers, never the values.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiscoverResponse {
    pub vault_id: String,
    pub name: String,
    pub credentials: Vec<String>,
    /// The hosts its services bind.
    pub services: Vec<String>,
}

#[utoipa::path(get, path = "/v1/vaults/{vault_id}/discover", tag = "vaults",
    params(("vault_id" = String, Path)),
    responses((status = 200, body = DiscoverResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn discover(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<DiscoverResponse>, ApiError> {
    let id = vault_id(&raw)?;
    let vaults = state.service.vaults();
    let (vault, credentials) = vaults.vault_with_credentials(&account, &id).await?;
    let services = vaults.list_services(&account, &id).await?;
    Ok(Json(DiscoverResponse {
        vault_id: id.to_string(),
        name: vault.name,
        credentials: credentials.into_iter().map(|c| c.name).collect(),
        services: services.into_iter().map(|s| s.host).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/vaults/{vault_id}/credentials", tag = "vaults",
    params(("vault_id" = String, Path)),
    responses((status = 200, body = CredentialListResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn list_credentials(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<CredentialListResponse>, ApiError> {
    let credentials = state
        .service
        .vaults()
        .list_credentials(&account, &vault_id(&raw)?)
        .await?;
    Ok(Json(CredentialListResponse {
        credentials: credentials.into_iter().map(Into::into).collect(),
    }))
}

/// A credential to add; `value` is sealed and never returned.
#[derive(Deserialize, ToSchema)]
pub struct AddCredentialRequest {
    /// The env var it becomes: `[A-Za-z_][A-Za-z0-9_]*`.
    pub name: String,
    pub value: String,
    pub credential_type: Option<String>,
    pub description: Option<String>,
}

// Hand-written so that a request logged by accident shows no value.
impl std::fmt::Debug for AddCredentialRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddCredentialRequest")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[utoipa::path(post, path = "/v1/vaults/{vault_id}/credentials", tag = "vaults",
    params(("vault_id" = String, Path)), request_body = AddCredentialRequest,
    responses((status = 200, body = CredentialResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn add_credential(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<AddCredentialRequest>,
) -> Result<Json<CredentialResponse>, ApiError> {
    let credential = state
        .service
        .vaults()
        .add_credential(
            &account,
            &vault_id(&raw)?,
            body.name,
            SecretValue(body.value),
            body.credential_type.unwrap_or_else(|| "api_key".into()),
            body.description,
        )
        .await?;
    Ok(Json(credential.into()))
}

#[derive(Deserialize, ToSchema)]
pub struct RotateCredentialRequest {
    pub value: String,
}

impl std::fmt::Debug for RotateCredentialRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotateCredentialRequest")
            .finish_non_exhaustive()
    }
}

/// Replace a credential's value, keeping its name.
#[utoipa::path(post, path = "/v1/vaults/{vault_id}/credentials/{credential_id}/rotate",
    tag = "vaults", params(("vault_id" = String, Path), ("credential_id" = String, Path)),
    request_body = RotateCredentialRequest,
    responses((status = 200, body = CredentialResponse), (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError)))]
pub(crate) async fn rotate_credential(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((vault, credential)): ValidPath<(String, String)>,
    ValidJson(body): ValidJson<RotateCredentialRequest>,
) -> Result<Json<CredentialResponse>, ApiError> {
    let credential = state
        .service
        .vaults()
        .rotate_credential(
            &account,
            &vault_id(&vault)?,
            &credential_id(&credential)?,
            SecretValue(body.value),
        )
        .await?;
    Ok(Json(credential.into()))
}

#[utoipa::path(delete, path = "/v1/vaults/{vault_id}/credentials/{credential_id}",
    tag = "vaults", params(("vault_id" = String, Path), ("credential_id" = String, Path)),
    responses((status = 200, description = "deleted"), (status = 404, body = ErrorDetail)))]
pub(crate) async fn delete_credential(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((vault, credential)): ValidPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = credential_id(&credential)?;
    state
        .service
        .vaults()
        .delete_credential(&account, &vault_id(&vault)?, &id)
        .await?;
    Ok(Json(
        json!({"deleted": true, "credential_id": id.to_string()}),
    ))
}

#[derive(Deserialize, ToSchema)]
pub struct StageEnvEntry {
    pub env_name: String,
    pub value: String,
}

#[derive(Deserialize, ToSchema)]
pub struct StageEnvRequest {
    pub entries: Vec<StageEnvEntry>,
}

impl std::fmt::Debug for StageEnvRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.env_name))
            .finish()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StageEnvResponse {
    pub vm_id: String,
    /// The names staged (never the values).
    pub staged: Vec<String>,
}

/// Stage secret env vars into a running VM: every later command sees
/// them. Held in the sandbox's memory only; never stored by the server.
#[utoipa::path(post, path = "/v1/vms/{vm_id}/stage-env", tag = "vaults",
    params(("vm_id" = String, Path)), request_body = StageEnvRequest,
    responses((status = 200, body = StageEnvResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn stage_env(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<StageEnvRequest>,
) -> Result<Json<StageEnvResponse>, ApiError> {
    let id = vm_id(&raw)?;
    let names: Vec<String> = body.entries.iter().map(|e| e.env_name.clone()).collect();
    let vars = body
        .entries
        .into_iter()
        .map(|e| (e.env_name, e.value))
        .collect();
    let env = Env::new(vars)
        .map_err(|e| ApiError::field(&["body", "entries", &e.name], e.reason, "value_error"))?;
    state.vms().stage_env(&account, &id, env).await?;
    Ok(Json(StageEnvResponse {
        vm_id: id.to_string(),
        staged: names,
    }))
}
