//! paddock's HTTP surfaces. Each surface is one module that parses its own
//! wire format into calls on [`paddock_core::service::Service`] and renders
//! the core's typed errors in its own error format; no business rule lives
//! here. Today: the VM API ([`vms`]) and the operational endpoints
//! ([`ops`]).

mod auth;
pub mod definitions;
pub mod gateway;
mod metrics;
pub mod openapi;
mod ops;
pub mod vms;

use std::sync::Arc;

use axum::Router;
use paddock_core::service::Service;

pub use metrics::MetricsHandle;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    /// The environment definitions product (`/api/v1/environments`).
    pub definitions: Arc<paddock_definitions::Definitions>,
    /// The account gateway product (`/v1/accounts/{account}/…`).
    pub gateway: Arc<paddock_gateway::Gateway>,
    pub metrics: MetricsHandle,
    /// Facts `/readyz` reports about the host runtime.
    pub runtime_info: serde_json::Value,
    /// How share URLs are written in responses.
    pub share_urls: vms::shares::ShareUrls,
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(ops::router())
        .merge(vms::router())
        .merge(gateway::router())
        .merge(definitions::router())
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
