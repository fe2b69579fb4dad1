//! Batch jobs: create (bare body, id from `batchJobId` or generated), get,
//! list, update, delete, `:cancel`, `:getLogs`, `:batchDelete`.

use axum::extract::{Path, State};
use axum::Json;
use paddock_gateway::{BatchJobInput, MetadataPatch};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::GatewayError;
use super::list::{self, GetQuery, ListQuery};
use super::update_mask::{self, Cleared, Mutable, UpdateQuery};
use super::wire::{self, BatchJobBody, BATCH_JOBS};
use super::{
    from_value, plain_id, split_segment, unknown_method, BatchDeleteBody, GJson, GQuery, Who,
};
use crate::AppState;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateQuery {
    batch_job_id: Option<String>,
}

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
    Ok(Json(wire::batch_job(&job)))
}

pub async fn list(
    State(state): State<AppState>,
    Who(who): Who,
    GQuery(q): GQuery<ListQuery>,
) -> Result<Json<Value>, GatewayError> {
    let items = state
        .gateway
        .list_batch_jobs(&who)
        .await?
        .iter()
        .map(wire::batch_job)
        .collect();
    Ok(Json(list::page(&BATCH_JOBS, items, &q)?))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogsQuery {
    read_mask: Option<String>,
    /// At most this many chunks (default 1000, at most 10000).
    page_size: Option<u32>,
    page_token: Option<String>,
}

pub async fn get_or_method(
    State(state): State<AppState>,
    Who(who): Who,
    Path((_, segment)): Path<(String, String)>,
    GQuery(q): GQuery<LogsQuery>,
) -> Result<Json<Value>, GatewayError> {
    let (id, method) = split_segment(&segment);
    match method {
        None => {
            let q = GetQuery {
                read_mask: q.read_mask,
            };
            let job = state.gateway.get_batch_job(&who, id).await?;
            Ok(Json(list::apply_read_mask(
                &BATCH_JOBS,
                wire::batch_job(&job),
                q.read_mask.as_deref(),
            )?))
        }
        Some("getLogs") => logs(&state, &who, id, &q).await,
        Some(m) => Err(unknown_method(m, &["getLogs"])),
    }
}

/// `:getLogs`: the job's output after `pageToken`, at most `pageSize`
/// chunks (GET with query parameters, or POST with them in the body).
async fn logs(
    state: &AppState,
    who: &paddock_core::model::Principal,
    id: &str,
    q: &LogsQuery,
) -> Result<Json<Value>, GatewayError> {
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
    let entries: Vec<Value> = chunks
        .iter()
        .map(|c| json!({"stream": c.stream, "text": c.data, "time": c.created_at.to_rfc3339()}))
        .collect();
    Ok(Json(
        json!({"logs": text, "entries": entries, "nextPageToken": next}),
    ))
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

pub async fn update(
    State(state): State<AppState>,
    Who(who): Who,
    Path((_, segment)): Path<(String, String)>,
    GQuery(q): GQuery<UpdateQuery>,
    GJson(raw): GJson<Value>,
) -> Result<Json<Value>, GatewayError> {
    let id = plain_id(&segment)?;
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
    let rendered = wire::batch_job(&current);
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
    Ok(Json(wire::batch_job(&job)))
}

pub async fn delete(
    State(state): State<AppState>,
    Who(who): Who,
    Path((_, segment)): Path<(String, String)>,
) -> Result<Json<Value>, GatewayError> {
    let id = plain_id(&segment)?;
    state.gateway.delete_batch_job(&who, id).await?;
    Ok(Json(json!({})))
}

/// `:cancel`.
pub async fn method(
    State(state): State<AppState>,
    Who(who): Who,
    Path((_, segment)): Path<(String, String)>,
    GJson(body): GJson<Value>,
) -> Result<Json<Value>, GatewayError> {
    let (id, method) = split_segment(&segment);
    match method {
        Some("cancel") => state.gateway.cancel_batch_job(&who, id).await?,
        // A getter sent as POST (AIP-136's convention for custom methods)
        // takes its parameters from the body.
        Some("getLogs") => return logs(&state, &who, id, &from_value(body)?).await,
        Some(m) => return Err(unknown_method(m, &["cancel", "getLogs"])),
        None => return Err(unknown_method("", &["cancel", "getLogs"])),
    }
    Ok(Json(json!({})))
}

pub async fn batch_delete(
    State(state): State<AppState>,
    Who(who): Who,
    GJson(body): GJson<BatchDeleteBody>,
) -> Result<Json<Value>, GatewayError> {
    let ids = body.ids(who.account_id.as_str(), "batchJobs")?;
    state.gateway.batch_delete_batch_jobs(&who, &ids).await?;
    Ok(Json(json!({})))
}
