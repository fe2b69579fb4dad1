//! `/api/v1/environments`: create, list, retrieve, replace and delete
//! definitions. Writes return the revision as `ETag`; replace and delete
//! need it back in `If-Match`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use paddock_definitions::{self as definitions, Definition, DefinitionSpec};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorResponse;
use super::views::EnvironmentList;
use super::{json_value, parse_body, Caller, DefError};
use crate::AppState;

/// A definition to create: its id and its settings.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CreateEnvironmentRequest)]
pub(super) struct CreateRequest {
    /// `^[a-z0-9][a-z0-9-]{0,62}$`.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$", example = "docker")]
    id: String,
    #[serde(flatten)]
    spec: DefinitionSpec,
}

/// A definition with its revision as `ETag`.
fn with_etag(status: StatusCode, def: Definition) -> Response {
    let etag = format!("\"{}\"", def.revision);
    let mut response = (status, Json(def)).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

fn if_match(headers: &HeaderMap) -> Result<Option<String>, DefError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_owned()))
            .map_err(|_| DefError::bad_request("invalid_revision", "If-Match is not text")),
    }
}

#[utoipa::path(post, path = "/api/v1/environments", tag = "environment definitions",
    operation_id = "createEnvironment", summary = "Create an environment definition",
    request_body = CreateRequest, security(("bearer" = [])),
    responses((status = 201, description = "Created; its revision is the ETag", body = Definition),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub(super) async fn create(
    State(state): State<AppState>,
    Caller(account): Caller,
    body: Bytes,
) -> Result<Response, DefError> {
    let mut value = json_value(&body)?;
    let Some(obj) = value.as_object_mut() else {
        return Err(DefError::unprocessable("the body must be a JSON object"));
    };
    let id = match obj.remove("id") {
        Some(serde_json::Value::String(id)) => id,
        Some(_) => return Err(DefError::bad_request("invalid_id", "id: must be a string")),
        None => return Err(DefError::bad_request("invalid_id", "id: is required")),
    };
    definitions::check_id(&id)?;
    missing_settings(&value)?;
    let request = CreateRequest {
        id,
        spec: parse_body(value)?,
    };
    let def = state
        .definitions
        .create_definition(&account, &request.id, request.spec)
        .await?;
    Ok(with_etag(StatusCode::CREATED, def))
}

/// Every required setting the body leaves out, in one 422 (one entry
/// each), so a client learns them all at once instead of one per try.
fn missing_settings(body: &serde_json::Value) -> Result<(), DefError> {
    let Some(obj) = body.as_object() else {
        return Ok(());
    };
    let mut missing: Vec<String> = super::openapi::REQUIRED
        .iter()
        .filter(|f| !obj.contains_key(**f))
        .map(|f| (*f).to_owned())
        .collect();
    for (parent, fields) in super::openapi::REQUIRED_INSIDE {
        if let Some(inner) = obj.get(*parent).and_then(|v| v.as_object()) {
            missing.extend(
                fields
                    .iter()
                    .filter(|f| !inner.contains_key(**f))
                    .map(|f| format!("{parent}.{f}")),
            );
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(DefError::unprocessable_each(
        missing
            .into_iter()
            .map(|f| format!("{f}: is required"))
            .collect(),
    ))
}

/// By id (see `list.rs`).
#[utoipa::path(get, path = "/api/v1/environments", tag = "environment definitions",
    operation_id = "listEnvironments", summary = "List environment definitions",
    params(super::list::PageQuery), security(("bearer" = [])),
    responses((status = 200, body = EnvironmentList),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse)))]
pub(super) async fn list(
    State(state): State<AppState>,
    Caller(account): Caller,
    query: super::list::PageQueryResult,
) -> Result<Json<EnvironmentList>, DefError> {
    let all = state.definitions.list_definitions(&account).await?;
    let (data, meta) = super::list::page(query, all)?;
    Ok(Json(EnvironmentList { data, meta }))
}

#[utoipa::path(get, path = "/api/v1/environments/{id}", tag = "environment definitions",
    operation_id = "retrieveEnvironment", summary = "Retrieve an environment definition",
    params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "Its revision is the ETag", body = Definition),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse)))]
pub(super) async fn retrieve(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(id): Path<String>,
) -> Result<Response, DefError> {
    definitions::check_id(&id)?;
    let def = state.definitions.get_definition(&account, &id).await?;
    Ok(with_etag(StatusCode::OK, def))
}

#[utoipa::path(put, path = "/api/v1/environments/{id}", tag = "environment definitions",
    operation_id = "replaceEnvironment", summary = "Replace an environment definition",
    params(("id" = String, Path), ("If-Match" = String, Header,
        description = "the current revision (quoted or bare); missing is 428, stale is 409")), request_body = DefinitionSpec,
    security(("bearer" = [])),
    responses((status = 200, description = "Its new revision is the ETag", body = Definition),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse),
        (status = 422, body = ErrorResponse), (status = 428, body = ErrorResponse)))]
pub(super) async fn replace(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, DefError> {
    let expected = if_match(&headers)?;
    let mut value = json_value(&body)?;
    if let Some(obj) = value.as_object_mut() {
        // A client that read, changed and sent back a definition sends
        // its output-only fields too: the id must agree with the path,
        // the revision is If-Match's job.
        if let Some(body_id) = obj.remove("id") {
            if body_id.as_str() != Some(id.as_str()) {
                return Err(DefError::unprocessable(
                    "id: does not match the environment id in the path",
                ));
            }
        }
        obj.remove("revision");
    }
    // The path and precondition errors come before the body's (the
    // reserved `local` is refused by the replace itself).
    definitions::check_id(&id)?;
    if id != definitions::LOCAL_DEFINITION_ID {
        definitions::check_write(&id, expected.as_deref())?;
    }
    missing_settings(&value)?;
    let spec: DefinitionSpec = parse_body(value)?;
    let def = state
        .definitions
        .replace_definition(&account, &id, expected.as_deref(), spec)
        .await?;
    Ok(with_etag(StatusCode::OK, def))
}

#[utoipa::path(delete, path = "/api/v1/environments/{id}", tag = "environment definitions",
    operation_id = "deleteEnvironment", summary = "Delete an environment definition",
    params(("id" = String, Path), ("If-Match" = String, Header,
        description = "the current revision (quoted or bare); missing is 428, stale is 409")), security(("bearer" = [])),
    responses((status = 204, description = "Deleted"),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse),
        (status = 428, body = ErrorResponse)))]
pub(super) async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, DefError> {
    let expected = if_match(&headers)?;
    state
        .definitions
        .delete_definition(&account, &id, expected.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
