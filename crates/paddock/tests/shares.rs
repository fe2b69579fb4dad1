//! Shares through the share proxy, against servers running in real VMs:
//! plain HTTP by host and by path, a WebSocket echo, a 100 MiB streamed
//! download, private shares (401 without the token, and the VM never
//! sees that request), one-time login links, revocation and tenancy.

mod common;

use std::time::Duration;

use common::{Client, Server};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A WebSocket echo server in the Python standard library (RFC 6455
/// handshake and unmasking; text frames under 64 KiB echoed back).
const WS_ECHO: &str = r#"
import base64, hashlib, socket, threading
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def serve(c):
    req = b""
    while b"\r\n\r\n" not in req:
        req += c.recv(4096)
    key = [l.split(b":", 1)[1].strip() for l in req.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
    accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    while True:
        h = c.recv(2)
        if len(h) < 2: return
        op, n = h[0] & 15, h[1] & 127
        if n == 126: n = int.from_bytes(c.recv(2), "big")
        mask = c.recv(4)
        data = b""
        while len(data) < n: data += c.recv(n - len(data))
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        if op == 8: return
        out = bytes([0x80 | op]) + (bytes([len(data)]) if len(data) < 126 else bytes([126]) + len(data).to_bytes(2, "big")) + data
        c.sendall(out)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000)); s.listen()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Starts `python3 -m http.server 8000` in /srv of the VM, logging
/// requests to /tmp/http.log, and waits until it answers.
async fn start_http(c: &Client, vm: &str) {
    c.exec(
        vm,
        "mkdir -p /srv && echo 'hello from the vm' > /srv/index.html && cd /srv && \
         (nohup python3 -m http.server 8000 > /tmp/http.log 2>&1 &) && \
         for i in $(seq 50); do python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8000))' 2>/dev/null && break; sleep 0.1; done",
    )
    .await;
}

fn proxy_client(server: &Server, host: &str) -> reqwest::Client {
    common::install_crypto();
    reqwest::Client::builder()
        .resolve(host, ([127, 0, 0, 1], server.share_port).into())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn host_of(url: &str) -> String {
    url.split("://")
        .nth(1)
        .and_then(|r| r.split([':', '/']).next())
        .expect("host")
        .to_owned()
}

async fn create_vm_with_share(c: &Client, is_public: bool) -> (String, Value) {
    let vm = c
        .create_vm(json!({"share": {"port": 8000, "is_public": is_public}}))
        .await;
    assert_eq!(vm["status"], "active", "{vm}");
    let share = vm["share"].clone();
    assert!(share["url"].is_string(), "{vm}");
    (vm["vm_id"].as_str().expect("id").to_owned(), share)
}

#[tokio::test]
async fn public_share_serves_http_websocket_and_a_streamed_download() {
    let server = Server::start();
    let c = server.client();
    let (vm, share) = create_vm_with_share(&c, true).await;
    assert_eq!(share["is_public"], true);
    assert!(share.get("token").is_none(), "{share}");
    let url = share["url"].as_str().expect("url");
    let host = host_of(url);
    let http = proxy_client(&server, &host);

    // Nothing listens yet: a clear 502, not a hang.
    let r = http.get(url).send().await.expect("request");
    assert_eq!(r.status(), 502);

    start_http(&c, &vm).await;
    let r = http.get(url).send().await.expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "hello from the vm\n");
    // HTTP/2 (prior knowledge on the plain port) to the same share.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve(&host, ([127, 0, 0, 1], server.share_port).into())
        .build()
        .expect("h2 client");
    let r = h2.get(url).send().await.expect("h2 request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "hello from the vm\n");
    // The path form, for setups without wildcard DNS.
    let path_url = share["path_url"].as_str().expect("path url");
    let r = http
        .get(format!("{path_url}index.html"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "hello from the vm\n");

    // 100 MiB streamed through, checked end to end.
    let (sum, _, _) = c
        .exec(
            &vm,
            "head -c 104857600 /dev/urandom > /srv/big && sha256sum /srv/big | cut -d' ' -f1",
        )
        .await;
    let mut r = http.get(format!("{url}big")).send().await.expect("request");
    assert_eq!(r.status(), 200);
    let mut hasher = Sha256::new();
    let mut total = 0usize;
    while let Some(chunk) = r.chunk().await.expect("chunk") {
        total += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(total, 104_857_600);
    assert_eq!(hex::encode(hasher.finalize()), sum.trim());

    // A WebSocket upgrade, through a second share.
    c.exec(&vm, &format!("cat > /tmp/ws.py <<'PY'\n{WS_ECHO}\nPY\n(nohup python3 /tmp/ws.py > /tmp/ws.log 2>&1 &); sleep 0.5")).await;
    let ws = c
        .post(
            &format!("/v1/vms/{vm}/shares"),
            json!({"port": 9000, "is_public": true}),
        )
        .await;
    assert_eq!(ws.status, 200, "{}", ws.body);
    let label = host_of(ws.body["url"].as_str().expect("url"));
    let label = label.split('.').next().expect("label");
    let ws_url = format!("ws://127.0.0.1:{}/_share/{label}/", server.share_port);
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .expect("websocket through the share");
    for msg in ["hello", "through the proxy"] {
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(msg))
            .await
            .expect("send");
        let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("echo in time")
            .expect("a frame")
            .expect("a good frame");
        assert_eq!(echoed.into_text().expect("text").as_str(), msg);
    }
}

#[tokio::test]
async fn private_share_needs_its_token_and_the_vm_never_sees_refusals() {
    let server = Server::start();
    let c = server.client();
    let (vm, share) = create_vm_with_share(&c, false).await;
    start_http(&c, &vm).await;
    let url = share["url"].as_str().expect("url");
    let token = share["token"].as_str().expect("a private share's token");
    let login = share["login_url"].as_str().expect("login url");
    let http = proxy_client(&server, &host_of(url));

    for r in [
        http.get(url).send().await.expect("request"),
        http.get(url)
            .header("X-Share-Token", "wrong")
            .send()
            .await
            .expect("request"),
        http.get(url)
            .basic_auth("x", Some("wrong"))
            .send()
            .await
            .expect("request"),
    ] {
        assert_eq!(r.status(), 401);
    }
    let (log, _, _) = c.exec(&vm, "cat /tmp/http.log").await;
    assert!(!log.contains("GET"), "the VM saw a refused request: {log}");

    let r = http
        .get(url)
        .header("X-Share-Token", token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let r = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let r = http
        .get(url)
        .basic_auth("anyone", Some(token))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);

    // The one-time login link sets a cookie that opens the share.
    let r = http.get(login).send().await.expect("login");
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let pair = cookie.split(';').next().expect("pair").to_owned();
    assert!(!pair.contains(token), "the cookie must not carry the token");
    let r = http
        .get(url)
        .header("Cookie", &pair)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "hello from the vm\n");
    // Only once.
    assert_eq!(http.get(login).send().await.expect("login").status(), 401);

    // Public and back: a new token, the old one and its cookie stop working.
    let id = share["share_id"].as_str().expect("id");
    let r = c
        .req(reqwest::Method::PATCH, &format!("/v1/shares/{id}"))
        .json(&json!({"is_public": true}));
    assert_eq!(c.send(r).await.status, 200);
    assert_eq!(http.get(url).send().await.expect("request").status(), 200);
    let r = c
        .req(reqwest::Method::PATCH, &format!("/v1/shares/{id}"))
        .json(&json!({"is_public": false}));
    let r = c.send(r).await;
    let fresh = r.body["token"].as_str().expect("new token");
    assert_ne!(fresh, token);
    let r = http
        .get(url)
        .header("X-Share-Token", token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    let r = http
        .get(url)
        .header("Cookie", &pair)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    let r = http
        .get(url)
        .header("X-Share-Token", fresh)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn shares_are_managed_revoked_and_end_with_their_vm() {
    let server = Server::start();
    let c = server.client();
    let (vm, share) = create_vm_with_share(&c, true).await;
    start_http(&c, &vm).await;
    let id = share["share_id"].as_str().expect("id").to_owned();
    let url = share["url"].as_str().expect("url").to_owned();
    let http = proxy_client(&server, &host_of(&url));

    let listed = c.get(&format!("/v1/vms/{vm}/shares")).await;
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.body
    );
    let all = c.get("/v1/shares").await;
    assert_eq!(all.body[0]["share_id"], id.as_str());
    assert!(c
        .get(&format!("/v1/shares/{id}"))
        .await
        .body
        .get("token")
        .is_none());

    // Another account sees nothing of it.
    let other = c.with_key(Some(&server.other_account_key()));
    assert_eq!(other.get(&format!("/v1/shares/{id}")).await.status, 404);
    assert_eq!(other.delete(&format!("/v1/shares/{id}")).await.status, 404);
    assert_eq!(
        other
            .post("/v1/shares", json!({"vm_id": vm, "port": 80}))
            .await
            .status,
        404
    );
    assert_eq!(other.get("/v1/shares").await.body, json!([]));

    // Bad input names the field and makes nothing.
    for (body, loc) in [
        (json!({"vm_id": vm, "port": 0}), json!(["body", "port"])),
        (json!({"vm_id": vm, "port": 70000}), json!(["body", "port"])),
        (json!({"port": 80}), json!(["body", "vm_id"])),
    ] {
        let r = c.post("/v1/shares", body).await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(r.body["detail"][0]["loc"], loc);
    }
    let r = c.post("/v1/vms", json!({"share": {"port": "x"}})).await;
    assert_eq!(r.status, 422);
    assert_eq!(
        c.get("/v1/shares").await.body.as_array().map(Vec::len),
        Some(1)
    );

    // Revoked: gone from the proxy at once.
    let r = c
        .req(reqwest::Method::PATCH, &format!("/v1/shares/{id}"))
        .json(&json!({"revoke": true}));
    assert_eq!(c.send(r).await.status, 200);
    assert_eq!(http.get(&url).send().await.expect("request").status(), 404);

    // A share ends with its VM.
    let again = c
        .post(
            &format!("/v1/vms/{vm}/shares"),
            json!({"port": 8000, "is_public": true}),
        )
        .await;
    let url = again.body["url"].as_str().expect("url").to_owned();
    let http = proxy_client(&server, &host_of(&url));
    assert_eq!(http.get(&url).send().await.expect("request").status(), 200);
    assert_eq!(c.delete(&format!("/v1/vms/{vm}")).await.status, 200);
    assert_eq!(http.get(&url).send().await.expect("request").status(), 404);
    assert_eq!(c.get("/v1/shares").await.body, json!([]));
}

#[tokio::test]
async fn custom_domain_gets_its_dns_record_tls_and_routes_by_host() {
    use common::internet::{Internet, TSIG_NAME, TSIG_SECRET};
    let net = Internet::start();
    let mut server = Server::start();
    let c = server.client();
    let creds = json!({"server": net.dns(), "zone": "test", "key_name": TSIG_NAME, "key_secret": TSIG_SECRET});

    // Bad input names the field and makes nothing.
    for (domain, loc) in [
        (
            json!({"domain": "app.test", "dns_provider": "cloudflare"}),
            json!(["body", "dns_provider"]),
        ),
        (
            json!({"domain": "app.test", "dns_provider": "rfc2136", "dns_credentials": {"server": net.dns(), "zone": "test", "key_name": "k", "key_secret": "%%"}}),
            json!(["body", "dns_credentials", "key_secret"]),
        ),
        (
            json!({"domain": "*.test", "dns_provider": null}),
            json!(["body", "domain"]),
        ),
    ] {
        let r = c
            .post(
                "/v1/vms",
                json!({"share": {"port": 8000, "is_public": true}, "custom_domain": domain}),
            )
            .await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(r.body["detail"][0]["loc"], loc, "{}", r.body);
    }
    assert_eq!(c.get("/v1/vms").await.body, json!([]));

    let vm = c
        .create_vm(json!({
            "share": {"port": 8000, "is_public": true},
            "custom_domain": {"domain": "App.Test", "dns_provider": "rfc2136", "dns_credentials": creds},
        }))
        .await;
    let vm_id = vm["vm_id"].as_str().expect("id").to_owned();
    let domain = &vm["custom_domain"];
    assert_eq!(domain["status"], "issued", "{vm}");
    assert_eq!(domain["domain"], "app.test");
    assert!(
        !vm.to_string().contains(TSIG_SECRET),
        "credentials returned: {vm}"
    );
    // The record is in the DNS server, made by dynamic update.
    assert_eq!(net.lookup("app.test", "A"), "127.0.0.1");
    start_http(&c, &vm_id).await;

    // TLS (self-signed here) on the proxy's TLS port, routed by SNI/Host.
    common::install_crypto();
    let https = reqwest::Client::builder()
        .resolve("app.test", ([127, 0, 0, 1], server.share_tls_port).into())
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    let r = https
        .get(format!("https://app.test:{}/", server.share_tls_port))
        .send()
        .await
        .expect("https through the custom domain");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "hello from the vm\n");
    // Plain HTTP by Host too.
    let http = proxy_client(&server, "app.test");
    let r = http
        .get(format!("http://app.test:{}/", server.share_port))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);

    let id = domain["id"].as_i64().expect("integer id");
    let listed = c.get("/v1/custom-domains").await;
    assert_eq!(listed.body["domains"][0]["id"], id);
    let health = c.get(&format!("/v1/custom-domains/{id}/health")).await;
    assert_eq!(health.body["cert_present"], true);
    assert_eq!(health.body["proxy_active"], true);
    let other = c.with_key(Some(&server.other_account_key()));
    assert_eq!(
        other.get(&format!("/v1/custom-domains/{id}")).await.status,
        404
    );
    assert_eq!(
        other
            .delete(&format!("/v1/custom-domains/{id}"))
            .await
            .status,
        404
    );
    // One hostname routes to one share.
    let share_id = vm["share"]["share_id"].as_str().expect("share");
    let r = c
        .post(
            "/v1/custom-domains",
            json!({"domain": "app.test", "share_id": share_id, "dns_provider": null}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    // A new VM asking for a routed name is refused before it is made.
    let r = c
        .post(
            "/v1/vms",
            json!({"share": {"port": 8000, "is_public": true}, "custom_domain": {"domain": "app.test"}}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(
        c.get("/v1/vms").await.body.as_array().map(Vec::len),
        Some(1)
    );

    // After a master key rotation the DNS credentials still open: verify
    // (which updates the record again) and delete use them.
    server.kill();
    server.rotate_master_key();
    server.restart();
    let c = server.client();
    let http = proxy_client(&server, "app.test");
    let r = c
        .post(&format!("/v1/custom-domains/{id}/verify"), json!({}))
        .await;
    assert_eq!(r.body["status"], "issued", "{}", r.body);

    // Deleting it removes the record and the route.
    assert_eq!(
        c.delete(&format!("/v1/custom-domains/{id}")).await.status,
        200
    );
    assert_eq!(net.lookup("app.test", "A"), "");
    let r = http
        .get(format!("http://app.test:{}/", server.share_port))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
    assert!(
        !server.log().contains(TSIG_SECRET),
        "the TSIG secret reached the log"
    );
}
