//! The VM platform surface beside the VMs: API keys managed over the API
//! and the caller's own user.

mod common;

use common::Server;
use serde_json::json;

async fn patch(c: &common::Client, path: &str, body: serde_json::Value) -> common::Reply {
    c.send(c.req(reqwest::Method::PATCH, path).json(&body))
        .await
}

#[tokio::test]
async fn api_keys_are_made_shown_once_changed_and_deleted_by_the_account() {
    let server = Server::start();
    let c = server.client();

    let made = c
        .post(
            "/v1/api-keys/",
            json!({"name": "ci", "description": "for the pipeline", "expires_in_days": 30}),
        )
        .await;
    assert_eq!(made.status, 200, "{:?}", made.body);
    let secret = made.body["key"].as_str().expect("the key, once").to_owned();
    let id = made.body["id"].as_str().expect("id").to_owned();
    assert!(secret.starts_with(made.body["key_prefix"].as_str().expect("prefix")));
    assert!(made.body["fingerprint"]
        .as_str()
        .is_some_and(|f| f.starts_with("SHA256:")));
    assert_eq!(made.body["expired"], false);
    assert!(made.body["expires_at"].is_string());

    // The new key acts for the account; listings never show a key.
    let with_new = c.with_key(Some(&secret));
    let me = with_new.get("/v1/users/me").await;
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(me.body["email"], "admin@localhost");
    assert_eq!(me.body["role"], "admin");
    assert_eq!(me.body["account_id"], server.default_account_id());
    let listed = c.get("/v1/api-keys/").await;
    assert_eq!(listed.status, 200);
    let keys = listed.body.as_array().expect("a list");
    assert_eq!(keys.len(), 2, "the admin key and the new one: {keys:?}");
    assert!(keys.iter().all(|k| k.get("key").is_none()));
    assert!(!listed.body.to_string().contains(&secret));
    let got = c.get(&format!("/v1/api-keys/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["name"], "ci");
    assert!(got.body.get("key").is_none());

    // Update: a new name, the description cleared, no expiry.
    let changed = patch(
        &c,
        &format!("/v1/api-keys/{id}"),
        json!({"name": "ci-2", "description": null, "expires_at": null}),
    )
    .await;
    assert_eq!(changed.status, 200, "{:?}", changed.body);
    assert_eq!(changed.body["name"], "ci-2");
    assert!(changed.body["description"].is_null());
    assert!(changed.body["expires_at"].is_null());

    // Another account sees none of it.
    let other = c.with_key(Some(&server.other_account_key()));
    assert_eq!(other.get(&format!("/v1/api-keys/{id}")).await.status, 404);
    assert_eq!(
        other.delete(&format!("/v1/api-keys/{id}")).await.status,
        404
    );
    let theirs = other.get("/v1/api-keys").await;
    assert_eq!(theirs.body.as_array().map(Vec::len), Some(1));

    // Deleted: the key's next call is 401, and it is gone from listings.
    let gone = c.delete(&format!("/v1/api-keys/{id}")).await;
    assert_eq!(gone.status, 200, "{:?}", gone.body);
    assert_eq!(with_new.get("/v1/users/me").await.status, 401);
    assert_eq!(c.get(&format!("/v1/api-keys/{id}")).await.status, 404);
    assert_eq!(
        c.get("/v1/api-keys/").await.body.as_array().map(Vec::len),
        Some(1)
    );
    // `paddock keys` sees the same records: the key is revoked there.
    let out = std::process::Command::new(common::bin())
        .args(["keys", "--data-dir"])
        .arg(server.data_dir())
        .args(["--json", "list"])
        .output()
        .expect("paddock keys list");
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let revoked = all
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["id"] == id.as_str())
        .expect("the deleted key is still on record");
    assert_eq!(revoked["revoked"], true);
}

#[tokio::test]
async fn an_expired_key_answers_401() {
    let server = Server::start();
    let c = server.client();
    use paddock_core::clock::Timestamp;
    let soon = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 1500).to_rfc3339();
    let made = c
        .post("/v1/api-keys", json!({"name": "brief", "expires_at": soon}))
        .await;
    assert_eq!(made.status, 200, "{:?}", made.body);
    let brief = c.with_key(made.body["key"].as_str());
    assert_eq!(brief.get("/v1/users/me").await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    assert_eq!(brief.get("/v1/users/me").await.status, 401);
    let id = made.body["id"].as_str().expect("id");
    let listed = c.get(&format!("/v1/api-keys/{id}")).await;
    assert_eq!(listed.body["expired"], true, "{:?}", listed.body);
}

#[tokio::test]
async fn bad_key_requests_name_the_field_and_change_nothing() {
    let server = Server::start();
    let c = server.client();
    let cases = [
        (json!({"expires_at": "next week"}), "expires_at"),
        (json!({"expires_at": "2001-01-01T00:00:00Z"}), "expires_at"),
        (
            json!({"expires_at": "2099-01-01T00:00:00Z", "expires_in_days": 3}),
            "expires_in_days",
        ),
        (json!({"expires_in_days": 0}), "expires_in_days"),
        (json!({"name": "x".repeat(101)}), "name"),
        (json!({"name": "  "}), "name"),
        (json!({"user_email": "not an email"}), "user_email"),
        (json!({"scopes": ["all"]}), "scopes"),
    ];
    for (body, field) in cases {
        let r = c.post("/v1/api-keys/", body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {:?}", r.body);
        assert!(r.body.to_string().contains(field), "{body}: {:?}", r.body);
    }
    let admin = c.get("/v1/api-keys/").await.body[0]["id"]
        .as_str()
        .expect("the admin key")
        .to_owned();
    let r = patch(
        &c,
        &format!("/v1/api-keys/{admin}"),
        json!({"description": 7}),
    )
    .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(r.body.to_string().contains("description"));
    assert_eq!(c.get("/v1/api-keys/key_nope").await.status, 404);
    assert_eq!(
        c.get("/v1/api-keys/").await.body.as_array().map(Vec::len),
        Some(1),
        "no refused request made a key"
    );
    assert_eq!(c.with_key(None).get("/v1/api-keys/").await.status, 401);
    assert_eq!(c.with_key(None).get("/v1/users/me").await.status, 401);
}

/// CPU time, memory and bytes sent, measured from the sandbox's cgroup
/// and veth, reach the day's breakdown and the session's usage; another
/// account sees none of it.
#[tokio::test]
async fn usage_is_measured_per_vm_and_day() {
    let server = Server::start_with_config("[usage]\nsample_seconds = 1\n");
    let c = server.client();
    let vm = c.create_vm(json!({"memory_mb": 256})).await;
    let vm_id = vm["vm_id"].as_str().expect("vm id").to_owned();
    let session = vm["session_id"].as_str().expect("session").to_owned();
    // About a second of CPU, and 200 datagrams of 1,000 bytes to the
    // gateway (sent out of eth0 whether or not anything listens).
    let (_, _, status) = c
        .exec(
            &vm_id,
            "python3 -c '
import socket, subprocess, time
end = time.process_time() + 1.0
while time.process_time() < end: pass
gw = subprocess.run([\"sh\", \"-c\", \"ip route show default | cut -d\\\" \\\" -f3\"], capture_output=True, text=True).stdout.strip()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(200): s.sendto(b\"x\" * 1000, (gw, 9))
'",
        )
        .await;
    assert_eq!(status["exit_code"], 0, "{status}");

    // Samples come every second: wait for one after the burst.
    let mut breakdown = json!(null);
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        breakdown = c.get("/v1/users/me/usage-breakdown?days=1").await.body;
        let vms = breakdown["vms"].as_array().cloned().unwrap_or_default();
        let ours = vms.iter().find(|v| v["vm_id"] == vm_id.as_str());
        if ours.is_some_and(|v| {
            v["cpu_hours"].as_f64().unwrap_or(0.0) * 3600.0 >= 0.9
                && v["egress_bytes"].as_u64().unwrap_or(0) >= 200_000
        }) {
            break;
        }
    }
    let ours = breakdown["vms"]
        .as_array()
        .and_then(|vms| vms.iter().find(|v| v["vm_id"] == vm_id.as_str()))
        .unwrap_or_else(|| panic!("the VM is in the breakdown: {breakdown}"));
    let cpu_seconds = ours["cpu_hours"].as_f64().expect("cpu") * 3600.0;
    assert!((0.9..30.0).contains(&cpu_seconds), "{breakdown}");
    let egress = ours["egress_bytes"].as_u64().expect("egress");
    assert!(egress >= 200_000, "{breakdown}");
    assert!(
        ours["ram_gib_hours"].as_f64().expect("ram") > 0.0,
        "{breakdown}"
    );
    assert_eq!(breakdown["total_days"], 1);
    let day = &breakdown["daily_breakdown"][0];
    assert!(
        day["cpu_hours"].as_f64().expect("day cpu") * 3600.0 >= 0.9,
        "{breakdown}"
    );
    assert_eq!(breakdown["totals"]["cost_dollars"], 0.0);

    let by_session = c.get(&format!("/v1/sessions/usage/{session}")).await;
    assert_eq!(by_session.status, 200, "{:?}", by_session.body);
    assert_eq!(by_session.body["vm_ids"], json!([vm_id]));
    assert!(by_session.body["cpu_seconds"].as_f64().expect("cpu") >= 0.9);

    let other = c.with_key(Some(&server.other_account_key()));
    let theirs = other.get("/v1/users/me/usage-breakdown").await;
    assert_eq!(theirs.status, 200);
    assert_eq!(theirs.body["vms"], json!([]), "{:?}", theirs.body);
    assert_eq!(
        other
            .get(&format!("/v1/sessions/usage/{session}"))
            .await
            .status,
        404
    );

    for (query, field) in [
        ("days=0", "days"),
        ("start_date=2026-13-01", "start_date"),
        ("end_date=soon", "end_date"),
        ("start_date=2026-03-02&end_date=2026-03-01", "start_date"),
    ] {
        let r = c
            .get(&format!("/v1/users/me/usage-breakdown?{query}"))
            .await;
        assert_eq!(r.status, 422, "{query}: {:?}", r.body);
        assert!(r.body.to_string().contains(field), "{query}: {:?}", r.body);
    }
}

#[tokio::test]
async fn sandboxes_are_listed_by_metadata_and_sessions_get_an_app_url() {
    let server = Server::start();
    let c = server.client();
    let a = c
        .create_vm(json!({"metadata": {"team": "ml", "run": 1}}))
        .await;
    let b = c.create_vm(json!({"metadata": {"team": "web"}})).await;
    let listed = c
        .get("/v1/sessions/sandboxes?metadata=%7B%22team%22%3A%22ml%22%7D")
        .await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let ids: Vec<&str> = listed
        .body
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|v| v["vm_id"].as_str())
        .collect();
    assert_eq!(ids, [a["vm_id"].as_str().expect("a")]);
    let all = c.get("/v1/sessions/sandboxes?limit=1").await;
    assert_eq!(all.body.as_array().map(Vec::len), Some(1));
    assert_eq!(
        all.body[0]["vm_id"], b["vm_id"],
        "newest first: {:?}",
        all.body
    );
    for (query, field) in [("limit=0", "limit"), ("metadata=%5B1%5D", "metadata")] {
        let r = c.get(&format!("/v1/sessions/sandboxes?{query}")).await;
        assert_eq!(r.status, 422, "{query}: {:?}", r.body);
        assert!(r.body.to_string().contains(field));
    }
    let other = c.with_key(Some(&server.other_account_key()));
    assert_eq!(
        other.get("/v1/sessions/sandboxes").await.body,
        json!([]),
        "another account's VMs are not listed"
    );

    // The app URL: a private share made once, then the same share.
    let session = a["session_id"].as_str().expect("session");
    let first = c
        .get(&format!("/v1/sessions/app-url/{session}?port=8080"))
        .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["created"], true);
    assert_eq!(first.body["is_public"], false);
    assert!(first.body["token"].is_string());
    assert!(first.body["app_url"]
        .as_str()
        .is_some_and(|u| u.starts_with("http://")));
    let again = c
        .get(&format!("/v1/sessions/app-url/{session}?port=8080"))
        .await;
    assert_eq!(again.body["created"], false);
    assert_eq!(again.body["share_id"], first.body["share_id"]);
    assert!(again.body.get("token").is_none());
    assert_eq!(
        c.get(&format!("/v1/sessions/app-url/{session}?port=0"))
            .await
            .status,
        422
    );
    assert_eq!(
        other
            .get(&format!("/v1/sessions/app-url/{session}"))
            .await
            .status,
        404
    );
}

/// Every mutating call on each surface, each refused key and a key's
/// first use from an address are in the log, with actor, resource,
/// result, request id and address, and no secret; another account's
/// events are not visible; the log has no write route.
#[tokio::test]
async fn the_audit_log_records_calls_refusals_and_new_addresses() {
    let server = Server::start();
    let c = server.client();

    let vm = c.create_vm(json!({})).await;
    let vm_id = vm["vm_id"].as_str().expect("vm").to_owned();
    let vault = c.post("/v1/vaults", json!({"name": "audited"})).await;
    assert_eq!(vault.status, 200, "{:?}", vault.body);
    let vault_id = vault.body["vault_id"].as_str().expect("vault").to_owned();
    let secret_value = "s3cr3t-value-never-logged";
    let cred = c
        .post(
            &format!("/v1/vaults/{vault_id}/credentials"),
            json!({"name": "TOKEN", "value": secret_value}),
        )
        .await;
    assert!(cred.status < 300, "{:?}", cred.body);
    // A gateway call and a definitions call.
    let gw = c
        .post(
            &format!("/v1/accounts/{}/clusters", server.default_account_id()),
            json!({"clusterId": "audited", "cluster": {"displayName": "a", "fakeCluster": {}}}),
        )
        .await;
    assert_eq!(gw.status, 200, "{:?}", gw.body);
    assert_eq!(c.delete(&format!("/v1/vms/{vm_id}")).await.status, 200);
    // A refused key.
    assert_eq!(
        c.with_key(Some("pdk_not_a_key"))
            .post("/v1/vms", json!({}))
            .await
            .status,
        401
    );

    let page = c.get("/v1/audit/events?limit=200").await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    let items = page.body["items"].as_array().expect("items").clone();
    let types: Vec<&str> = items
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    for wanted in [
        "vms.create",
        "vms.delete",
        "vaults.create",
        "vaults.credentials.create",
        "gateway.clusters.create",
        "auth.new_address",
    ] {
        assert!(types.contains(&wanted), "{wanted} in {types:?}");
    }
    let created = items
        .iter()
        .find(|e| e["event_type"] == "vms.create")
        .expect("the create");
    assert_eq!(created["status"], "success");
    assert_eq!(created["vm_id"], vm_id.as_str());
    assert_eq!(created["actor_type"], "api_key");
    assert!(created["actor_id"]
        .as_str()
        .is_some_and(|k| k.starts_with("key_")));
    assert_eq!(created["user_email"], "admin@localhost");
    assert_eq!(created["source_address"], "127.0.0.1");
    assert!(created["request_id"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    assert_eq!(created["event_payload"]["method"], "POST");
    assert!(
        !page.body.to_string().contains(secret_value),
        "no secret in the log"
    );
    assert!(
        !page.body.to_string().contains(&server.key),
        "no key in the log"
    );
    // The refused key belongs to no account: it is not in this log.
    assert!(!types.contains(&"auth.failure"));

    // Filters, the cursor and one event.
    let deletes = c.get("/v1/audit/events?event_type=vms.delete").await;
    assert_eq!(deletes.body["items"].as_array().map(Vec::len), Some(1));
    let by_vm = c.get(&format!("/v1/audit/events?vm_id={vm_id}")).await;
    assert_eq!(by_vm.body["items"].as_array().map(Vec::len), Some(2));
    let first = c.get("/v1/audit/events?limit=2").await;
    let cursor = first.body["next_cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    let second = c
        .get(&format!("/v1/audit/events?limit=2&cursor={cursor}"))
        .await;
    let ids = |p: &serde_json::Value| -> Vec<String> {
        p["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(ids(&first.body)
        .iter()
        .all(|id| !ids(&second.body).contains(id)));
    let id = created["id"].as_str().expect("id");
    let one = c.get(&format!("/v1/audit/events/{id}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["event_type"], "vms.create");

    // Another account sees none of it; the log cannot be written.
    let other = c.with_key(Some(&server.other_account_key()));
    assert_eq!(
        other.get(&format!("/v1/audit/events/{id}")).await.status,
        404
    );
    assert_eq!(
        other
            .get("/v1/audit/events?event_type=vms.create")
            .await
            .body["items"],
        json!([])
    );
    assert_eq!(
        c.delete(&format!("/v1/audit/events/{id}")).await.status,
        405
    );
    for (query, field) in [
        ("limit=0", "limit"),
        ("status=meh", "status"),
        ("cursor=x", "cursor"),
        ("since=yesterday", "since"),
    ] {
        let r = c.get(&format!("/v1/audit/events?{query}")).await;
        assert_eq!(r.status, 422, "{query}: {:?}", r.body);
        assert!(r.body.to_string().contains(field), "{query}: {:?}", r.body);
    }

    let catalog = c.get("/v1/audit/catalog").await;
    assert_eq!(catalog.status, 200);
    let groups = catalog.body["catalog"].as_object().expect("catalog");
    for (group, event_type) in [
        ("vms", "vms.create"),
        ("auth", "auth.failure"),
        ("gateway", "gateway.environments.connect"),
        ("definitions", "definitions.environments.create"),
    ] {
        assert!(
            groups[group]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == event_type)),
            "{event_type} in {catalog:?}",
            catalog = catalog.body
        );
    }
}

/// A key that is known but no longer acts (expired) is refused, and the
/// refusal is in its account's log.
#[tokio::test]
async fn a_refused_key_of_the_account_is_in_its_log() {
    let server = Server::start();
    let c = server.client();
    use paddock_core::clock::Timestamp;
    let soon = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 1000).to_rfc3339();
    let made = c
        .post(
            "/v1/api-keys/",
            json!({"name": "brief", "expires_at": soon}),
        )
        .await;
    let key = made.body["key"].as_str().expect("key").to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        c.with_key(Some(&key))
            .post("/v1/vms", json!({}))
            .await
            .status,
        401
    );
    let page = c.get("/v1/audit/events?event_type=auth.failure").await;
    assert_eq!(page.status, 200);
    let items = page.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{:?}", page.body);
    assert_eq!(items[0]["status"], "denied");
    assert_eq!(items[0]["actor_id"], made.body["id"]);
    assert_eq!(items[0]["event_payload"]["http_status"], 401);
    assert!(!page.body.to_string().contains(&key));
}

/// Events are written behind the calls, in batches; a server stopped as
/// an operator stops it writes what it still held first.
#[tokio::test]
async fn audit_events_queued_at_shutdown_are_written() {
    let mut server = Server::start();
    let c = server.client();
    for n in 0..50 {
        let r = c
            .post("/v1/vaults", json!({"name": format!("burst-{n}")}))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    server.terminate();
    server.restart();
    let c = server.client();
    let page = c
        .get("/v1/audit/events?event_type=vaults.create&limit=200")
        .await;
    assert_eq!(
        page.body["items"].as_array().map(Vec::len),
        Some(50),
        "{:?}",
        page.body
    );
}
