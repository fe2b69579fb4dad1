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
