//! Bad input gets a clear error in the VM API's format and changes nothing.

mod common;

use common::Server;
use serde_json::json;

#[tokio::test]
async fn malformed_and_mistyped_bodies_are_422s_naming_the_field() {
    let server = Server::start();
    let c = server.client();

    let r = c.post_raw("/v1/vms", "{not json").await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["detail"][0]["type"], "json_invalid");

    let r = c.post_raw("/v1/vms", "").await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["detail"][0]["loc"], json!(["body"]));

    let r = c.post("/v1/vms", json!({"vcpu_count": "two"})).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "vcpu_count"]));
    assert_eq!(r.body["detail"][0]["type"], "type_error");

    let r = c.post("/v1/vms", json!({"memory_mb": 1})).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "memory_mb"]));
    let r = c
        .post("/v1/vms", json!({"memory_mb": 99_999_999_999_i64}))
        .await;
    assert_eq!(r.status, 422);
    let r = c.post("/v1/vms", json!({"vcpu_count": 0})).await;
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "vcpu_count"]));
    let r = c.post("/v1/vms", json!({"vm_lifetime_seconds": -5})).await;
    assert_eq!(
        r.body["detail"][0]["loc"],
        json!(["body", "vm_lifetime_seconds"])
    );
    let r = c.post("/v1/vms", json!({"env": {"1BAD": "x"}})).await;
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "env", "1BAD"]));
    let r = c.post("/v1/vms", json!({"env": {"A": 5}})).await;
    assert_eq!(r.status, 422);
    let r = c
        .post("/v1/vms", json!({"image_variant": "Not A Variant!"}))
        .await;
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "image_variant"]));
    let r = c.post("/v1/vms", json!({"session_id": "../etc"})).await;
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "session_id"]));
    let r = c.post("/v1/vms?wait=maybe", json!({})).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["detail"][0]["loc"][0], "query");

    // Snapshot and vault fields are checked like any other input.
    let r = c.post("/v1/vms", json!({"snapshot_id": "x"})).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = c.post("/v1/vms", json!({"snapshot_id": 7})).await;
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "snapshot_id"]));
    let r = c.post("/v1/vms", json!({"vault_ids": ["v1"]})).await;
    assert_eq!(
        r.body["detail"][0]["loc"],
        json!(["body", "vault_ids", "0"])
    );
    let r = c.post("/v1/vms", json!({"snapshot_name": ""})).await;
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "snapshot_name"]));
    let r = c
        .post("/v1/vms", json!({"snapshot_on_terminate": "yes"}))
        .await;
    assert_eq!(
        r.body["detail"][0]["loc"],
        json!(["body", "snapshot_on_terminate"])
    );

    // Networking fields name the part that is wrong; unimplemented ones
    // are refused by name.
    for (body, loc) in [
        (
            json!({"egress_policy": {"allow_http": "no"}}),
            json!(["body", "egress_policy", "allow_http"]),
        ),
        (
            json!({"share": {"port": 0}}),
            json!(["body", "share", "port"]),
        ),
        (
            json!({"custom_domain": {"domain": "x.example"}}),
            json!(["body", "custom_domain"]),
        ),
        (
            json!({"auto_suspend": true}),
            json!(["body", "auto_suspend"]),
        ),
    ] {
        let r = c.post("/v1/vms", body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_eq!(r.body["detail"][0]["loc"], loc, "{}", r.body);
    }
    // Null and false mean "not set" and are accepted.
    let ok = c
        .create_vm(json!({"egress_policy": null, "snapshot_on_terminate": false, "vault_ids": []}))
        .await;
    assert_eq!(ok["status"], "active");

    // Nothing was created by the refused requests.
    assert_eq!(
        c.get("/v1/vms/")
            .await
            .body
            .as_array()
            .expect("array")
            .len(),
        1
    );
}

#[tokio::test]
async fn unknown_ids_and_bad_paths() {
    let server = Server::start();
    let c = server.client();
    for path in [
        "/v1/vms/vm_doesnotexist",
        "/v1/vms/garbage",
        "/v1/vms/..%2f..%2fetc",
    ] {
        let r = c.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.body["detail"].is_string());
    }
    assert_eq!(c.delete("/v1/vms/vm_doesnotexist").await.status, 404);
    assert_eq!(c.get("/v1/executions/task_nope").await.status, 404);
    assert_eq!(
        c.get("/v1/sessions/status/no-such-session").await.status,
        404
    );

    let vm = c.create_vm(json!({})).await;
    let id = vm["vm_id"].as_str().expect("id");
    for bad in [
        "../../etc/passwd",
        "/root/../../etc/passwd",
        "relative/path",
        "",
    ] {
        let r = c.get(&format!("/v1/vms/{id}/files?path={bad}")).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
        assert_eq!(r.body["detail"][0]["loc"], json!(["query", "path"]));
    }
    let r = c.get(&format!("/v1/vms/{id}/files")).await;
    assert_eq!(r.status, 422);
    let r = c
        .get(&format!("/v1/vms/{id}/files?path=/no/such/file"))
        .await;
    assert_eq!(r.status, 404);
    let r = c
        .post(&format!("/v1/vms/{id}/exec"), json!({"command": ""}))
        .await;
    assert_eq!(r.status, 422);
    let r = c
        .post(&format!("/v1/vms/{id}/exec"), json!({"command": [1, 2]}))
        .await;
    assert_eq!(r.status, 422);
    let r = c
        .post(
            "/execute",
            json!({"command": "id", "session_id": vm["session_id"], "timeout": 0}),
        )
        .await;
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "timeout"]));
    let r = c
        .post(
            "/execute",
            json!({"command": "id", "session_id": vm["session_id"], "language": "cobol"}),
        )
        .await;
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "language"]));
    let r = c
        .post("/execute", json!({"session_id": vm["session_id"]}))
        .await;
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "command"]));
    // The VM is untouched by all of it.
    let (out, _, _) = c.exec(id, "echo fine").await;
    assert_eq!(out, "fine\n");
}
