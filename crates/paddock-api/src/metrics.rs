//! Prometheus metrics: request counts and latencies per route, recorded by
//! a middleware, and sandboxes by state, read from the store at scrape.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Renders the process's metrics. The recorder is process-global (the
/// `metrics` facade allows one), so every server in a process shares it.
#[derive(Clone)]
pub struct MetricsHandle(PrometheusHandle);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

impl MetricsHandle {
    pub fn install() -> Option<Self> {
        HANDLE
            .get_or_init(|| {
                let recorder = PrometheusBuilder::new()
                    .set_buckets(&[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0, 30.0,
                    ])
                    .ok()?
                    .build_recorder();
                let handle = recorder.handle();
                metrics::set_global_recorder(recorder).ok()?;
                Some(handle)
            })
            .clone()
            .map(Self)
    }

    pub fn render(&self) -> String {
        self.0.render()
    }
}

pub(crate) async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("paddock_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("paddock_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}
