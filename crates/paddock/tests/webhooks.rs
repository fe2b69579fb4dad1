//! Webhooks end to end: a receiver on loopback (the server is told to
//! allow private addresses), VM lifecycle events signed as the `instavm`
//! SDK verifies them, retries after failures, replay, secret rotation,
//! survival across a restart, and the refusal of inward URLs by default.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Server;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A minimal HTTP/1.1 receiver: answers each request with the next
/// status of `answers` (200 once they run out) and keeps what it got.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(answers: Vec<u16>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve(listener, answers)
    }

    fn serve(listener: tokio::net::TcpListener, answers: Vec<u16>) -> Self {
        let port = listener.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        let store = Arc::clone(&got);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (store, answers) = (Arc::clone(&store), Arc::clone(&answers));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head_end, length) = loop {
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_string();
                            let length = head
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())
                                        .flatten()
                                })
                                .unwrap_or(0);
                            break (i + 4, length);
                        }
                    };
                    while buf.len() < head_end + length {
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let headers = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                        .collect();
                    store.lock().expect("lock").push(Received {
                        headers,
                        body: buf[head_end..head_end + length].to_vec(),
                    });
                    let status = answers.lock().expect("lock").next().unwrap_or(200);
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        Self { port, got }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// Waits until `pred` holds of what was received.
    async fn wait_for(&self, what: &str, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        for _ in 0..150 {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: got {:?}", self.received());
    }
}

/// The `instavm` SDK's check: HMAC-SHA256 over `t.body` with the secret.
fn signed_by(r: &Received, secret: &str) -> bool {
    let Some(header) = r.header("InstaVM-Signature") else {
        return false;
    };
    let t: i64 = header
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    header == paddock_core::model::webhook_signature(secret, t, &r.body)
}

fn types(got: &[Received]) -> Vec<String> {
    got.iter()
        .filter_map(|r| r.json()["event_type"].as_str().map(str::to_owned))
        .collect()
}

const ALLOW_LOOPBACK: &str = "[webhooks]\nallow_private = true\n";

#[tokio::test]
async fn vm_events_are_delivered_signed_and_retried_until_they_land() {
    let server = Server::start_with_config(ALLOW_LOOPBACK);
    let c = server.client();
    // The first try of the first delivery fails: it is tried again.
    let receiver = Receiver::start(vec![500]).await;
    let made = c
        .post(
            "/v1/webhooks/endpoints",
            json!({"url": receiver.url(), "event_patterns": ["vm.*"], "description": "ci"}),
        )
        .await;
    assert_eq!(made.status, 200, "{:?}", made.body);
    let secret = made.body["secret"]
        .as_str()
        .expect("the secret, once")
        .to_owned();
    assert!(secret.starts_with("whsec_"));
    let endpoint = made.body["id"].as_str().expect("id").to_owned();
    let listed = c.get("/v1/webhooks/endpoints").await;
    assert!(!listed.body.to_string().contains(&secret), "never listed");

    let vm = c.create_vm(json!({})).await;
    let vm_id = vm["vm_id"].as_str().expect("vm").to_owned();
    assert_eq!(c.delete(&format!("/v1/vms/{vm_id}")).await.status, 200);
    // The first delivery was answered 500: it comes again after a
    // backoff of about two seconds, with the same event id.
    let got = receiver
        .wait_for("created, running, terminated, and the retry", |g| {
            let t = types(g);
            let retried = g.first().is_some_and(|first| {
                g.iter()
                    .filter(|r| r.json()["id"] == first.json()["id"])
                    .count()
                    == 2
            });
            retried
                && ["vm.created", "vm.running", "vm.terminated"]
                    .iter()
                    .all(|e| t.iter().any(|x| x == e))
        })
        .await;
    for r in &got {
        assert!(signed_by(r, &secret), "signed: {r:?}");
        assert_eq!(r.json()["data"]["vm_id"], vm_id.as_str());
        assert_eq!(r.header("InstaVM-Event-Id"), r.json()["id"].as_str());
    }
    let first_id = got[0].json()["id"].clone();
    let deliveries = c
        .get(&format!("/v1/webhooks/deliveries?endpoint_id={endpoint}"))
        .await;
    assert_eq!(deliveries.status, 200, "{:?}", deliveries.body);
    let items = deliveries.body["items"].as_array().expect("items");
    let retried = items
        .iter()
        .find(|d| d["event_id"] == first_id)
        .expect("the retried delivery");
    assert_eq!(retried["status"], "succeeded");
    assert_eq!(retried["attempt_count"], 2);

    // Rotation: the next events are signed with the new secret only.
    let rotated = c
        .post(
            &format!("/v1/webhooks/endpoints/{endpoint}/rotate-secret"),
            json!({}),
        )
        .await;
    let fresh = rotated.body["secret"]
        .as_str()
        .expect("new secret")
        .to_owned();
    assert_ne!(fresh, secret);
    let test = c
        .post(
            &format!("/v1/webhooks/endpoints/{endpoint}/test"),
            json!({}),
        )
        .await;
    assert_eq!(test.status, 200, "{:?}", test.body);
    let got = receiver
        .wait_for("the test event", |g| {
            types(g).iter().any(|t| t == "webhook.test")
        })
        .await;
    let test_event = got
        .iter()
        .find(|r| r.json()["event_type"] == "webhook.test")
        .expect("test");
    assert!(signed_by(test_event, &fresh) && !signed_by(test_event, &secret));
    let verified = c
        .post(
            &format!("/v1/webhooks/endpoints/{endpoint}/verify"),
            json!({}),
        )
        .await;
    assert_eq!(verified.body["ok"], true, "{:?}", verified.body);
    assert_eq!(verified.body["status_code"], 200);

    // Another account sees none of it.
    let other = c.with_key(Some(&server.other_account_key()));
    assert_eq!(
        other
            .get(&format!("/v1/webhooks/endpoints/{endpoint}"))
            .await
            .status,
        404
    );
    assert_eq!(
        other.get("/v1/webhooks/deliveries").await.body["items"],
        json!([])
    );
    let delivery = items[0]["id"].as_str().expect("delivery");
    assert_eq!(
        other
            .post(
                &format!("/v1/webhooks/deliveries/{delivery}/replay"),
                json!({})
            )
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn failed_deliveries_wait_in_the_store_and_are_replayed() {
    let mut server = Server::start_with_config(ALLOW_LOOPBACK);
    let c = server.client();
    // A port nobody listens on yet.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let made = c
        .post(
            "/v1/webhooks/endpoints",
            json!({"url": format!("http://127.0.0.1:{port}/hook"), "event_patterns": ["webhook.test"], "max_retries": 0}),
        )
        .await;
    assert_eq!(made.status, 200, "{:?}", made.body);
    let endpoint = made.body["id"].as_str().expect("id").to_owned();
    let secret = made.body["secret"].as_str().expect("secret").to_owned();
    c.post(
        &format!("/v1/webhooks/endpoints/{endpoint}/test"),
        json!({}),
    )
    .await;
    let mut failed = Value::Null;
    for _ in 0..100 {
        let page = c.get("/v1/webhooks/deliveries?status=failed").await;
        if page.body["items"].as_array().is_some_and(|i| !i.is_empty()) {
            failed = page.body["items"][0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connect")),
        "{failed}"
    );

    // The record outlives a restart; once the receiver is up, a replay
    // delivers the same event.
    server.restart();
    let c = server.client();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the same port");
    let receiver = Receiver::serve(listener, Vec::new());
    let id = failed["id"].as_str().expect("id");
    let replayed = c
        .post(&format!("/v1/webhooks/deliveries/{id}/replay"), json!({}))
        .await;
    assert_eq!(replayed.status, 200, "{:?}", replayed.body);
    let got = receiver.wait_for("the replay", |g| !g.is_empty()).await;
    assert_eq!(got[0].json()["id"], failed["event_id"]);
    assert!(signed_by(&got[0], &secret));
}

#[tokio::test]
async fn inward_and_malformed_endpoints_are_refused_by_field() {
    let server = Server::start();
    let c = server.client();
    for (body, field) in [
        (json!({"url": "http://127.0.0.1:9/hook"}), "url"),
        (json!({"url": "http://169.254.169.254/latest"}), "url"),
        (json!({"url": "file:///etc/passwd"}), "url"),
        (
            json!({"url": "https://93.184.216.34/", "event_patterns": ["nothing.*"]}),
            "event_patterns",
        ),
        (
            json!({"url": "https://93.184.216.34/", "timeout_seconds": 0}),
            "timeout_seconds",
        ),
        (
            json!({"url": "https://93.184.216.34/", "max_retries": 99}),
            "max_retries",
        ),
        (json!({"description": "no url"}), "url"),
    ] {
        let r = c.post("/v1/webhooks/endpoints", body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {:?}", r.body);
        assert!(r.body.to_string().contains(field), "{body}: {:?}", r.body);
    }
    assert_eq!(c.get("/v1/webhooks/endpoints").await.body, json!([]));
    for (query, field) in [
        ("status=meh", "status"),
        ("limit=0", "limit"),
        ("endpoint_id=x", "endpoint_id"),
    ] {
        let r = c.get(&format!("/v1/webhooks/deliveries?{query}")).await;
        assert_eq!(r.status, 422, "{query}: {:?}", r.body);
        assert!(r.body.to_string().contains(field));
    }
}

#[tokio::test]
async fn volume_and_share_events_reach_the_endpoints_that_want_them() {
    let server = Server::start_with_config(ALLOW_LOOPBACK);
    let c = server.client();
    let receiver = Receiver::start(Vec::new()).await;
    let made = c
        .post(
            "/v1/webhooks/endpoints",
            json!({"url": receiver.url(), "event_patterns": ["volume.*", "share.*"]}),
        )
        .await;
    assert_eq!(made.status, 200, "{:?}", made.body);
    let volume = c
        .post(
            "/v1/volumes",
            json!({"name": "hooked", "quota_bytes": 64 << 20}),
        )
        .await;
    assert_eq!(volume.status, 200, "{:?}", volume.body);
    let volume_id = volume.body["volume_id"].as_str().expect("volume");
    assert_eq!(
        c.delete(&format!("/v1/volumes/{volume_id}")).await.status,
        200
    );
    let vm = c.create_vm(json!({})).await;
    let share = c
        .post(
            "/v1/shares",
            json!({"vm_id": vm["vm_id"], "port": 8000, "is_public": true}),
        )
        .await;
    assert_eq!(share.status, 200, "{:?}", share.body);
    let share_id = share.body["share_id"].as_str().expect("share");
    assert_eq!(
        c.delete(&format!("/v1/shares/{share_id}")).await.status,
        200
    );
    let got = receiver
        .wait_for("volume and share events", |g| types(g).len() >= 4)
        .await;
    let mut seen = types(&got);
    seen.sort();
    assert_eq!(
        seen,
        [
            "share.created",
            "share.deleted",
            "volume.created",
            "volume.deleted"
        ],
        "and no VM event: the endpoint did not ask for them"
    );
    assert_eq!(got[0].json()["data"]["volume_id"], volume_id);
}
