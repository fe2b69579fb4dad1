//! The audit log as the `instavm` SDK reads it (`client.audit`,
//! `instavm events`): the catalog of event types by group, the account's
//! events newest first with filters and a cursor, and one event. Read
//! only: the API appends to the log, nothing changes or deletes it.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use paddock_core::clock::Timestamp;
use paddock_core::model::{AuditEvent, AuditFilter, AuditStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidPath, ValidQuery};
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditCatalog {
    /// Each group's event types.
    pub catalog: BTreeMap<String, Vec<String>>,
    pub groups: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventResponse {
    pub id: String,
    pub created_at: String,
    pub event_group: String,
    pub event_type: String,
    /// `success`, `failure` or `denied`.
    pub status: String,
    /// `api_key`, or `anonymous` for a call no key was accepted for.
    pub actor_type: String,
    /// The API key that acted.
    pub actor_id: Option<String>,
    pub user_email: Option<String>,
    pub vm_id: Option<String>,
    pub session_id: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub request_id: String,
    pub source_address: String,
    /// What was called: method, path (no query, no body) and the answer's
    /// status.
    #[schema(value_type = Object)]
    pub event_payload: serde_json::Value,
    pub error_message: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventPage {
    pub items: Vec<AuditEventResponse>,
    /// Older events: pass as `cursor`; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub event_group: Option<String>,
    pub event_type: Option<String>,
    /// `success`, `failure` or `denied`.
    pub status: Option<String>,
    /// A user's id (`/v1/users/me`'s `id`).
    pub user_id: Option<String>,
    pub user_email: Option<String>,
    /// The API key that acted.
    pub actor_id: Option<String>,
    pub vm_id: Option<String>,
    pub session_id: Option<String>,
    pub resource_id: Option<String>,
    /// RFC 3339: events at or after.
    pub since: Option<String>,
    /// RFC 3339: events at or before.
    pub until: Option<String>,
    pub cursor: Option<String>,
    /// 1 to 200, default 50.
    pub limit: Option<u32>,
}

fn response(e: AuditEvent) -> AuditEventResponse {
    AuditEventResponse {
        id: e.id.to_string(),
        created_at: e.created_at.to_rfc3339(),
        event_group: e.event_group,
        event_type: e.event_type,
        status: e.status.as_str().to_owned(),
        actor_type: if e.actor_key_id.is_some() {
            "api_key"
        } else {
            "anonymous"
        }
        .to_owned(),
        actor_id: e.actor_key_id,
        user_email: e.user_email,
        vm_id: e.vm_id,
        session_id: e.session_id,
        resource_type: e.resource_type,
        resource_id: e.resource_id,
        request_id: e.request_id,
        source_address: e.source_address,
        event_payload: serde_json::json!({
            "method": e.method, "path": e.path, "http_status": e.http_status,
        }),
        error_message: e.error_message,
    }
}

fn instant(field: &str, raw: Option<String>) -> Result<Option<Timestamp>, ApiError> {
    raw.map(|r| {
        Timestamp::parse_rfc3339(&r).ok_or_else(|| {
            ApiError::field(&["query", field], "must be an RFC 3339 time", "value_error")
        })
    })
    .transpose()
}

#[utoipa::path(get, path = "/v1/audit/catalog", tag = "audit",
    responses((status = 200, body = AuditCatalog)))]
pub(crate) async fn catalog(_caller: Caller) -> Json<AuditCatalog> {
    let catalog = crate::audit::catalog().clone();
    Json(AuditCatalog {
        groups: catalog.keys().cloned().collect(),
        catalog,
    })
}

#[utoipa::path(get, path = "/v1/audit/events", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditEventPage), (status = 422, body = HttpValidationError)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidQuery(q): ValidQuery<AuditQuery>,
) -> Result<Json<AuditEventPage>, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(|s| {
            AuditStatus::parse(s).ok_or_else(|| {
                ApiError::field(
                    &["query", "status"],
                    "must be success, failure or denied",
                    "value_error",
                )
            })
        })
        .transpose()?;
    // A user id names one of the account's users: the email its keys act
    // for. An id no user has matches nothing.
    let user_email = match (q.user_email, q.user_id) {
        (Some(email), _) => Some(email),
        (None, Some(id)) => Some(
            state
                .service
                .accounts()
                .account_keys(&account)
                .await?
                .into_iter()
                .map(|k| k.user_email)
                .find(|email| paddock_core::accounts::user_id(&account, email) == id)
                .unwrap_or_else(|| format!("no user {id}")),
        ),
        (None, None) => None,
    };
    let filter = AuditFilter {
        event_group: q.event_group,
        event_type: q.event_type,
        status,
        actor_key_id: q.actor_id,
        user_email,
        vm_id: q.vm_id,
        session_id: q.session_id,
        resource_id: q.resource_id,
        since: instant("since", q.since)?,
        until: instant("until", q.until)?,
        before_seq: None,
        limit: q.limit.unwrap_or(50),
    };
    let page = state
        .service
        .audit()
        .events(&account, filter, q.cursor.as_deref())
        .await
        .map_err(ApiError::in_query)?;
    Ok(Json(AuditEventPage {
        items: page.events.into_iter().map(response).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/audit/events/{event_id}", tag = "audit",
    params(("event_id" = String, Path)),
    responses((status = 200, body = AuditEventResponse), (status = 404, body = ErrorDetail)))]
pub(crate) async fn event(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<AuditEventResponse>, ApiError> {
    let event = state.service.audit().event(&account, &id).await?;
    Ok(Json(response(event)))
}
