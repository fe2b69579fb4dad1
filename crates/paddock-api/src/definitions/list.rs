//! Paging of every list of the definitions surface: `limit` (or
//! `page[limit]`, 50 by default, at most 500) and `offset` (or
//! `page[offset]`) over a list in a stable order, answered as
//! `{"data": [...], "meta": {"total", "has_more", "limit", "offset"}}`.

use axum::extract::Query;
use serde::Deserialize;

use super::views::PageMeta;
use super::DefError;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// A list's paging parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// At most this many (default 50, at most 500); also `page[limit]`.
    #[serde(alias = "page[limit]")]
    #[param(minimum = 1, default = 50)]
    limit: Option<usize>,
    /// Skip this many; also `page[offset]`.
    #[serde(alias = "page[offset]")]
    #[param(minimum = 0, default = 0)]
    offset: Option<usize>,
}

pub(super) type PageQueryResult =
    Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>;

/// The page of `all` the query asks for, and where it sits.
pub(super) fn page<T>(query: PageQueryResult, all: Vec<T>) -> Result<(Vec<T>, PageMeta), DefError> {
    let Query(q) = query.map_err(|e| {
        DefError::bad_request(
            "invalid_query",
            format!("limit and offset must be non-negative numbers: {e}"),
        )
    })?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let offset = q.offset.unwrap_or(0);
    let total = all.len();
    let data: Vec<T> = all.into_iter().skip(offset).take(limit).collect();
    let has_more = offset.saturating_add(data.len()) < total;
    let meta = PageMeta {
        total,
        has_more,
        limit,
        offset,
    };
    Ok((data, meta))
}
