//! Custom domains as the `instavm` SDK manages them: a hostname routed to
//! one of the account's shares, its DNS record made through a provider
//! (`rfc2136`), TLS served by the share proxy. DNS credentials are sealed
//! and never returned. Ids are integers, as the SDK expects.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use paddock_core::ids::ShareId;
use paddock_core::model::{CustomDomain, DnsCredentials};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidPath};
use super::shares::ShareUrls;
use crate::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateDomainRequest {
    /// The hostname, e.g. `app.example.com`.
    pub domain: String,
    pub share_id: String,
    /// `rfc2136`, or null when the operator makes the DNS record.
    pub dns_provider: Option<String>,
    /// For `rfc2136`: `server` (ip[:port]), `zone`, `key_name`,
    /// `key_secret` (base64) and optionally `key_algorithm`
    /// (`hmac-sha256` by default).
    pub dns_credentials: Option<BTreeMap<String, String>>,
}

/// `custom_domain` in `POST /v1/vms` (the VM's `share` is the target).
#[derive(Debug, Deserialize, ToSchema)]
pub struct VmDomainRequest {
    pub domain: String,
    pub dns_provider: Option<String>,
    pub dns_credentials: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DomainResponse {
    pub id: i64,
    pub domain: String,
    pub share_id: String,
    /// `pending`, `issued` (record made, TLS served) or `failed`.
    pub status: String,
    pub dns_provider: Option<String>,
    pub last_error: Option<String>,
    /// `https://{domain}/` on the share proxy's TLS port.
    pub url: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DomainListResponse {
    pub domains: Vec<DomainResponse>,
}

pub fn domain_response(urls: &ShareUrls, d: &CustomDomain) -> DomainResponse {
    DomainResponse {
        id: d.id,
        url: urls.domain_url(&d.domain),
        domain: d.domain.clone(),
        share_id: d.share_id.to_string(),
        status: d.status.as_str().to_owned(),
        dns_provider: d.dns_provider.clone(),
        last_error: d.last_error.clone(),
        created_at: d.created_at.to_rfc3339(),
        updated_at: d.updated_at.to_rfc3339(),
    }
}

fn domain_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| ApiError::not_found("Custom domain"))
}

/// Parses `custom_domain` of `POST /v1/vms` before anything is created.
pub(crate) fn parse_vm_domain(raw: &Value) -> Result<VmDomainRequest, ApiError> {
    serde_json::from_value(raw.clone()).map_err(|e| {
        ApiError::field(
            &["body", "custom_domain"],
            format!("{{domain, dns_provider, dns_credentials}}: {e}"),
            "type_error",
        )
    })
}

/// Route a hostname to a share, making its DNS record.
#[utoipa::path(post, path = "/v1/custom-domains", tag = "custom-domains",
    request_body = CreateDomainRequest,
    responses((status = 200, body = DomainResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<CreateDomainRequest>,
) -> Result<Json<DomainResponse>, ApiError> {
    let share: ShareId = body
        .share_id
        .parse()
        .map_err(|_| ApiError::not_found("Share"))?;
    let creds: Option<DnsCredentials> = body.dns_credentials;
    let d = state
        .service
        .shares()
        .create_custom_domain(
            &account,
            &share,
            &body.domain,
            body.dns_provider.as_deref(),
            creds,
        )
        .await?;
    Ok(Json(domain_response(&state.share_urls, &d)))
}

#[utoipa::path(get, path = "/v1/custom-domains", tag = "custom-domains",
    responses((status = 200, body = DomainListResponse)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(account): Caller,
) -> Result<Json<DomainListResponse>, ApiError> {
    let domains = state.service.shares().list_custom_domains(&account).await?;
    Ok(Json(DomainListResponse {
        domains: domains
            .iter()
            .map(|d| domain_response(&state.share_urls, d))
            .collect(),
    }))
}

#[utoipa::path(get, path = "/v1/custom-domains/{domain_id}", tag = "custom-domains",
    params(("domain_id" = i64, Path)),
    responses((status = 200, body = DomainResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<DomainResponse>, ApiError> {
    let d = state
        .service
        .shares()
        .get_custom_domain(&account, domain_id(&raw)?)
        .await?;
    Ok(Json(domain_response(&state.share_urls, &d)))
}

/// Try the DNS record again (after a failure).
#[utoipa::path(post, path = "/v1/custom-domains/{domain_id}/verify", tag = "custom-domains",
    params(("domain_id" = i64, Path)),
    responses((status = 200, body = DomainResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<DomainResponse>, ApiError> {
    let d = state
        .service
        .shares()
        .verify_custom_domain(&account, domain_id(&raw)?)
        .await?;
    Ok(Json(domain_response(&state.share_urls, &d)))
}

/// Whether the certificate is there and the share behind it answers.
#[utoipa::path(get, path = "/v1/custom-domains/{domain_id}/health", tag = "custom-domains",
    params(("domain_id" = i64, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorDetail)))]
pub(crate) async fn health(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<Value>, ApiError> {
    let d = state
        .service
        .shares()
        .get_custom_domain(&account, domain_id(&raw)?)
        .await?;
    let proxy_active = state.vms().share_route(&d.share_id).await.is_ok();
    let configured = state.share_urls.has_configured_cert(&d.domain);
    Ok(Json(json!({
        "id": d.id,
        "domain": d.domain,
        "status": d.status.as_str(),
        // Without an operator's certificate the proxy makes a self-signed
        // one on the first TLS connection: there always is one.
        "cert_present": true,
        "key_present": true,
        "certificate": if configured { "configured" } else { "self-signed" },
        "proxy_active": proxy_active,
        "last_error": d.last_error,
    })))
}

#[utoipa::path(delete, path = "/v1/custom-domains/{domain_id}", tag = "custom-domains",
    params(("domain_id" = i64, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorDetail)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = domain_id(&raw)?;
    state
        .service
        .shares()
        .delete_custom_domain(&account, id)
        .await?;
    Ok(Json(json!({"id": id, "deleted": true})))
}
