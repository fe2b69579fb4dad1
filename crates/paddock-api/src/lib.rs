//! paddock's HTTP surfaces. Each surface is one module that parses its own
//! wire format into calls on [`paddock_core::service::Service`] and renders
//! the core's typed errors in its own error format; no business rule lives
//! here. Today: the VM API ([`vms`]) and the operational endpoints
//! ([`ops`]).

mod audit;
mod auth;
mod body_budget;
pub mod definitions;
pub mod e2b;
pub mod gateway;
mod internal;
mod metrics;
pub mod openapi;
mod ops;
mod rejections;
pub mod server;
mod ui;
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
    /// The E2B-compatible product (`/e2b/…`).
    pub e2b: Arc<paddock_e2b::E2b>,
    /// Browser sessions of the VM API (`/v1/browser/…`).
    pub browser: Arc<paddock_tools::Browser>,
    /// Tapes of the VM API (`/v1/tapes…`).
    pub tapes: Arc<paddock_tools::Tapes>,
    /// Devbox templates of the VM API (`/v1/templates…`).
    pub templates: Arc<paddock_tools::Templates>,
    /// Desktops for computer use (`/v1/computeruse/…`, `/v1/recordings…`).
    pub desktops: Arc<paddock_tools::Desktops>,
    pub metrics: MetricsHandle,
    /// Facts `/readyz` reports about the host runtime.
    pub runtime_info: serde_json::Value,
    /// How share URLs are written in responses.
    pub share_urls: vms::shares::ShareUrls,
    /// The HTTP limits; the routers take their body limit from it.
    pub http: server::HttpLimits,
    /// This process among the nodes sharing the store: where a VM API
    /// create is placed. `None`: every VM is made here.
    pub cluster: Option<Arc<paddock_core::cluster::Membership>>,
    /// What creates placed on another node are sent with.
    pub cluster_http: reqwest::Client,
}

impl AppState {
    /// The VM component, which most of the VM API calls.
    pub fn vms(&self) -> &Arc<paddock_core::service::Vms> {
        self.service.vms()
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let limits = state.http.clone();
    let budget = body_budget::BodyBudget::new(limits.body_budget_bytes);
    let gateway = gateway::router()
        .layer(body_limit(limits.json_body_bytes))
        .layer(budget.on(limits.json_body_bytes));
    Router::new()
        .merge(ops::router())
        .merge(vms::router(&limits, &budget))
        .merge(gateway)
        .merge(definitions::router(&limits, &budget))
        .merge(e2b::router(&limits))
        .merge(internal::router())
        .merge(ui::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            vms::placement::route_to_node,
        ))
        .layer(axum::middleware::from_fn(rejections::uniform))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::layer,
        ))
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// A body limit checked against `Content-Length` before the body is read
/// (axum's own limit only counts bytes as they arrive, so a client that
/// announces 1 GiB and sends slowly would hold its request open), and
/// against the bytes read for a chunked body. axum's 2 MiB default is
/// lifted so that this one decides.
fn body_limit(
    bytes: usize,
) -> tower::layer::util::Stack<
    tower_http::limit::RequestBodyLimitLayer,
    axum::extract::DefaultBodyLimit,
> {
    tower::layer::util::Stack::new(
        tower_http::limit::RequestBodyLimitLayer::new(bytes),
        axum::extract::DefaultBodyLimit::disable(),
    )
}

/// Sets `Retry-After` to `wait` in whole seconds, at least 1.
pub(crate) fn set_retry_after(response: &mut axum::response::Response, wait: std::time::Duration) {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(axum::http::header::RETRY_AFTER, secs.max(1).into());
}
