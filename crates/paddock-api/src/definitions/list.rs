//! Paging of every list of the definitions surface: `limit` (or
//! `page[limit]`, 50 by default, at most 500) and `offset` (or
//! `page[offset]`) over a list in a stable order, answered as
//! `{"data": [...], "meta": {"total", "has_more", "limit", "offset"}}`.

use axum::extract::Query;
use serde::Deserialize;

use super::DefError;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    #[serde(alias = "page[limit]")]
    limit: Option<usize>,
    #[serde(alias = "page[offset]")]
    offset: Option<usize>,
}

pub(super) type PageQueryResult =
    Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>;

/// The page of `all` the query asks for, rendered by `render`.
pub(super) fn page<T>(
    query: PageQueryResult,
    all: Vec<T>,
    render: impl Fn(&T) -> serde_json::Value,
) -> Result<serde_json::Value, DefError> {
    let Query(q) = query.map_err(|e| {
        DefError::bad_request(
            "invalid_query",
            format!("limit and offset must be non-negative numbers: {e}"),
        )
    })?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let offset = q.offset.unwrap_or(0);
    let total = all.len();
    let data: Vec<serde_json::Value> = all.iter().skip(offset).take(limit).map(render).collect();
    let has_more = offset.saturating_add(data.len()) < total;
    Ok(serde_json::json!({
        "data": data,
        "meta": {"total": total, "has_more": has_more, "limit": limit, "offset": offset},
    }))
}
