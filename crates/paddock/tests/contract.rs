//! The API contract at its edges: every rejection is in the format of the
//! surface it came through (never plain text), and error messages name
//! the real cause once.

mod common;

use common::Server;
use reqwest::Method;
use serde_json::{json, Value};

/// The VM API's `{"detail": "..."}`.
fn vm_detail(body: &Value) -> &str {
    body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("not a VM API error: {body}"))
}

/// The gateway's google.rpc.Status.
fn gateway_status(body: &Value) -> (i64, &str) {
    (
        body["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("not a Status: {body}")),
        body["message"]
            .as_str()
            .unwrap_or_else(|| panic!("not a Status: {body}")),
    )
}

/// The definitions' first `errors[]` entry: (code, detail).
fn definitions_error(body: &Value) -> (&str, &str) {
    let e = &body["errors"][0];
    (
        e["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an ErrorResponse: {body}")),
        e["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("not an ErrorResponse: {body}")),
    )
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_each_surfaces_format() {
    let server = Server::start();
    let c = server.client();
    let account = server.default_account_id();

    let r = c.get("/v1/no-such-thing").await;
    assert_eq!(r.status, 404);
    assert!(vm_detail(&r.body).contains("no such route"), "{}", r.body);
    let r = c.send(c.req(Method::PUT, "/v1/vms")).await;
    assert_eq!(r.status, 405);
    assert!(vm_detail(&r.body).contains("PUT"), "{}", r.body);
    assert!(
        r.headers.contains_key("allow"),
        "405 keeps its Allow header"
    );

    let r = c
        .get(&format!("/v1/accounts/{account}/noSuchCollection"))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(gateway_status(&r.body).0, 5, "{}", r.body);

    let r = c.get("/api/v1/no-such-thing").await;
    assert_eq!(r.status, 404);
    assert_eq!(definitions_error(&r.body).0, "not_found", "{}", r.body);
    assert!(r.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn query_and_path_rejections_are_validation_errors_naming_the_parameter() {
    let server = Server::start();
    let c = server.client();

    let r = c.get("/v1/volumes?refresh_usage=x").await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(
        r.body["detail"][0]["loc"],
        json!(["query", "refresh_usage"])
    );

    let r = c
        .send(c.req(
            Method::DELETE,
            "/v1/vms/00000000-0000-0000-0000-000000000000/volumes/v?wait=x",
        ))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["detail"][0]["loc"], json!(["query", "wait"]));

    // A path segment that is not UTF-8 once decoded.
    let r = c.get("/v1/vms/%FF").await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["detail"][0]["loc"], json!(["path", "vm_id"]));

    let r = c.get("/v1/shares?vm_id=1&limit=x").await;
    assert!(
        r.body.is_object() || r.body.is_array(),
        "JSON, not text: {}",
        r.body
    );
}

#[tokio::test]
async fn a_websocket_route_called_without_an_upgrade_says_so_in_json() {
    let server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let id = vm["vm_id"].as_str().expect("id");
    let r = c.get(&format!("/v1/vms/{id}/pty/p1/connect")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        vm_detail(&r.body).to_lowercase().contains("upgrade"),
        "{}",
        r.body
    );
}

/// Announces a body of `length` bytes and sends none of it: the server
/// answers from the length alone. (A client that streamed the whole body
/// would see the connection closed under it, as it should be.)
async fn announce_body(server: &Server, path: &str, length: usize) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = &server.key;
    let addr = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: paddock\r\nx-api-key: {key}\r\n\
         content-type: application/json\r\ncontent-length: {length}\r\n\
         connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.expect("read");
    let text = String::from_utf8_lossy(&reply);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    )
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_in_each_surfaces_format() {
    let server = Server::start();
    let account = server.default_account_id();
    let big = 64 * 1024 * 1024;

    let (status, body) = announce_body(&server, "/v1/volumes", big).await;
    assert_eq!(status, 413, "{body}");
    assert!(vm_detail(&body).contains("json_body_mb"), "{body}");

    let (status, body) =
        announce_body(&server, &format!("/v1/accounts/{account}/clusters"), big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(gateway_status(&body).0, 8, "{body}");

    let (status, body) = announce_body(&server, "/api/v1/environments", big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(definitions_error(&body).0, "payload_too_large", "{body}");
}

#[tokio::test]
async fn error_messages_name_the_real_cause_once() {
    let server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let id = vm["vm_id"].as_str().expect("id");

    // A PTY id that is taken.
    let r = c
        .post(&format!("/v1/vms/{id}/pty/sessions"), json!({"id": "p1"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c
        .post(&format!("/v1/vms/{id}/pty/sessions"), json!({"id": "p1"}))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(vm_detail(&r.body), "PTY session p1 exists");

    // A file under a dangling symlink.
    c.exec(id, "ln -s /nowhere /tmp/link").await;
    let r = c
        .send(
            c.req(Method::PUT, &format!("/v1/vms/{id}/files?path=/tmp/link/f"))
                .body("x"),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let msg = r.body["detail"][0]["msg"].as_str().expect("msg");
    assert_eq!(
        msg,
        "/tmp/link/f: a parent directory is in the way as a file or a symlink to nothing"
    );

    // A directory where a file is to be written.
    let r = c
        .send(
            c.req(Method::PUT, &format!("/v1/vms/{id}/files?path=/tmp"))
                .body("x"),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let msg = r.body["detail"][0]["msg"].as_str().expect("msg");
    assert_eq!(msg.matches("directory").count(), 1, "{msg}");
    assert!(msg.starts_with("/tmp"), "{msg}");

    // A file that is not there.
    let r = c.get(&format!("/v1/vms/{id}/files?path=/tmp/none")).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(vm_detail(&r.body), "File not found");

    // Another account's VM is not found, not forbidden.
    let other = c.with_key(Some(&server.other_account_key()));
    let r = other.get(&format!("/v1/vms/{id}")).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(vm_detail(&r.body), "VM not found");

    // A VM that ended takes no more commands, and says what it is.
    assert_eq!(c.delete(&format!("/v1/vms/{id}")).await.status, 200);
    let r = c
        .post(&format!("/v1/vms/{id}/exec"), json!({"command": "true"}))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(vm_detail(&r.body), "the VM is terminated, not running");
}

/// Reads what the server sends until it closes the connection, or gives up
/// after `limit` (then the connection was still open: `None`).
async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    limit: std::time::Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn slow_and_idle_clients_are_dropped_and_the_server_keeps_answering() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let server = Server::start_with_config(
        "[http]\nheader_read_timeout_secs = 1\nbody_read_timeout_secs = 1\n",
    );
    let addr = server.base.trim_start_matches("http://").to_owned();

    // Silent, and one byte of a head at a time: both closed after the
    // head timeout, with nothing served.
    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    let mut dribbling = TcpStream::connect(&addr).await.expect("connect");
    let dribble = tokio::spawn(async move {
        for b in b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: "
            .iter()
            .cycle()
            .take(40)
        {
            if dribbling.write_all(&[*b]).await.is_err() {
                return dribbling;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        dribbling
    });
    let closed = read_until_closed(&mut silent, Duration::from_secs(10)).await;
    assert_eq!(closed.as_deref(), Some(""), "a silent connection is closed");
    let mut dribbling = dribble.await.expect("dribbler");
    let closed = read_until_closed(&mut dribbling, Duration::from_secs(10)).await;
    assert!(
        closed.is_some_and(|t| !t.contains("200 OK")),
        "a slow head is cut before it completes"
    );

    // A body that stalls is cut too, and answered in the surface's format.
    let mut stalled = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST /v1/volumes HTTP/1.1\r\nhost: x\r\nx-api-key: {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{",
        server.key
    );
    stalled.write_all(head.as_bytes()).await.expect("write");
    let reply = read_until_closed(&mut stalled, Duration::from_secs(10))
        .await
        .expect("a stalled body is answered and closed");
    assert!(reply.starts_with("HTTP/1.1 4"), "{reply}");
    assert!(reply.contains("{\"detail\":"), "{reply}");

    // Once they are dropped, the server answers again.
    let r = server.client().get("/healthz").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Sends `GET /healthz` on `stream`, keeping it alive, and reads the
/// answer whole: its status.
async fn served_on(stream: &mut tokio::net::TcpStream) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("a status line");
            }
        }
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before a whole answer: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn connections_over_the_per_client_cap_get_a_503_until_one_closes() {
    use std::time::Duration;
    use tokio::net::TcpStream;
    // A head (and keep-alive) timeout far longer than the test: the held
    // connections stay open however slowly a loaded machine runs it, and a
    // place comes back only when a client closes.
    let server = Server::start_with_config(
        "[http]\nheader_read_timeout_secs = 60\nmax_connections_per_client = 12\n",
    );
    let addr = server.base.trim_start_matches("http://").to_owned();
    // Each held connection is served one request and stays open, so the
    // server has surely admitted it. One refused because the harness's
    // start-up probe was not yet counted out is replaced.
    let mut held = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while held.len() < 12 {
        assert!(std::time::Instant::now() < deadline, "12 connections held");
        let mut c = TcpStream::connect(&addr).await.expect("connect");
        match served_on(&mut c).await {
            200 => held.push(c),
            503 => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("/healthz answered {other}"),
        }
    }
    let mut surplus = TcpStream::connect(&addr).await.expect("connect");
    let reply = read_until_closed(&mut surplus, Duration::from_secs(10))
        .await
        .expect("the surplus connection is answered and closed");
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply:?}");
    assert!(reply.to_lowercase().contains("retry-after: 1"), "{reply}");

    // The server learns of the closes as it reads them: poll.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = server.client().get("/healthz").await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(std::time::Instant::now() < deadline, "the cap never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn commands_of_megabytes_run_on_every_exec_route_and_longer_ones_are_refused() {
    let server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let id = vm["vm_id"].as_str().expect("id");
    let session = vm["session_id"].as_str().expect("session");

    // A 1 MiB Python program through /execute: a long comment, then code.
    let program = format!("#{}\nprint(sum(range(10)))\n", "x".repeat(1024 * 1024));
    let r = c
        .post(
            "/execute",
            json!({"command": program, "language": "python", "session_id": session}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["stdout"], "45\n", "{}", r.body);

    // A 3 MiB shell script through the streaming exec, its args kept.
    let script = format!(
        ": {}\necho \"$1\" $(( 6 * 7 ))\n",
        "y".repeat(3 * 1024 * 1024)
    );
    let (stdout, stderr, exit) = c
        .exec_body(
            id,
            json!({"command": ["/bin/sh", "-c", script, "name", "first"]}),
        )
        .await;
    assert_eq!(stdout, "first 42\n", "{stderr}");
    assert_eq!(exit["exit_code"], 0, "{exit}");

    // The same through execute_async, read back when it ends.
    let script = format!(": {}\necho done\n", "z".repeat(512 * 1024));
    let r = c
        .post(
            "/execute_async",
            json!({"command": script, "session_id": session}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let task = r.body["task_id"].as_str().expect("task id").to_owned();
    let mut result = Value::Null;
    for _ in 0..100 {
        result = c.get(&format!("/v1/executions/{task}")).await.body;
        if result["is_complete"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(result["serialized_stdout"], "done\n", "{result}");

    // A long argument that is not a script the kernel refuses: the
    // caller's error, with the kernel's reason.
    let r = c
        .post(
            &format!("/v1/vms/{id}/exec"),
            json!({"command": ["echo", "w".repeat(200 * 1024)]}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let msg = r.body["detail"][0]["msg"].as_str().expect("msg");
    assert!(
        msg.contains("start echo") && msg.contains("Argument list too long"),
        "{msg}"
    );

    // Over 16 MiB: refused, saying how long it was and what the limit is.
    let too_long = "#".repeat(16 * 1024 * 1024 + 1);
    let r = c
        .post(
            "/execute",
            json!({"command": too_long, "session_id": session}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let msg = r.body["detail"][0]["msg"].as_str().expect("msg");
    assert!(
        msg.contains("16777221 bytes") || msg.contains("bytes; at most 16777216"),
        "{msg}"
    );
}

#[tokio::test]
async fn when_both_key_headers_are_sent_x_api_key_decides() {
    let server = Server::start();
    let c = server.client().with_key(None);
    let key = &server.key;
    let call = |api_key: &str, bearer: &str| {
        c.req(Method::GET, "/v1/vms")
            .header("X-API-Key", api_key.to_owned())
            .header("Authorization", format!("Bearer {bearer}"))
    };
    assert_eq!(c.send(call(key, "wrong")).await.status, 200);
    let r = c.send(call("wrong", key)).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(vm_detail(&r.body), "Invalid or missing API key");
    let bearer_only = c.req(Method::GET, "/v1/vms").bearer_auth(key);
    assert_eq!(c.send(bearer_only).await.status, 200);
}

#[tokio::test]
async fn the_share_listeners_drop_silent_clients_too() {
    use std::time::Duration;
    let server = Server::start_with_config("[http]\nheader_read_timeout_secs = 1\n");
    for port in [server.share_port, server.share_tls_port] {
        let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let closed = read_until_closed(&mut silent, Duration::from_secs(10)).await;
        assert_eq!(
            closed.as_deref(),
            Some(""),
            "port {port}: a silent client is closed"
        );
    }
    // And they still serve: an unknown share is a 404 from the proxy.
    let r = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/_share/nothing/",
            server.share_port
        ))
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn bodies_past_the_servers_budget_wait_outside_with_a_503() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start_with_config(
        "[http]\njson_body_mb = 16\ncommand_body_mb = 50\nbody_budget_mb = 64\nbody_read_timeout_secs = 2\n",
    );
    let addr = server.base.trim_start_matches("http://").to_owned();
    // A client announces a 50 MiB command and sends it slowly: its
    // reservation holds until it is answered.
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /execute HTTP/1.1\r\nhost: x\r\nx-api-key: {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{{",
        server.key,
        50 * 1024 * 1024
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // 16 MiB more does not fit in 64: refused before it is read.
    let (status, body) = announce_body(&server, "/v1/volumes", 16 * 1024 * 1024).await;
    assert_eq!(status, 503, "{body}");
    assert!(vm_detail(&body).contains("request bodies"), "{body}");
    // Small bodies still fit.
    let r = server
        .client()
        .post(
            "/v1/volumes",
            json!({"name": "fits", "quota_bytes": 1 << 26}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // The slow client goes: its reservation is given back.
    drop(slow);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, body) = announce_body(&server, "/v1/volumes", 16 * 1024 * 1024).await;
    assert_ne!(status, 503, "{body}");
}
