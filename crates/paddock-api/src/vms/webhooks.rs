//! Webhooks as the `instavm` SDK manages them (`client.webhooks`,
//! `instavm webhooks`): endpoints (the signing secret shown at creation
//! and rotation only), a test event, a verification ping, and the
//! deliveries with their replay.

use axum::extract::State;
use axum::Json;
use paddock_core::model::{DeliveryFilter, DeliveryStatus, WebhookDelivery, WebhookEndpoint};
use paddock_core::networking::webhooks::{EndpointPatch, EndpointSettings};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidPath, ValidQuery};
use crate::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointRequest {
    /// Where deliveries are POSTed: http(s), and not a loopback, private
    /// or link-local address unless the server allows those
    /// (`[webhooks] allow_private`).
    pub url: String,
    pub description: Option<String>,
    /// Event types (`vm.terminated`), groups (`vm.*`) or `*`; default `*`.
    pub event_patterns: Option<Vec<String>>,
    /// 1 to 30 seconds, default 10.
    pub timeout_seconds: Option<u32>,
    /// Tries after the first, 0 to 20, default 8.
    pub max_retries: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpointRequest {
    pub url: Option<String>,
    /// A new description; `null` clears it.
    #[serde(default, deserialize_with = "super::dto::present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Value>,
    pub event_patterns: Option<Vec<String>>,
    pub timeout_seconds: Option<u32>,
    pub max_retries: Option<u32>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointResponse {
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    pub event_patterns: Vec<String>,
    /// `active` or `disabled`.
    pub status: String,
    pub enabled: bool,
    pub timeout_seconds: u32,
    pub max_retries: u32,
    pub created_at: String,
    pub updated_at: String,
    /// The signing secret (`whsec_…`): in the answers to create and
    /// rotate-secret only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryResponse {
    pub id: String,
    pub endpoint_id: String,
    /// The same in every delivery of one event, and in replays.
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub attempt_count: u32,
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The body POSTed, exactly as signed.
    #[schema(value_type = Object)]
    pub payload: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPageResponse {
    pub items: Vec<DeliveryResponse>,
    /// Older deliveries: pass as `cursor`; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResponse {
    /// `ok` when the endpoint answered 2xx, else `failed`.
    pub status: String,
    pub ok: bool,
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointDeleted {
    pub id: String,
    pub deleted: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    pub endpoint_id: Option<String>,
    /// `pending`, `succeeded` or `failed`.
    pub status: Option<String>,
    pub event_type: Option<String>,
    pub cursor: Option<String>,
    /// 1 to 200, default 50.
    pub limit: Option<u32>,
}

fn endpoint_response(e: &WebhookEndpoint, secret: Option<String>) -> EndpointResponse {
    EndpointResponse {
        id: e.id.to_string(),
        url: e.url.clone(),
        description: e.description.clone(),
        event_patterns: e.event_patterns.clone(),
        status: if e.enabled { "active" } else { "disabled" }.to_owned(),
        enabled: e.enabled,
        timeout_seconds: e.timeout_seconds,
        max_retries: e.max_retries,
        created_at: e.created_at.to_rfc3339(),
        updated_at: e.updated_at.to_rfc3339(),
        secret,
    }
}

fn delivery_response(d: WebhookDelivery) -> DeliveryResponse {
    DeliveryResponse {
        id: d.id.to_string(),
        endpoint_id: d.endpoint_id.to_string(),
        event_id: d.event_id,
        event_type: d.event_type,
        status: d.status.as_str().to_owned(),
        attempt_count: d.attempts,
        next_attempt_at: (d.status == DeliveryStatus::Pending)
            .then(|| d.next_attempt_at.to_rfc3339()),
        last_status_code: d.last_status_code,
        last_error: d.last_error,
        created_at: d.created_at.to_rfc3339(),
        updated_at: d.updated_at.to_rfc3339(),
        payload: serde_json::from_str(&d.payload).unwrap_or(Value::String(d.payload)),
    }
}

#[utoipa::path(post, path = "/v1/webhooks/endpoints", tag = "webhooks",
    request_body = CreateEndpointRequest,
    responses((status = 200, description = "The endpoint, with its signing secret (shown once)",
        body = EndpointResponse), (status = 422, body = HttpValidationError)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<CreateEndpointRequest>,
) -> Result<Json<EndpointResponse>, ApiError> {
    let settings = EndpointSettings {
        url: body.url,
        description: body.description,
        event_patterns: body.event_patterns.unwrap_or_else(|| vec!["*".into()]),
        timeout_seconds: body.timeout_seconds,
        max_retries: body.max_retries,
    };
    let (endpoint, secret) = state
        .service
        .webhooks()
        .create_endpoint(&account, settings)
        .await?;
    Ok(Json(endpoint_response(&endpoint, Some(secret))))
}

#[utoipa::path(get, path = "/v1/webhooks/endpoints", tag = "webhooks",
    responses((status = 200, body = Vec<EndpointResponse>)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(account): Caller,
) -> Result<Json<Vec<EndpointResponse>>, ApiError> {
    let endpoints = state.service.webhooks().endpoints(&account).await?;
    Ok(Json(
        endpoints
            .iter()
            .map(|e| endpoint_response(e, None))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/webhooks/endpoints/{endpoint_id}", tag = "webhooks",
    params(("endpoint_id" = String, Path)),
    responses((status = 200, body = EndpointResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<EndpointResponse>, ApiError> {
    let endpoint = state.service.webhooks().endpoint(&account, &id).await?;
    Ok(Json(endpoint_response(&endpoint, None)))
}

#[utoipa::path(patch, path = "/v1/webhooks/endpoints/{endpoint_id}", tag = "webhooks",
    params(("endpoint_id" = String, Path)), request_body = UpdateEndpointRequest,
    responses((status = 200, body = EndpointResponse), (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
    ValidJson(body): ValidJson<UpdateEndpointRequest>,
) -> Result<Json<EndpointResponse>, ApiError> {
    let description = super::dto::nullable_text("description", body.description)?;
    let patch = EndpointPatch {
        url: body.url,
        description,
        event_patterns: body.event_patterns,
        timeout_seconds: body.timeout_seconds,
        max_retries: body.max_retries,
        enabled: body.enabled,
    };
    let endpoint = state
        .service
        .webhooks()
        .update_endpoint(&account, &id, patch)
        .await?;
    Ok(Json(endpoint_response(&endpoint, None)))
}

#[utoipa::path(delete, path = "/v1/webhooks/endpoints/{endpoint_id}", tag = "webhooks",
    params(("endpoint_id" = String, Path)),
    responses((status = 200, body = EndpointDeleted), (status = 404, body = ErrorDetail)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<EndpointDeleted>, ApiError> {
    state
        .service
        .webhooks()
        .delete_endpoint(&account, &id)
        .await?;
    Ok(Json(EndpointDeleted { id, deleted: true }))
}

#[utoipa::path(post, path = "/v1/webhooks/endpoints/{endpoint_id}/rotate-secret", tag = "webhooks",
    params(("endpoint_id" = String, Path)),
    responses((status = 200, description = "The endpoint with its new secret (shown once)",
        body = EndpointResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn rotate_secret(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<EndpointResponse>, ApiError> {
    let (endpoint, secret) = state
        .service
        .webhooks()
        .rotate_secret(&account, &id)
        .await?;
    Ok(Json(endpoint_response(&endpoint, Some(secret))))
}

#[utoipa::path(post, path = "/v1/webhooks/endpoints/{endpoint_id}/test", tag = "webhooks",
    params(("endpoint_id" = String, Path)),
    responses((status = 200, description = "The queued delivery of a `webhook.test` event",
        body = DeliveryResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn test(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<DeliveryResponse>, ApiError> {
    let delivery = state.service.webhooks().send_test(&account, &id).await?;
    Ok(Json(delivery_response(delivery)))
}

#[utoipa::path(post, path = "/v1/webhooks/endpoints/{endpoint_id}/verify", tag = "webhooks",
    params(("endpoint_id" = String, Path)),
    responses((status = 200, description = "How the endpoint answered a `webhook.verify` event sent now",
        body = VerifyResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<VerifyResponse>, ApiError> {
    let v = state.service.webhooks().verify(&account, &id).await?;
    Ok(Json(VerifyResponse {
        status: if v.ok { "ok" } else { "failed" }.to_owned(),
        ok: v.ok,
        status_code: v.status_code,
        error: v.error,
    }))
}

#[utoipa::path(get, path = "/v1/webhooks/deliveries", tag = "webhooks", params(DeliveryQuery),
    responses((status = 200, body = DeliveryPageResponse), (status = 422, body = HttpValidationError)))]
pub(crate) async fn deliveries(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidQuery(q): ValidQuery<DeliveryQuery>,
) -> Result<Json<DeliveryPageResponse>, ApiError> {
    let query_field = |field: &str, message: &str| {
        ApiError::field(&["query", field], message.to_owned(), "value_error")
    };
    let status = q
        .status
        .as_deref()
        .map(|s| {
            DeliveryStatus::parse(s)
                .ok_or_else(|| query_field("status", "must be pending, succeeded or failed"))
        })
        .transpose()?;
    let endpoint_id = q
        .endpoint_id
        .as_deref()
        .map(|e| {
            e.parse()
                .map_err(|_| query_field("endpoint_id", "is not a webhook endpoint id"))
        })
        .transpose()?;
    let filter = DeliveryFilter {
        endpoint_id,
        status,
        event_type: q.event_type,
        before_seq: None,
        limit: q.limit.unwrap_or(50),
    };
    let page = state
        .service
        .webhooks()
        .deliveries(&account, filter, q.cursor.as_deref())
        .await
        .map_err(ApiError::in_query)?;
    Ok(Json(DeliveryPageResponse {
        items: page.deliveries.into_iter().map(delivery_response).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(post, path = "/v1/webhooks/deliveries/{delivery_id}/replay", tag = "webhooks",
    params(("delivery_id" = String, Path)),
    responses((status = 200, description = "The delivery, queued again", body = DeliveryResponse),
        (status = 404, body = ErrorDetail)))]
pub(crate) async fn replay(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<DeliveryResponse>, ApiError> {
    let delivery = state.service.webhooks().replay(&account, &id).await?;
    Ok(Json(delivery_response(delivery)))
}
