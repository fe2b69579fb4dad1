//! Batch jobs: create (bare body, id from `batchJobId` or generated), get,
//! list, update, delete, `:cancel`, `:getLogs`, `:batchDelete`.

use axum::extract::{Path, State};
use axum::Json;
use paddock_core::model::Principal;
use paddock_gateway::{BatchJobInput, MetadataPatch};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::GatewayError;
use super::list::{self, GetQuery, ListQuery};
use super::update_mask::{self, Cleared, Mutable, UpdateQuery};
use super::views::{to_json, BatchJobList, BatchJobLogs, BatchJobView, Empty, LogEntry};
use super::wire::{self, BatchJobBody, BATCH_JOBS};
use super::{
    from_value, plain_id, split_segment, unknown_method, AccountPath, BatchDeleteBody,
    BatchJobPath, GJson, GQuery, Who,
};
use crate::AppState;

#[derive(Deserialize, Default, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// The job's id; generated when absent.
    batch_job_id: Option<String>,
}

#[utoipa::path(post, path = "/v1/accounts/{account_id}/batchJobs", tag = "batchJobs",
    operation_id = "createBatchJob", params(AccountPath, CreateQuery), request_body = BatchJobBody,
    responses((status = 200, body = BatchJobView)))]
pub async fn create(
    State(state): State<AppState>,
    Who(who): Who,
    GQuery(q): GQuery<CreateQuery>,
    GJson(mut body): GJson<BatchJobBody>,
) -> Result<Json<Value>, GatewayError> {
    let executor = body.executor()?;
    let input = BatchJobInput {
        display_name: body.display_name.unwrap_or_default(),
        node_pool_id: body.node_pool_id.unwrap_or_default(),
        environment_id: body.environment_id.unwrap_or_default(),
        snapshot_id: body.snapshot_id.unwrap_or_default(),
        image_ref: body.image_ref.unwrap_or_default(),
        num_ranks: wire::ranks("numRanks", body.num_ranks)?,
        env_vars: body.env_vars.unwrap_or_default(),
        role: body.role.unwrap_or_default(),
        executor,
        annotations: body.annotations.unwrap_or_default(),
        shared: body.shared.unwrap_or(false),
    };
    let job = state
        .gateway
        .create_batch_job(&who, q.batch_job_id.filter(|i| !i.is_empty()), input)
        .await?;
    Ok(Json(to_json(BatchJobView::from(&job))))
}

#[utoipa::path(get, path = "/v1/accounts/{account_id}/batchJobs", tag = "batchJobs",
    operation_id = "listBatchJobs", params(AccountPath, ListQuery),
    responses((status = 200, body = BatchJobList)))]
pub async fn list(
    State(state): State<AppState>,
    Who(who): Who,
    GQuery(q): GQuery<ListQuery>,
) -> Result<Json<BatchJobList>, GatewayError> {
    let items = state
        .gateway
        .list_batch_jobs(&who)
        .await?
        .iter()
        .map(|j| to_json(BatchJobView::from(j)))
        .collect();
    Ok(Json(list::page(&BATCH_JOBS, items, &q)?.into()))
}

/// A GET on an item takes the getter's `readMask` or `:getLogs`'s page.
#[derive(Deserialize, Default, IntoParams, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    #[param(ignore)]
    #[schema(ignore)]
    read_mask: Option<String>,
    /// At most this many chunks (default 1000, at most 10000).
    page_size: Option<u32>,
    /// A previous `nextPageToken`.
    page_token: Option<String>,
}

/// GET on an item: the job, or its `:getLogs`.
pub async fn get_or_method(
    State(state): State<AppState>,
    Who(who): Who,
    Path(path): Path<BatchJobPath>,
    GQuery(q): GQuery<LogsQuery>,
) -> Result<Json<Value>, GatewayError> {
    match split_segment(&path.batch_job_id) {
        (id, None) => {
            let q = GetQuery {
                read_mask: q.read_mask,
            };
            get(&state, &who, id, q).await
        }
        (id, Some("getLogs")) => logs(&state, &who, id, &q).await.map(|j| Json(to_json(j.0))),
        (_, Some(m)) => Err(unknown_method(m, &["getLogs"])),
    }
}

#[utoipa::path(get, path = "/v1/accounts/{account_id}/batchJobs/{batch_job_id}", tag = "batchJobs",
    operation_id = "getBatchJob", params(BatchJobPath, GetQuery),
    responses((status = 200, body = BatchJobView)))]
async fn get(
    state: &AppState,
    who: &Principal,
    id: &str,
    q: GetQuery,
) -> Result<Json<Value>, GatewayError> {
    let job = state.gateway.get_batch_job(who, id).await?;
    Ok(Json(list::apply_read_mask(
        &BATCH_JOBS,
        to_json(BatchJobView::from(&job)),
        q.read_mask.as_deref(),
    )?))
}

/// The job's output after `pageToken`, at most `pageSize` chunks. Also
/// answers POST, with the parameters in the body.
#[utoipa::path(get, path = "/v1/accounts/{account_id}/batchJobs/{batch_job_id}:getLogs",
    tag = "batchJobs", operation_id = "getBatchJobLogs", params(BatchJobPath, LogsQuery),
    responses((status = 200, body = BatchJobLogs)))]
async fn logs(
    state: &AppState,
    who: &Principal,
    id: &str,
    q: &LogsQuery,
) -> Result<Json<BatchJobLogs>, GatewayError> {
    let after = match q.page_token.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| GatewayError::invalid("pageToken", "is not a token getLogs returned"))?,
        None => 0,
    };
    let limit = q.page_size.filter(|n| *n > 0).unwrap_or(1000).min(10_000);
    let chunks = state.gateway.batch_job_logs(who, id, after, limit).await?;
    let next = if chunks.len() == limit as usize {
        chunks.last().map(|c| c.seq.to_string()).unwrap_or_default()
    } else {
        String::new()
    };
    let text: String = chunks.iter().map(|c| c.data.as_str()).collect();
    let entries = chunks
        .iter()
        .map(|c| LogEntry {
            stream: c.stream.clone(),
            text: c.data.clone(),
            time: c.created_at.to_rfc3339(),
        })
        .collect();
    Ok(Json(BatchJobLogs {
        logs: text,
        entries,
        next_page_token: next,
    }))
}

/// What a PATCH may change (see `update_mask.rs`).
const MUTABLE: Mutable = Mutable {
    listing: &BATCH_JOBS,
    fields: &[
        ("displayName", Cleared::Text),
        ("annotations", Cleared::Map),
        ("shared", Cleared::Flag),
    ],
};

#[utoipa::path(patch, path = "/v1/accounts/{account_id}/batchJobs/{batch_job_id}", tag = "batchJobs",
    operation_id = "updateBatchJob", params(BatchJobPath, UpdateQuery), request_body = BatchJobBody,
    responses((status = 200, body = BatchJobView)))]
pub async fn update(
    State(state): State<AppState>,
    Who(who): Who,
    Path(path): Path<BatchJobPath>,
    GQuery(q): GQuery<UpdateQuery>,
    GJson(raw): GJson<Value>,
) -> Result<Json<Value>, GatewayError> {
    let id = plain_id(&path.batch_job_id)?;
    // The masked body is compared below with what the job runs.
    let raw = update_mask::apply(raw, &q, &MUTABLE)?;
    let body: BatchJobBody = from_value(raw.clone())?;
    let current = state.gateway.get_batch_job(&who, id).await?;
    // What a job runs is fixed at creation; sending it back unchanged is
    // fine (clients PATCH the whole resource they read).
    let fixed = [
        (
            "nodePoolId",
            body.node_pool_id
                .as_ref()
                .is_some_and(|v| *v != current.node_pool_id),
        ),
        (
            "environmentId",
            body.environment_id
                .as_ref()
                .is_some_and(|v| *v != current.environment_id),
        ),
        (
            "snapshotId",
            body.snapshot_id
                .as_ref()
                .is_some_and(|v| *v != current.snapshot_id),
        ),
        (
            "imageRef",
            body.image_ref
                .as_ref()
                .is_some_and(|v| *v != current.image_ref),
        ),
        (
            "envVars",
            body.env_vars
                .as_ref()
                .is_some_and(|v| *v != current.env_vars),
        ),
    ];
    // What it runs, as read back: sending it unchanged is fine.
    let rendered = to_json(BatchJobView::from(&current));
    let runs_changed = [
        "numRanks",
        "role",
        "shellExecutor",
        "pythonExecutor",
        "notebookExecutor",
    ]
    .into_iter()
    .find(|f| raw.get(*f).is_some_and(|v| rendered.get(*f) != Some(v)));
    if let Some(field) = runs_changed {
        return Err(GatewayError::invalid(
            field,
            "is fixed at creation; create another job",
        ));
    }
    if let Some((field, _)) = fixed.iter().find(|(_, changed)| *changed) {
        return Err(GatewayError::invalid(
            *field,
            "is fixed at creation; create another job",
        ));
    }
    let patch = MetadataPatch {
        display_name: body.display_name,
        annotations: body.annotations,
        shared: body.shared,
    };
    let job = state.gateway.update_batch_job(&who, id, patch).await?;
    Ok(Json(to_json(BatchJobView::from(&job))))
}

#[utoipa::path(delete, path = "/v1/accounts/{account_id}/batchJobs/{batch_job_id}", tag = "batchJobs",
    operation_id = "deleteBatchJob", params(BatchJobPath),
    responses((status = 200, body = Empty)))]
pub async fn delete(
    State(state): State<AppState>,
    Who(who): Who,
    Path(path): Path<BatchJobPath>,
) -> Result<Json<Empty>, GatewayError> {
    let id = plain_id(&path.batch_job_id)?;
    state.gateway.delete_batch_job(&who, id).await?;
    Ok(Json(Empty {}))
}

/// POST on an item: `:cancel`, or `:getLogs` with its parameters in the
/// body (AIP-136's convention for a getter sent as POST).
pub async fn method(
    State(state): State<AppState>,
    Who(who): Who,
    Path(path): Path<BatchJobPath>,
    GJson(body): GJson<Value>,
) -> Result<Json<Value>, GatewayError> {
    match split_segment(&path.batch_job_id) {
        (id, Some("cancel")) => cancel(&state, &who, id).await.map(|j| Json(to_json(j.0))),
        (id, Some("getLogs")) => logs(&state, &who, id, &from_value(body)?)
            .await
            .map(|j| Json(to_json(j.0))),
        (_, m) => Err(unknown_method(
            m.unwrap_or_default(),
            &["cancel", "getLogs"],
        )),
    }
}

#[utoipa::path(post, path = "/v1/accounts/{account_id}/batchJobs/{batch_job_id}:cancel",
    tag = "batchJobs", operation_id = "cancelBatchJob", params(BatchJobPath),
    responses((status = 200, body = Empty)))]
async fn cancel(state: &AppState, who: &Principal, id: &str) -> Result<Json<Empty>, GatewayError> {
    state.gateway.cancel_batch_job(who, id).await?;
    Ok(Json(Empty {}))
}

#[utoipa::path(post, path = "/v1/accounts/{account_id}/batchJobs:batchDelete", tag = "batchJobs",
    operation_id = "batchDeleteBatchJobs", params(AccountPath), request_body = BatchDeleteBody,
    responses((status = 200, body = Empty)))]
pub async fn batch_delete(
    State(state): State<AppState>,
    Who(who): Who,
    GJson(body): GJson<BatchDeleteBody>,
) -> Result<Json<Empty>, GatewayError> {
    let ids = body.ids(who.account_id.as_str(), "batchJobs")?;
    state.gateway.batch_delete_batch_jobs(&who, &ids).await?;
    Ok(Json(Empty {}))
}
