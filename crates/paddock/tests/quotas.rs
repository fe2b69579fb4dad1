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

#[tokio::test]
async fn volume_snapshot_and_build_quotas_are_enforced_and_shown() {
    let server = Server::start_with_config(
        "[quotas]\nmax_volume_mb = 150\nmax_snapshot_mb = 1\nmax_image_builds = 1\n",
    );
    let c = server.client();

    // Volumes: their sizes together, on create and on growth.
    let mib = 1024 * 1024;
    let first = c
        .post(
            "/v1/volumes",
            json!({"name": "a", "quota_bytes": 100 * mib}),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = c
        .post(
            "/v1/volumes",
            json!({"name": "b", "quota_bytes": 100 * mib}),
        )
        .await;
    assert_eq!(second.status, 403, "{}", second.body);
    let detail = second.body["detail"].as_str().expect("detail");
    assert!(detail.contains("quota max_volume_mb"), "{detail}");
    assert!(detail.contains("100 MiB of 150 MiB"), "{detail}");
    let id = first.body["volume_id"].as_str().expect("id");
    let grown = c
        .send(
            c.req(reqwest::Method::PATCH, &format!("/v1/volumes/{id}"))
                .json(&json!({"quota_bytes": 140 * mib})),
        )
        .await;
    assert_eq!(grown.status, 200, "{}", grown.body);
    let too_big = c
        .send(
            c.req(reqwest::Method::PATCH, &format!("/v1/volumes/{id}"))
                .json(&json!({"quota_bytes": 200 * mib})),
        )
        .await;
    assert_eq!(too_big.status, 403, "{}", too_big.body);

    // Snapshots: once they hold the limit, no more user snapshots.
    let vm = c.create_vm(json!({})).await;
    let vm_id = vm["vm_id"].as_str().expect("id");
    c.exec(vm_id, "head -c 3000000 /dev/urandom > /root/blob")
        .await;
    let snap = c
        .post(&format!("/v1/vms/{vm_id}/snapshot?wait=true"), json!({}))
        .await;
    assert_eq!(snap.status, 200, "{}", snap.body);
    let again = c
        .post(&format!("/v1/vms/{vm_id}/snapshot?wait=true"), json!({}))
        .await;
    assert_eq!(again.status, 403, "{}", again.body);
    let detail = again.body["detail"].as_str().expect("detail");
    assert!(detail.contains("quota max_snapshot_mb"), "{detail}");

    // Image builds: one at a time.
    let slow = json!({"dockerfile": "FROM default\nRUN sleep 3\n", "tag": "local/slow:v1"});
    let first_build = {
        let c = server.client();
        let body = slow.clone();
        tokio::spawn(async move { c.post("/v1/images/build", body).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let q = c.get("/v1/quotas").await;
    assert_eq!(q.body["usage"]["image_builds"], 1, "{}", q.body);
    assert_eq!(q.body["usage"]["volume_mb"], 140, "{}", q.body);
    assert!(
        q.body["usage"]["snapshot_mb"].as_u64() >= Some(1),
        "{}",
        q.body
    );
    let second_build = c
        .post(
            "/v1/images/build",
            json!({"dockerfile": "FROM default\n", "tag": "local/other:v1"}),
        )
        .await;
    assert_eq!(second_build.status, 403, "{}", second_build.body);
    let detail = second_build.body["detail"].as_str().expect("detail");
    assert!(detail.contains("quota max_image_builds"), "{detail}");
    let done = first_build.await.expect("first build");
    assert_eq!(done.status, 200, "{}", done.body);
    let after = c
        .post(
            "/v1/images/build",
            json!({"dockerfile": "FROM default\n", "tag": "local/other:v1"}),
        )
        .await;
    assert_eq!(after.status, 200, "{}", after.body);
}
