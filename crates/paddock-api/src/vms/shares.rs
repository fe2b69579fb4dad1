//! Shares: a VM's port published through the share proxy, as the
//! `instavm` SDK manages them (`/v1/shares`) and per VM
//! (`/v1/vms/{vm_id}/shares`). A private share's token and one-time login
//! URL are returned once, when they are made.

use axum::extract::State;
use axum::Json;
use paddock_core::ids::{AccountId, ShareId, VmId};
use paddock_core::model::NewShare;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidPath, ValidQuery};
use super::{session_id, vm_id};
use crate::AppState;

/// How share URLs are written: `{scheme}://{label}.{domain}{:port}/`.
#[derive(Debug, Clone)]
pub struct ShareUrls {
    pub scheme: String,
    pub domain: String,
    /// Omitted from URLs when `None` (80/443 behind another proxy).
    pub port: Option<u16>,
    /// The TLS port of custom domains' URLs (omitted when 443 or `None`).
    pub tls_port: Option<u16>,
    /// Where operators' certificates are (`{domain}.crt`, `.key`).
    pub certs_dir: Option<std::path::PathBuf>,
}

impl ShareUrls {
    fn port_suffix(&self) -> String {
        self.port.map(|p| format!(":{p}")).unwrap_or_default()
    }

    pub fn host_url(&self, label: &str) -> String {
        format!(
            "{}://{label}.{}{}/",
            self.scheme,
            self.domain,
            self.port_suffix()
        )
    }

    pub fn domain_url(&self, domain: &str) -> String {
        let port = self
            .tls_port
            .filter(|p| *p != 443)
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        format!("https://{domain}{port}/")
    }

    pub fn has_configured_cert(&self, domain: &str) -> bool {
        self.certs_dir.as_ref().is_some_and(|d| {
            d.join(format!("{domain}.crt")).is_file() && d.join(format!("{domain}.key")).is_file()
        })
    }

    pub fn path_url(&self, label: &str) -> String {
        format!(
            "{}://{}{}/_share/{label}/",
            self.scheme,
            self.domain,
            self.port_suffix()
        )
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShareResponse {
    pub share_id: String,
    pub vm_id: String,
    pub port: u16,
    pub is_public: bool,
    /// `{scheme}://{label}.{share_domain}/` (wildcard DNS).
    pub url: String,
    /// The same share without wildcard DNS: `/_share/{label}/`.
    pub path_url: String,
    pub created_at: String,
    /// A private share's access token (header `X-Share-Token`, bearer or
    /// basic-auth password). Only in the response that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Opens the private share in a browser once: sets a cookie, then the
    /// link stops working. Only in the response that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_url: Option<String>,
}

pub fn share_response(urls: &ShareUrls, s: &NewShare) -> ShareResponse {
    let label = s.share.host_label();
    let url = urls.host_url(label);
    ShareResponse {
        share_id: s.share.id.to_string(),
        vm_id: s.share.vm_id.to_string(),
        port: s.share.port,
        is_public: s.share.is_public,
        path_url: urls.path_url(label),
        created_at: s.share.created_at.to_rfc3339(),
        token: s.token.as_ref().map(|t| t.expose().to_owned()),
        login_url: s
            .login
            .as_ref()
            .map(|l| format!("{url}?paddock_login={}", l.expose())),
        url,
    }
}

fn plain(share: paddock_core::model::Share) -> NewShare {
    NewShare {
        share,
        token: None,
        login: None,
    }
}

/// `share` in `POST /v1/vms` and the bodies below: `port` 1..65535,
/// `is_public` (default false).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ShareRequest {
    pub port: i64,
    pub is_public: Option<bool>,
}

pub(crate) fn share_port(port: i64, loc: &[&str]) -> Result<u16, ApiError> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| ApiError::field(loc, "must be from 1 to 65535", "value_error"))
}

/// Parses `share` of `POST /v1/vms` before anything is created.
pub(crate) fn parse_create_share(raw: &Value) -> Result<(u16, bool), ApiError> {
    let req: ShareRequest = serde_json::from_value(raw.clone()).map_err(|e| {
        ApiError::field(
            &["body", "share"],
            format!("{{port, is_public}}: {e}"),
            "type_error",
        )
    })?;
    Ok((
        share_port(req.port, &["body", "share", "port"])?,
        req.is_public.unwrap_or(false),
    ))
}

/// `POST /v1/shares`: the SDK names the VM, or the session whose VM it is.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateShareRequest {
    pub port: i64,
    pub is_public: Option<bool>,
    pub vm_id: Option<String>,
    pub session_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateShareRequest {
    pub is_public: Option<bool>,
    /// Deletes the share.
    pub revoke: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShareListQuery {
    /// Only this VM's shares.
    pub vm_id: Option<String>,
}

fn share_id(raw: &str) -> Result<ShareId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("Share"))
}

async fn vm_for(
    state: &AppState,
    account: &AccountId,
    vm: Option<String>,
    session: Option<String>,
) -> Result<VmId, ApiError> {
    match (vm, session) {
        (Some(v), _) => vm_id(&v),
        (None, Some(s)) => Ok(state
            .vms()
            .session_latest_vm(account, &session_id(&s)?)
            .await?
            .id),
        (None, None) => Err(ApiError::body_field(
            "vm_id",
            "name the VM (vm_id) or its session (session_id)",
        )),
    }
}

/// Publish a VM's port.
#[utoipa::path(post, path = "/v1/shares", tag = "shares", request_body = CreateShareRequest,
    responses((status = 200, body = ShareResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<CreateShareRequest>,
) -> Result<Json<ShareResponse>, ApiError> {
    let port = share_port(body.port, &["body", "port"])?;
    let vm = vm_for(&state, &account, body.vm_id, body.session_id).await?;
    let made = state
        .vms()
        .create_share(&account, &vm, port, body.is_public.unwrap_or(false))
        .await?;
    Ok(Json(share_response(&state.share_urls, &made)))
}

/// The account's shares, newest first.
#[utoipa::path(get, path = "/v1/shares", tag = "shares", params(ShareListQuery),
    responses((status = 200, body = Vec<ShareResponse>), (status = 404, body = ErrorDetail, description = "The `vm_id` filter names no VM of the account")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidQuery(q): ValidQuery<ShareListQuery>,
) -> Result<Json<Vec<ShareResponse>>, ApiError> {
    let vm = q.vm_id.as_deref().map(vm_id).transpose()?;
    let shares = state.vms().list_shares(&account, vm.as_ref()).await?;
    Ok(Json(
        shares
            .into_iter()
            .map(|s| share_response(&state.share_urls, &plain(s)))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/shares/{share_id}", tag = "shares",
    params(("share_id" = String, Path)),
    responses((status = 200, body = ShareResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<ShareResponse>, ApiError> {
    let share = state
        .service
        .shares()
        .get_share(&account, &share_id(&raw)?)
        .await?;
    Ok(Json(share_response(&state.share_urls, &plain(share))))
}

/// Make a share public or private (a new token when it becomes private),
/// or revoke it.
#[utoipa::path(patch, path = "/v1/shares/{share_id}", tag = "shares",
    params(("share_id" = String, Path)), request_body = UpdateShareRequest,
    responses((status = 200, body = Object), (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<UpdateShareRequest>,
) -> Result<Json<Value>, ApiError> {
    let id = share_id(&raw)?;
    if body.revoke == Some(true) {
        state.service.shares().delete_share(&account, &id).await?;
        return Ok(Json(json!({"share_id": id.to_string(), "revoked": true})));
    }
    let Some(is_public) = body.is_public else {
        return Err(ApiError::body_field("is_public", "set is_public or revoke"));
    };
    let made = state
        .service
        .shares()
        .set_share_visibility(&account, &id, is_public)
        .await?;
    Ok(Json(json!(share_response(&state.share_urls, &made))))
}

#[utoipa::path(delete, path = "/v1/shares/{share_id}", tag = "shares",
    params(("share_id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorDetail)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = share_id(&raw)?;
    state.service.shares().delete_share(&account, &id).await?;
    Ok(Json(json!({"share_id": id.to_string(), "deleted": true})))
}

/// Publish a port of this VM.
#[utoipa::path(post, path = "/v1/vms/{vm_id}/shares", tag = "shares",
    params(("vm_id" = String, Path)), request_body = ShareRequest,
    responses((status = 200, body = ShareResponse), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn create_for_vm(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<ShareRequest>,
) -> Result<Json<ShareResponse>, ApiError> {
    let vm = vm_id(&raw)?;
    let port = share_port(body.port, &["body", "port"])?;
    let made = state
        .vms()
        .create_share(&account, &vm, port, body.is_public.unwrap_or(false))
        .await?;
    Ok(Json(share_response(&state.share_urls, &made)))
}

#[utoipa::path(get, path = "/v1/vms/{vm_id}/shares", tag = "shares",
    params(("vm_id" = String, Path)),
    responses((status = 200, body = Vec<ShareResponse>), (status = 404, body = ErrorDetail)))]
pub(crate) async fn list_for_vm(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<Vec<ShareResponse>>, ApiError> {
    let vm = vm_id(&raw)?;
    let shares = state.vms().list_shares(&account, Some(&vm)).await?;
    Ok(Json(
        shares
            .into_iter()
            .map(|s| share_response(&state.share_urls, &plain(s)))
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/v1/vms/{vm_id}/shares/{share_id}", tag = "shares",
    params(("vm_id" = String, Path), ("share_id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorDetail)))]
pub(crate) async fn delete_for_vm(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath((vm_raw, raw)): ValidPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let vm = vm_id(&vm_raw)?;
    let id = share_id(&raw)?;
    state
        .service
        .shares()
        .delete_share_of(&account, &id, Some(&vm))
        .await?;
    Ok(Json(json!({"share_id": id.to_string(), "deleted": true})))
}
