//! Per-account quotas: capacity checked atomically at create, a request
//! rate with a burst, both readable by the account and answered in each
//! surface's format.

mod common;

use common::Server;
use serde_json::json;

#[tokio::test]
async fn creates_past_a_capacity_quota_are_refused_naming_it_even_when_racing() {
    let server = Server::start_with_config(
        "[quotas]\nrequests_per_second = 0\n[quotas.accounts.default]\nmax_vms = 2\nmax_memory_mb = 768\n",
    );
    let c = server.client();

    // Eight creates at once: exactly two fit.
    let creates = (0..8).map(|_| {
        let c = server.client();
        async move { c.post("/v1/vms", json!({"memory_mb": 256})).await }
    });
    let replies = futures::future::join_all(creates).await;
    let made: Vec<_> = replies.iter().filter(|r| r.status == 200).collect();
    let refused: Vec<_> = replies.iter().filter(|r| r.status == 403).collect();
    assert_eq!(
        made.len(),
        2,
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert_eq!(refused.len(), 6);
    let detail = refused[0].body["detail"].as_str().expect("detail");
    assert!(detail.contains("quota max_vms"), "{detail}");
    assert!(detail.contains("2 of 2"), "{detail}");

    let q = c.get("/v1/quotas").await;
    assert_eq!(q.status, 200, "{}", q.body);
    assert_eq!(q.body["limits"]["max_vms"], 2);
    assert_eq!(q.body["limits"]["max_vcpus"], serde_json::Value::Null);
    assert_eq!(q.body["usage"]["vms"], 2);
    assert_eq!(q.body["usage"]["memory_mb"], 512);

    // Deleting one frees a slot, but not memory for a bigger VM.
    let first = made[0].body["vm_id"].as_str().expect("id");
    assert_eq!(c.delete(&format!("/v1/vms/{first}")).await.status, 200);
    let big = c.post("/v1/vms", json!({"memory_mb": 768})).await;
    assert_eq!(big.status, 403, "{}", big.body);
    let detail = big.body["detail"].as_str().expect("detail");
    assert!(detail.contains("quota max_memory_mb"), "{detail}");
    let fits = c.post("/v1/vms", json!({"memory_mb": 256})).await;
    assert_eq!(fits.status, 200, "{}", fits.body);

    // Another account has the default: no capacity limit.
    let other = c.with_key(Some(&server.other_account_key()));
    for _ in 0..3 {
        let r = other.post("/v1/vms", json!({"memory_mb": 256})).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

#[tokio::test]
async fn a_spent_request_rate_is_429_with_retry_after_on_every_surface() {
    let server = Server::start_with_config("[quotas]\nrequests_per_second = 2\nburst = 3\n");
    let c = server.client();
    let account = server.default_account_id();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(c.get("/v1/vms").await);
    }
    let limited = statuses
        .iter()
        .find(|r| r.status == 429)
        .unwrap_or_else(|| {
            panic!(
                "no 429 in {:?}",
                statuses.iter().map(|r| r.status).collect::<Vec<_>>()
            )
        });
    assert!(limited.body["detail"]
        .as_str()
        .expect("detail")
        .contains("rate limit"));
    let wait: u64 = limited.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&wait), "{wait}");

    let r = c.get(&format!("/v1/accounts/{account}/clusters")).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.body["code"], 8, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));

    let r = c.get("/api/v1/environments").await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.body["errors"][0]["code"], "rate_limited", "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));

    // The rate refills: after a wait, calls go through again.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(c.get("/v1/vms").await.status, 200);
    // Other accounts have buckets of their own.
    let other = c.with_key(Some(&server.other_account_key()));
    assert_eq!(other.get("/v1/vms").await.status, 200);
}
