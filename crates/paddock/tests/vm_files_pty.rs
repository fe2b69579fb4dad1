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

type Terminal =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads a terminal's output until what it showed satisfies `done` (10 s
/// at most): whether it did, and everything shown.
async fn read_until(ws: &mut Terminal, done: impl Fn(&str) -> bool) -> (bool, String) {
    let mut shown = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Binary(b) = msg {
                shown.push_str(&String::from_utf8_lossy(&b));
                if done(&shown) {
                    return true;
                }
            }
        }
        false
    })
    .await;
    (found == Ok(true), shown)
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
    let (prompt, shown) = read_until(&mut ws, |shown| shown.contains("# ")).await;
    assert!(prompt, "{shown}");
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
    let (found, seen) = read_until(&mut ws, |seen| {
        seen.contains("pty-42") && seen.contains("40 120")
    })
    .await;
    assert!(found, "{seen}");

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

/// A browser cannot set headers on a WebSocket: it offers the key as the
/// subprotocol `paddock.key.<key>` beside `paddock.v1`, and the server
/// selects `paddock.v1` (a browser drops a connection answered with no
/// protocol). A wrong key or another account's key gets no terminal.
#[tokio::test]
async fn a_terminal_takes_its_key_from_the_websocket_subprotocol() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let id = vm["vm_id"].as_str().expect("id");
    let made = c
        .post(&format!("/v1/vms/{id}/pty/sessions"), json!({"id": "web"}))
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    let url = format!(
        "{}/v1/vms/{id}/pty/web/connect",
        server.base.replacen("http", "ws", 1)
    );
    let offer = |key: &str| {
        let mut request = url.as_str().into_client_request().expect("request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("paddock.v1, paddock.key.{key}")
                .parse()
                .expect("header"),
        );
        request
    };
    let (mut ws, answer) = tokio_tungstenite::connect_async(offer(&server.key))
        .await
        .expect("websocket");
    assert_eq!(
        answer
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("paddock.v1")
    );
    ws.send(Message::Binary(b"echo via-$((40+2))\n".to_vec().into()))
        .await
        .expect("send");
    let (found, seen) = read_until(&mut ws, |seen| seen.contains("via-42")).await;
    assert!(found, "{seen}");
    drop(ws);

    for refused in ["nope".to_owned(), server.other_account_key()] {
        assert!(tokio_tungstenite::connect_async(offer(&refused))
            .await
            .is_err());
    }
    assert!(!server.log().contains(&server.key), "the key was logged");
}

#[tokio::test]
async fn files_are_removed_and_a_vm_reports_its_counters() {
    let server = Server::start();
    let c = server.client();
    let vm = c
        .create_vm(json!({"memory_mb": 256, "vcpu_count": 2}))
        .await;
    let id = vm["vm_id"].as_str().expect("id");
    c.exec(
        id,
        "mkdir -p /root/tree/sub && echo x > /root/tree/sub/f && echo y > /root/one",
    )
    .await;

    let removed = c
        .delete(&format!("/v1/vms/{id}/files?path=/root/one"))
        .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(removed.body, json!({"path": "/root/one", "removed": true}));
    let tree = c
        .delete(&format!("/v1/vms/{id}/files?path=/root/tree"))
        .await;
    assert_eq!(tree.status, 200, "{}", tree.body);
    let (out, _, _) = c
        .exec(
            id,
            "ls /root/one /root/tree 2>&1 | wc -l; test -e /root/tree || echo gone",
        )
        .await;
    assert!(out.contains("gone"), "{out}");
    let again = c
        .delete(&format!("/v1/vms/{id}/files?path=/root/one"))
        .await;
    assert_eq!(again.status, 404, "{}", again.body);
    let root = c.delete(&format!("/v1/vms/{id}/files?path=/")).await;
    assert_eq!(root.status, 422, "{}", root.body);
    assert_eq!(root.body["detail"][0]["loc"], json!(["query", "path"]));
    let relative = c.delete(&format!("/v1/vms/{id}/files?path=etc")).await;
    assert_eq!(relative.status, 422, "{}", relative.body);

    // Another account sees neither the files nor the counters.
    let other_key = server.other_account_key();
    let other = c.with_key(Some(&other_key));
    c.exec(id, "echo z > /root/kept").await;
    assert_eq!(
        other
            .delete(&format!("/v1/vms/{id}/files?path=/root/kept"))
            .await
            .status,
        404
    );
    assert_eq!(
        other.get(&format!("/v1/vms/{id}/metrics")).await.status,
        404
    );
    let (kept, _, _) = c.exec(id, "cat /root/kept").await;
    assert_eq!(kept, "z\n");

    // Counters: CPU time grows with work; memory is charged, under the
    // limit the VM was made with.
    let first = c.get(&format!("/v1/vms/{id}/metrics")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["memory_limit_bytes"], 256u64 << 20);
    assert_eq!(first.body["vcpu_count"], 2);
    assert!(first.body["memory_bytes"].as_u64().expect("memory") > 0);
    c.exec(id, "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done")
        .await;
    let second = c.get(&format!("/v1/vms/{id}/metrics")).await;
    let cpu = |r: &common::Reply| r.body["cpu_seconds"].as_f64().expect("cpu");
    assert!(
        cpu(&second) > cpu(&first),
        "{} then {}",
        first.body,
        second.body
    );
    assert_eq!(c.get("/v1/vms/vm_nosuchvm/metrics").await.status, 404);
}
