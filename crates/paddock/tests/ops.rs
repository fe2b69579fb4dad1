//! Operational endpoints, and the committed OpenAPI document.

mod common;

use common::Server;
use serde_json::json;

#[tokio::test]
async fn health_readiness_metrics() {
    let server = Server::start();
    let c = server.client().with_key(None);
    assert_eq!(c.get("/healthz").await.body["status"], "ok");
    let ready = c.get("/readyz").await;
    assert_eq!(ready.body["status"], "ready");
    assert_eq!(ready.body["provider"], "container");
    // Whether this host can checkpoint containers (CRIU), and why not.
    let checkpoint = &ready.body["runtime"]["checkpoint"];
    assert_eq!(checkpoint["tool"], "criu", "{}", ready.body);
    let works = checkpoint["works"].as_bool().expect("works");
    assert_eq!(works, checkpoint["reason"].is_null(), "{}", ready.body);
    let authed = server.client();
    authed.create_vm(json!({})).await;
    let metrics = c.get("/metrics").await;
    let text = metrics.body.as_str().expect("text");
    assert!(
        text.contains("paddock_sandboxes{state=\"running\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "paddock_http_requests_total{method=\"POST\",route=\"/v1/vms\",status=\"200\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("paddock_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn openapi_document_is_served_and_committed() {
    let server = Server::start();
    let served = server
        .client()
        .with_key(None)
        .get("/openapi.json")
        .await
        .body;
    let paths = served["paths"].as_object().expect("paths");
    for p in [
        "/v1/vms",
        "/v1/vms/{vm_id}",
        "/execute",
        "/v1/vms/{vm_id}/exec",
        "/v1/vms/{vm_id}/files",
        "/v1/sessions/session",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    let committed_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi.json");
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&committed_path)
            .expect("openapi.json is committed at the repo root"),
    )
    .expect("valid JSON");
    assert_eq!(
        served, committed,
        "openapi.json drifted: regenerate with `cargo run -- openapi > openapi.json`"
    );
}
