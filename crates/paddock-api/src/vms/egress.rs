//! Egress policies as the `instavm` SDK reads and sets them: per VM
//! (`/v1/egress/vm/{vm_id}`) and per session (`/v1/egress/session/{id}`,
//! the session's VM now and the VMs it gets later). Setting replaces the
//! whole policy and applies to a running VM at once.

use axum::extract::State;
use axum::Json;
use serde_json::Value;

use super::dto::EgressPolicyBody;
use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidPath};
use super::{egress_policy, session_id, vm_id};
use crate::AppState;

/// The policy in force on a VM (its own or the server's default).
#[utoipa::path(get, path = "/v1/egress/vm/{vm_id}", tag = "egress",
    params(("vm_id" = String, Path)),
    responses((status = 200, body = EgressPolicyBody), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get_vm(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<Value>, ApiError> {
    let policy = state.vms().get_vm_egress(&account, &vm_id(&raw)?).await?;
    Ok(Json(policy.to_json()))
}

/// Replace a VM's policy; a running VM gets it at once.
#[utoipa::path(post, path = "/v1/egress/vm/{vm_id}", tag = "egress",
    params(("vm_id" = String, Path)), request_body = EgressPolicyBody,
    responses((status = 200, body = EgressPolicyBody), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn set_vm(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let id = vm_id(&raw)?;
    let policy = egress_policy(&body, "")?;
    let policy = state.vms().set_vm_egress(&account, &id, policy).await?;
    Ok(Json(policy.to_json()))
}

/// The policy in force on a session's VM.
#[utoipa::path(get, path = "/v1/egress/session/{session_id}", tag = "egress",
    params(("session_id" = String, Path)),
    responses((status = 200, body = EgressPolicyBody), (status = 404, body = ErrorDetail)))]
pub(crate) async fn get_session(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<Value>, ApiError> {
    let policy = state
        .vms()
        .get_session_egress(&account, &session_id(&raw)?)
        .await?;
    Ok(Json(policy.to_json()))
}

/// Replace a session's policy: its VM gets it at once, later VMs of the
/// session inherit it.
#[utoipa::path(post, path = "/v1/egress/session/{session_id}", tag = "egress",
    params(("session_id" = String, Path)), request_body = EgressPolicyBody,
    responses((status = 200, body = EgressPolicyBody), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn set_session(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let id = session_id(&raw)?;
    let policy = egress_policy(&body, "")?;
    let policy = state
        .vms()
        .set_session_egress(&account, &id, policy)
        .await?;
    Ok(Json(policy.to_json()))
}
