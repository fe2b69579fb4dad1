//! The account gateway surface (`/v1/accounts/{account_id}/…`): clusters,
//! node pools, dev environments, batch jobs and environment snapshots, in
//! its own conventions: camelCase JSON, AIP-style lists and custom methods
//! after a colon, google.rpc.Status errors.
//!
//! A custom method is part of the last path segment (`my-env:connect`), so
//! each item route takes the whole segment and splits it here.

mod batch_jobs;
mod clusters;
mod environments;
pub mod error;
pub mod list;
mod node_pools;
pub mod openapi;
mod snapshots;
mod update_mask;
mod views;
mod wire;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use paddock_core::model::Principal;

use serde::de::DeserializeOwned;

use crate::AppState;
use error::GatewayError;

pub fn router() -> Router<AppState> {
    let a = "/v1/accounts/{account_id}";
    Router::new()
        .route(
            &format!("{a}/clusters"),
            get(clusters::list).post(clusters::create),
        )
        .route(
            &format!("{a}/clusters/{{cluster_id}}"),
            // `:getConnectionInfo` answers GET (the published convention)
            // and POST (AIP-136's for custom methods).
            get(clusters::get_or_method)
                .post(clusters::post_method)
                .patch(clusters::update)
                .delete(clusters::delete),
        )
        .route(
            &format!("{a}/nodePools"),
            get(node_pools::list).post(node_pools::create),
        )
        .route(
            &format!("{a}/nodePools:batchDelete"),
            post(node_pools::batch_delete),
        )
        .route(
            &format!("{a}/nodePools/{{node_pool_id}}"),
            // `:getStats`: GET or POST, as `:getConnectionInfo`.
            get(node_pools::get_or_method)
                .post(node_pools::post_method)
                .patch(node_pools::update)
                .delete(node_pools::delete),
        )
        .route(
            &format!("{a}/environments"),
            get(environments::list).post(environments::create),
        )
        .route(
            &format!("{a}/environments:batchDelete"),
            post(environments::batch_delete),
        )
        .route(
            &format!("{a}/environments/{{environment_id}}"),
            get(environments::get)
                .patch(environments::update)
                .delete(environments::delete)
                .post(environments::method),
        )
        .route(
            &format!("{a}/batchJobs"),
            get(batch_jobs::list).post(batch_jobs::create),
        )
        .route(
            &format!("{a}/batchJobs:batchDelete"),
            post(batch_jobs::batch_delete),
        )
        .route(
            &format!("{a}/batchJobs/{{batch_job_id}}"),
            get(batch_jobs::get_or_method)
                .patch(batch_jobs::update)
                .delete(batch_jobs::delete)
                .post(batch_jobs::method),
        )
        .route(
            &format!("{a}/snapshots"),
            get(snapshots::list).post(snapshots::create),
        )
        .route(
            &format!("{a}/snapshots/{{snapshot_id}}"),
            get(snapshots::get).delete(snapshots::delete),
        )
        .method_not_allowed_fallback(method_not_allowed)
}

/// A method a route does not take: 405, with a google.rpc.Status body
/// (UNIMPLEMENTED) as every other refusal of this surface.
async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> axum::response::Response {
    let code = paddock_core::model::gateway::StatusCode::Unimplemented;
    let message = format!("{method} is not a method of {}", uri.path());
    let mut response = error::status_response(code, message, Vec::new());
    *response.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// The authenticated caller, checked against the path's account: a key
/// asking for another account gets NOT_FOUND, as for any resource it
/// cannot see.
pub struct Who(pub Principal);

impl FromRequestParts<AppState> for Who {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, GatewayError> {
        let who = crate::auth::authenticate_principal(parts, state).await?;
        let Path(path) = Path::<AccountPath>::from_request_parts(parts, state)
            .await
            .map_err(|e| GatewayError::invalid("account_id", e.body_text()))?;
        if path.account_id != who.account_id.as_str() {
            return Err(GatewayError::not_found(format!(
                "account {:?}",
                path.account_id
            )));
        }
        Ok(Who(who))
    }
}

/// Every route's first path parameter.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AccountPath {
    /// The key's account.
    pub account_id: String,
}

/// An item route's path parameters; a collection's own name for the id.
macro_rules! item_path {
    ($name:ident, $id:ident) => {
        #[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
        #[into_params(parameter_in = Path)]
        pub struct $name {
            /// The key's account.
            pub account_id: String,
            /// The resource's id; on the item route, with `:method` for a
            /// custom method.
            pub $id: String,
        }
    };
}

item_path!(ClusterPath, cluster_id);
item_path!(NodePoolPath, node_pool_id);
item_path!(EnvironmentPath, environment_id);
item_path!(BatchJobPath, batch_job_id);
item_path!(SnapshotPath, snapshot_id);

/// A JSON body; a malformed one is INVALID_ARGUMENT naming the field.
/// An empty body reads as `{}` (custom methods whose fields are optional).
pub struct GJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for GJson<T> {
    type Rejection = GatewayError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, GatewayError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            GatewayError::Status(
                paddock_core::model::gateway::StatusCode::InvalidArgument,
                e.body_text(),
            )
        })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(de)
            .map(GJson)
            .map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." { "body".to_owned() } else { path };
                GatewayError::invalid(field, e.inner().to_string())
            })
    }
}

/// Query parameters; an unknown or malformed one is INVALID_ARGUMENT.
pub struct GQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for GQuery<T> {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, GatewayError> {
        let q = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(q)
            .map(GQuery)
            .map_err(|e| GatewayError::invalid("query", e.to_string()))
    }
}

/// `id` or `id:method` from an item route's last segment.
pub fn split_segment(segment: &str) -> (&str, Option<&str>) {
    match segment.split_once(':') {
        Some((id, method)) => (id, Some(method)),
        None => (segment, None),
    }
}

/// A POST on an item route names one of its getters (AIP-136 clients
/// send custom methods as POST); a bare item is no method.
pub fn require_method(segment: &str, getters: &[&str]) -> Result<(), GatewayError> {
    match split_segment(segment).1 {
        Some(_) => Ok(()),
        None => Err(unknown_method("", getters)),
    }
}

/// The id of an item route that takes no custom method here.
pub fn plain_id(segment: &str) -> Result<&str, GatewayError> {
    match split_segment(segment) {
        (id, None) => Ok(id),
        (_, Some(m)) => Err(unknown_method(m, &[])),
    }
}

/// A field the request must set: INVALID_ARGUMENT naming it when absent.
pub fn required<T>(value: Option<T>, field: &str) -> Result<T, GatewayError> {
    value.ok_or_else(|| GatewayError::invalid(field, "is required"))
}

/// A PATCH's item id and body: the update mask applied to the raw body
/// (see `update_mask.rs`), then read as `T`.
pub fn patch_body<'s, T: DeserializeOwned>(
    segment: &'s str,
    raw: serde_json::Value,
    q: &update_mask::UpdateQuery,
    mutable: &update_mask::Mutable,
) -> Result<(&'s str, T), GatewayError> {
    let id = plain_id(segment)?;
    let raw = update_mask::apply(raw, q, mutable)?;
    Ok((id, from_value(raw)?))
}

/// The body of a create that names its resource and the resource's id
/// (`{"cluster": {...}, "clusterId": "..."}`), both required.
macro_rules! create_body {
    ($name:ident, $schema:ident, $resource:ident: $body:ty, $id:ident, $what:literal) => {
        #[doc = concat!("A ", $what, " and its id.")]
        #[derive(serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        #[schema(as = $schema)]
        pub struct $name {
            /// Required.
            $resource: Option<$body>,
            /// Required.
            $id: Option<String>,
        }

        impl $name {
            /// The id and the resource; INVALID_ARGUMENT naming either
            /// when it is absent.
            fn into_parts(self) -> Result<(String, $body), GatewayError> {
                let id = super::required(self.$id, &super::list::camel(stringify!($id)))?;
                let resource =
                    super::required(self.$resource, &super::list::camel(stringify!($resource)))?;
                Ok((id, resource))
            }
        }
    };
}
pub(crate) use create_body;

/// A body already read as JSON, as `T`; a wrong field is INVALID_ARGUMENT
/// naming it.
pub fn from_value<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, GatewayError> {
    serde_path_to_error::deserialize(v).map_err(field_error)
}

fn field_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> GatewayError {
    let path = e.path().to_string();
    let field = if path == "." { "body".to_owned() } else { path };
    GatewayError::invalid(field, e.inner().to_string())
}

/// The answer to an unknown custom method.
pub fn unknown_method(method: &str, known: &[&str]) -> GatewayError {
    GatewayError::Status(
        paddock_core::model::gateway::StatusCode::NotFound,
        format!("no method {method:?} here; methods: {}", known.join(", ")),
    )
}

/// `{"names": [...]}` or `{"ids": [...]}`: full resource names or ids,
/// at most 1000 in all.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchDeleteBody {
    /// `accounts/{account_id}/{collection}/{id}`.
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub ids: Vec<String>,
}

impl BatchDeleteBody {
    /// The ids named, from names of `collection` in `account` or bare ids.
    pub fn ids(self, account: &str, collection: &str) -> Result<Vec<String>, GatewayError> {
        let prefix = format!("accounts/{account}/{collection}/");
        let mut out = self.ids;
        for n in self.names {
            match n.strip_prefix(&prefix) {
                Some(id) if !id.is_empty() && !id.contains('/') => out.push(id.to_owned()),
                _ => {
                    return Err(GatewayError::invalid(
                        "names",
                        format!("{n:?} is not a name like {prefix}ID"),
                    ))
                }
            }
        }
        if out.is_empty() {
            return Err(GatewayError::invalid("names", "name at least one resource"));
        }
        if out.len() > 1000 {
            return Err(GatewayError::invalid("names", "at most 1000 per call"));
        }
        Ok(out)
    }
}
