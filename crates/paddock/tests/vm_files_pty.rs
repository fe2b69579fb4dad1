//! Files in and out of VMs, and interactive PTYs over WebSocket.

mod common;

use std::time::Duration;

use common::Server;
use futures::{SinkExt, StreamExt};
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_64_mib_binary_file_round_trips_by_checksum() {
    let server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let id = vm["vm_id"].as_str().expect("id");
    let mut data = vec![0u8; 64 * 1024 * 1024];
    rand::rng().fill_bytes(&mut data);
    let want = hex::encode(Sha256::digest(&data));

    let put = c
        .send(
            c.req(
                reqwest::Method::PUT,
                &format!("/v1/vms/{id}/files?path=/root/big/blob.bin&mode=600"),
            )
            .body(data),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.body["size"], 64 * 1024 * 1024);

    let (out, _, _) = c
        .exec(
            id,
            "sha256sum /root/big/blob.bin; stat -c %a /root/big/blob.bin",
        )
        .await;
    assert!(out.starts_with(&want), "{out}");
    assert!(out.ends_with("600\n"), "{out}");

    let resp = c
        .req(
            reqwest::Method::GET,
            &format!("/v1/vms/{id}/files?path=/root/big/blob.bin"),
        )
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(64 * 1024 * 1024));
    let mut hasher = Sha256::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        hasher.update(chunk.expect("chunk"));
    }
    assert_eq!(hex::encode(hasher.finalize()), want);

    let listing = c.get(&format!("/v1/vms/{id}/files?path=/root/big")).await;
    assert_eq!(listing.body["entries"][0]["name"], "blob.bin");
    assert_eq!(listing.body["entries"][0]["type"], "file");

    // Writing onto a directory is refused and changes nothing.
    let r = c
        .send(
            c.req(
                reqwest::Method::PUT,
                &format!("/v1/vms/{id}/files?path=/root/big"),
            )
            .body("x"),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
}

#[tokio::test]
async fn pty_sessions_over_websocket() {
    let server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let id = vm["vm_id"].as_str().expect("id");
    let pty = c
        .post(
            &format!("/v1/vms/{id}/pty/sessions"),
            json!({"cols": 100, "rows": 30, "id": "term1"}),
        )
        .await;
    assert_eq!(pty.status, 200, "{}", pty.body);
    assert_eq!(pty.body["session_id"], "term1");
    assert_eq!(pty.body["alive"], true);

    let dup = c
        .post(
            &format!("/v1/vms/{id}/pty/sessions"),
            json!({"id": "term1"}),
        )
        .await;
    assert_eq!(dup.status, 409);

    let url = format!(
        "{}/v1/vms/{id}/pty/term1/connect?api_key={}",
        server.base.replacen("http", "ws", 1),
        server.key
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket");
    // Type once the shell shows its prompt, as a person would.
    let prompt = tokio::time::timeout(Duration::from_secs(10), async {
        let mut shown = String::new();
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Binary(b) = msg {
                shown.push_str(&String::from_utf8_lossy(&b));
                if shown.contains("# ") {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(prompt, Ok(true));
    ws.send(Message::Text(
        json!({"type": "resize", "cols": 120, "rows": 40})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    ws.send(Message::Binary(
        b"stty size; echo pty-$((6*7))\n".to_vec().into(),
    ))
    .await
    .expect("send");
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Binary(b) = msg {
                seen.push_str(&String::from_utf8_lossy(&b));
                if seen.contains("pty-42") && seen.contains("40 120") {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{seen}");

    let got = c.get(&format!("/v1/vms/{id}/pty/sessions/term1")).await;
    assert_eq!(got.body["cols"], 120);
    ws.send(Message::Binary(b"exit 3\n".to_vec().into()))
        .await
        .expect("send");
    let exit = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
                if v["type"] == "exit" {
                    return v["exit_code"].clone();
                }
            }
        }
        serde_json::Value::Null
    })
    .await;
    assert_eq!(exit, Ok(json!(3)));
    let got = c.get(&format!("/v1/vms/{id}/pty/sessions/term1")).await;
    assert_eq!(got.body["alive"], false);
    assert_eq!(
        c.delete(&format!("/v1/vms/{id}/pty/sessions/term1"))
            .await
            .status,
        200
    );
    assert_eq!(
        c.get(&format!("/v1/vms/{id}/pty/sessions/term1"))
            .await
            .status,
        404
    );
    let bad_key = format!(
        "{}/v1/vms/{id}/pty/term1/connect?api_key=nope",
        server.base.replacen("http", "ws", 1)
    );
    assert!(tokio_tungstenite::connect_async(bad_key).await.is_err());
}
