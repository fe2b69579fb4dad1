//! `/v1/vaults/{vault_id}/services…`, `/v1/vaults/catalog` and
//! `/v1/vaults/{vault_id}/request-logs`: hosts a vault binds to one of its
//! credentials, which paddock's egress path adds to a VM's requests to
//! that host (the VM holds a placeholder). Answers name credentials,
//! never show their values.

use axum::extract::State;
use axum::Json;
use paddock_core::ids::VaultServiceId;
use paddock_core::model::{ServiceAuth, VaultRequestLog, VaultService};
use paddock_core::vault_services::{NewService, ServicePatch, CATALOG};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidPath, ValidQuery};
use super::vaults::vault_id;
use crate::AppState;

fn service_id(raw: &str) -> Result<VaultServiceId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("Vault service"))
}

/// An `auth_config`, read as the SDK sends it.
fn auth(config: &serde_json::Value) -> Result<ServiceAuth, ApiError> {
    ServiceAuth::from_json(config).map_err(|e| {
        let loc: Vec<&str> = std::iter::once("body").chain(e.field.split('.')).collect();
        ApiError::field(&loc, e.message, "value_error")
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VaultServiceResponse {
    pub id: String,
    pub service_id: String,
    pub vault_id: String,
    pub host: String,
    /// `{"type": "bearer", "token": NAME}`, `{"type": "api-key", "header":
    /// H, "key": NAME}`, `{"type": "basic", "username": U, "password":
    /// NAME}` or `{"type": "url-path", "token": NAME, "placeholder": P}`:
    /// credentials by name.
    #[schema(value_type = Object)]
    pub auth_config: serde_json::Value,
    pub description: Option<String>,
    pub enabled: bool,
    pub created_at: String,
}

impl From<VaultService> for VaultServiceResponse {
    fn from(s: VaultService) -> Self {
        Self {
            id: s.id.to_string(),
            service_id: s.id.to_string(),
            vault_id: s.vault_id.to_string(),
            host: s.host,
            auth_config: s.auth.to_json(),
            description: s.description,
            enabled: s.enabled,
            created_at: s.created_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VaultServiceListResponse {
    pub services: Vec<VaultServiceResponse>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AddVaultServiceRequest {
    /// The DNS name requests go to (`api.openai.com`).
    pub host: String,
    #[schema(value_type = Object)]
    pub auth_config: serde_json::Value,
    pub description: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
}

/// Bind a host to one of the vault's credentials: a VM with the vault
/// reaches the host through paddock, which adds the credential to each
/// HTTPS request on its way out (the VM's own copy is a placeholder). The
/// credential must be in the vault.
#[utoipa::path(post, path = "/v1/vaults/{vault_id}/services", tag = "vaults",
    params(("vault_id" = String, Path)), request_body = AddVaultServiceRequest,
    responses((status = 200, body = VaultServiceResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn add_service(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<AddVaultServiceRequest>,
) -> Result<Json<VaultServiceResponse>, ApiError> {
    let new = NewService {
        auth: auth(&body.auth_config)?,
        host: body.host,
        description: body.description,
        enabled: body.enabled.unwrap_or(true),
    };
    let service = state
        .service
        .vaults()
        .add_service(&account, &vault_id(&raw)?, new)
        .await?;
    Ok(Json(service.into()))
}

/// The hosts the vault binds.
#[utoipa::path(get, path = "/v1/vaults/{vault_id}/services", tag = "vaults",
    params(("vault_id" = String, Path)),
    responses((status = 200, body = VaultServiceListResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn list_services(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<VaultServiceListResponse>, ApiError> {
    let services = state
        .service
        .vaults()
        .list_services(&account, &vault_id(&raw)?)
        .await?;
    Ok(Json(VaultServiceListResponse {
        services: services.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/vaults/{vault_id}/services/{service_id}", tag = "vaults",
    params(("vault_id" = String, Path), ("service_id" = String, Path)),
    responses((status = 200, body = VaultServiceResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get_service(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((vault, service)): ValidPath<(String, String)>,
) -> Result<Json<VaultServiceResponse>, ApiError> {
    let service = state
        .service
        .vaults()
        .get_service(&account, &vault_id(&vault)?, &service_id(&service)?)
        .await?;
    Ok(Json(service.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateVaultServiceRequest {
    #[schema(value_type = Option<Object>)]
    pub auth_config: Option<serde_json::Value>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// Change a binding's auth, description or whether it is in force.
#[utoipa::path(patch, path = "/v1/vaults/{vault_id}/services/{service_id}", tag = "vaults",
    params(("vault_id" = String, Path), ("service_id" = String, Path)),
    request_body = UpdateVaultServiceRequest,
    responses((status = 200, body = VaultServiceResponse), (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError)))]
pub(crate) async fn update_service(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((vault, service)): ValidPath<(String, String)>,
    ValidJson(body): ValidJson<UpdateVaultServiceRequest>,
) -> Result<Json<VaultServiceResponse>, ApiError> {
    let patch = ServicePatch {
        auth: body.auth_config.as_ref().map(auth).transpose()?,
        description: body.description,
        enabled: body.enabled,
    };
    let service = state
        .service
        .vaults()
        .update_service(&account, &vault_id(&vault)?, &service_id(&service)?, patch)
        .await?;
    Ok(Json(service.into()))
}

/// Unbind a host: VMs with the vault reach it directly again.
#[utoipa::path(delete, path = "/v1/vaults/{vault_id}/services/{service_id}", tag = "vaults",
    params(("vault_id" = String, Path), ("service_id" = String, Path)),
    responses((status = 200, description = "deleted"), (status = 404, body = ErrorDetail)))]
pub(crate) async fn delete_service(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((vault, service)): ValidPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = service_id(&service)?;
    state
        .service
        .vaults()
        .delete_service(&account, &vault_id(&vault)?, &id)
        .await?;
    Ok(Json(json!({"deleted": true, "service_id": id.to_string()})))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct FromTemplatesRequest {
    /// Catalog ids (`GET /v1/vaults/catalog`).
    pub template_ids: Vec<String>,
}

/// Bind the catalog's templates: each uses the credential of its
/// conventional name (`OPENAI_API_KEY`), which the vault must have. A
/// host already bound is left as it is. Answers the vault's services.
#[utoipa::path(post, path = "/v1/vaults/{vault_id}/services:from_template", tag = "vaults",
    params(("vault_id" = String, Path)), request_body = FromTemplatesRequest,
    responses((status = 200, body = VaultServiceListResponse), (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError)))]
pub(crate) async fn add_services_from_templates(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<FromTemplatesRequest>,
) -> Result<Json<VaultServiceListResponse>, ApiError> {
    let services = state
        .service
        .vaults()
        .add_services_from_templates(&account, &vault_id(&raw)?, &body.template_ids)
        .await?;
    Ok(Json(VaultServiceListResponse {
        services: services.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceTemplateResponse {
    pub id: String,
    pub name: String,
    pub host: String,
    /// `bearer` or `api-key`.
    pub auth_type: String,
    pub header: Option<String>,
    /// The credential it uses, by its conventional name.
    pub credential_key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogResponse {
    pub templates: Vec<ServiceTemplateResponse>,
}

/// The catalog of service templates: common APIs and their auth shapes.
#[utoipa::path(get, path = "/v1/vaults/catalog", tag = "vaults",
    responses((status = 200, body = CatalogResponse)))]
pub(crate) async fn service_catalog(Caller(_account): Caller) -> Json<CatalogResponse> {
    Json(CatalogResponse {
        templates: CATALOG
            .iter()
            .map(|t| ServiceTemplateResponse {
                id: t.id.into(),
                name: t.name.into(),
                host: t.host.into(),
                auth_type: t.auth_type.into(),
                header: t.header.map(Into::into),
                credential_key: t.credential_key.into(),
            })
            .collect(),
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestLogQuery {
    /// 1 to 1000; default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VaultRequestLogResponse {
    pub id: i64,
    pub vault_id: String,
    pub vm_id: String,
    pub service_id: String,
    pub host: String,
    pub method: String,
    /// The path as the VM sent it (a placeholder, never the credential);
    /// no query string.
    pub path: String,
    pub status: u16,
    pub status_code: u16,
    pub duration_ms: u64,
    pub credential_name: String,
    pub timestamp: String,
    pub created_at: String,
}

impl From<VaultRequestLog> for VaultRequestLogResponse {
    fn from(l: VaultRequestLog) -> Self {
        let at = l.created_at.to_rfc3339();
        Self {
            id: l.id,
            vault_id: l.request.vault_id.to_string(),
            vm_id: l.request.vm_id.to_string(),
            service_id: l.request.service_id.to_string(),
            host: l.request.host,
            method: l.request.method,
            path: l.request.path,
            status: l.request.status,
            status_code: l.request.status,
            duration_ms: l.request.duration_ms,
            credential_name: l.request.credential_name,
            timestamp: at.clone(),
            created_at: at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RequestLogResponse {
    pub logs: Vec<VaultRequestLogResponse>,
}

/// The newest requests paddock sent with the vault's credentials: host,
/// method, path, status and time; never a body, query or secret.
#[utoipa::path(get, path = "/v1/vaults/{vault_id}/request-logs", tag = "vaults",
    params(("vault_id" = String, Path), RequestLogQuery),
    responses((status = 200, body = RequestLogResponse), (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError)))]
pub(crate) async fn service_request_logs(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<RequestLogQuery>,
) -> Result<Json<RequestLogResponse>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field(
            &["query", "limit"],
            "must be 1 to 1000",
            "value_error",
        ));
    }
    let logs = state
        .service
        .vaults()
        .request_logs(&account, &vault_id(&raw)?, limit)
        .await?;
    Ok(Json(RequestLogResponse {
        logs: logs.into_iter().map(Into::into).collect(),
    }))
}
