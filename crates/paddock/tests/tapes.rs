//! Tapes across a restart of the server: a tape that was recording goes
//! on recording the VM (nothing the VM did before is lost, and what it
//! does after is recorded), and a tape whose retention ended is deleted
//! with its files when the server looks (at start, then hourly).

mod common;

use std::time::Duration;

use common::Server;
use serde_json::{json, Value};

async fn events(c: &common::Client, tape: &str, want: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.get(&format!("/v1/tapes/{tape}/events")).await;
        let all = r.body.as_array().cloned().unwrap_or_default();
        if all.len() >= want || std::time::Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_recording_tape_survives_a_restart_and_ends_with_its_retention() {
    let mut server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let vm_id = vm["vm_id"].as_str().expect("vm id").to_owned();
    let session = vm["session_id"].as_str().expect("session");
    let r = c
        .post(
            &format!("/v1/sessions/{session}/tape/start"),
            json!({"retention_days": 1}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let tape = r.body["id"].as_str().expect("tape").to_owned();
    c.exec(&vm_id, "echo before > /root/before.txt").await;
    assert_eq!(events(&c, &tape, 1).await.len(), 1);

    server.restart();
    let c = server.client();
    c.exec(&vm_id, "echo after > /root/after.txt").await;
    let all = events(&c, &tape, 2).await;
    assert_eq!(all.len(), 2, "{all:?}");
    let last = all[1]["step_id"].as_u64().expect("step");
    let r = c
        .get(&format!("/v1/tapes/{tape}/diff?from=0&to={last}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let paths: Vec<&str> = r.body["changed_paths"]
        .as_array()
        .expect("paths")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        paths.contains(&"/root/before.txt") && paths.contains(&"/root/after.txt"),
        "{paths:?}"
    );
    let files = server.data_dir().join("tapes").join(&tape);
    assert!(files.is_dir());

    // Its retention ends (the document says so, as a day later would),
    // and the next look deletes it and its files.
    server.kill();
    server.edit_store(
        "UPDATE gateway_resources SET doc = json_set(doc, '$.expires_at', 1) WHERE kind = 'tape'",
        "UPDATE gateway_resources SET doc = jsonb_set(doc::jsonb, '{expires_at}', '1')::text \
         WHERE kind = 'tape'",
    );
    server.restart();
    let c = server.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = c.get(&format!("/v1/tapes/{tape}")).await.status;
        if status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the expired tape is still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!files.exists(), "its files are left behind");
    // The VM it recorded is not recorded any more.
    c.exec(&vm_id, "echo later").await;
    assert_eq!(c.get("/v1/tapes").await.body, json!([]));
}
