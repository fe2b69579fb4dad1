//! The environment definitions surface over HTTP: every validation rule,
//! revisions and If-Match (with a race of writers), ErrorResponse and
//! x-request-id, dev tokens, and sandboxes launched from definitions on
//! the `local` and `container` providers with their lifecycle rules.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Reply, Server};
use serde_json::{json, Value};

/// The servers here need no sandbox network: definitions that block the
/// network need no rules where sandboxes get none, and local sandboxes
/// use the host's.
const CONFIG: &str =
    "[network]\nenabled = false\n[ssh]\nenabled = false\n[providers]\nlocal = true\n";

fn dev_token(server: &Server) -> String {
    let token = server.create_key(&["--dev-token"]);
    assert!(token.starts_with("fabro_dev_"), "{token}");
    token
}

/// A client of the surface, authenticating as its clients do.
struct Defs {
    c: Client,
    token: String,
}

impl Defs {
    fn new(server: &Server) -> Self {
        Self {
            c: server.client().with_key(None),
            token: dev_token(server),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.c
            .req(method, &format!("/api/v1{path}"))
            .bearer_auth(&self.token)
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Reply {
        let r = self.c.send(rb).await;
        // Every answer of this surface carries a request id; an error's
        // body repeats it.
        let id = r
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(id.len(), 36, "x-request-id on {} {}", r.status, r.body);
        if r.status >= 400 {
            assert_eq!(r.body["request_id"], id.as_str(), "{}", r.body);
            let first = &r.body["errors"][0];
            assert_eq!(first["status"], r.status.to_string(), "{}", r.body);
            assert!(
                first["title"].is_string() && first["detail"].is_string(),
                "{}",
                r.body
            );
        }
        r
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.req(reqwest::Method::POST, path).json(&body))
            .await
    }

    async fn put(&self, path: &str, if_match: Option<&str>, body: Value) -> Reply {
        let mut rb = self.req(reqwest::Method::PUT, path).json(&body);
        if let Some(m) = if_match {
            rb = rb.header("If-Match", m);
        }
        self.send(rb).await
    }

    async fn delete(&self, path: &str, if_match: Option<&str>) -> Reply {
        let mut rb = self.req(reqwest::Method::DELETE, path);
        if let Some(m) = if_match {
            rb = rb.header("If-Match", m);
        }
        self.send(rb).await
    }

    /// Creates definition `id` from `body`, which must succeed.
    async fn define(&self, id: &str, body: Value) {
        let r = self.post("/environments", with_id(id, body)).await;
        assert_eq!(r.status, 201, "{id}: {}", r.body);
    }

    async fn exec(&self, sandbox: &str, command: &str) -> Value {
        let r = self
            .post(
                &format!("/sandboxes/{sandbox}/exec"),
                json!({"command": command}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    /// Waits until the sandbox is in `state`.
    async fn wait_state(&self, sandbox: &str, state: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let r = self.get(&format!("/sandboxes/{sandbox}")).await;
            assert_eq!(r.status, 200, "{}", r.body);
            if r.body["state"] == state {
                return r.body;
            }
            assert!(Instant::now() < deadline, "never {state}: {}", r.body);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn etag(r: &Reply) -> String {
    r.headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("an ETag")
        .to_owned()
}

/// A valid definition body for `provider`.
fn body(provider: &str) -> Value {
    json!({
        "provider": provider,
        "image": {"docker": null, "dockerfile": null},
        "resources": {"cpu": 1, "memory": "256Mi", "disk": null},
        "network": {"mode": "allow_all", "allow": []},
        "lifecycle": {"preserve": false, "stop_on_terminal": false, "auto_stop": null},
        "labels": {"team": "infra"},
        "volumes": [],
        "env": {"GREETING": "hello"}
    })
}

fn with_id(id: &str, mut b: Value) -> Value {
    b["id"] = json!(id);
    b
}

/// A case of the validation table: a valid `provider` body with one field
/// made wrong, the status it gets and the field its error names.
fn bad<'a>(provider: &str, pointer: &str, value: Value, field: &'a str) -> (Value, u16, &'a str) {
    (
        with_id("x", set(body(provider), pointer, value)),
        422,
        field,
    )
}

/// `b` with the field at `pointer` set (added when missing).
fn set(mut b: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    b.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("an object")
        .insert(key.to_owned(), value);
    b
}

#[tokio::test(flavor = "current_thread")]
async fn definitions_validate_and_keep_stable_revisions() {
    let mut server = Server::start_with_config(CONFIG);
    server.allow_local();
    let d = Defs::new(&server);

    // Create: 201, the revision in the body and as a quoted ETag.
    let r = d
        .post("/environments", with_id("web", body("container")))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let rev = r.body["revision"].as_str().expect("revision").to_owned();
    assert_eq!(rev.len(), 64);
    assert_eq!(etag(&r), format!("\"{rev}\""));
    assert_eq!(r.body["network"]["mode"], "allow_all");
    let r = d.get("/environments/web").await;
    assert_eq!((r.status, etag(&r)), (200, format!("\"{rev}\"")));

    // The same content in another key order has the same revision.
    let reordered: Value = serde_json::from_str(
        r#"{"env":{"GREETING":"hello"},"volumes":[],"labels":{"team":"infra"},
        "lifecycle":{"auto_stop":null,"stop_on_terminal":false,"preserve":false},
        "network":{"allow":[],"mode":"allow_all"},"resources":{"disk":null,"memory":"256Mi","cpu":1},
        "image":{"dockerfile":null,"docker":null},"provider":"container","id":"web2"}"#,
    )
    .expect("json");
    let r2 = d.post("/environments", reordered).await;
    assert_eq!(r2.status, 201, "{}", r2.body);
    let r = d.delete("/environments/web2", Some(&etag(&r2))).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r3 = d
        .post("/environments", with_id("web2", body("container")))
        .await;
    assert_eq!(r3.body["revision"], r2.body["revision"]);

    // A body missing settings names every one of them at once.
    let r = d
        .post(
            "/environments",
            json!({"id": "bare", "network": {}, "lifecycle": {"preserve": false}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let details: Vec<&str> = r.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect();
    for field in [
        "provider",
        "image",
        "resources",
        "labels",
        "volumes",
        "env",
        "network.allow",
        "lifecycle.stop_on_terminal",
    ] {
        assert!(
            details.contains(&format!("{field}: is required").as_str()),
            "{field}: {details:?}"
        );
    }
    assert_eq!(details.len(), 8, "{details:?}");
    // The README's minimal body is a definition.
    let r = d
        .post(
            "/environments",
            json!({"id": "minimal", "provider": "container",
                   "image": {"docker": null, "dockerfile": null},
                   "resources": {"cpu": 1, "memory": "512Mi"},
                   "network": {"allow": []},
                   "lifecycle": {"preserve": false, "stop_on_terminal": false},
                   "labels": {}, "volumes": [], "env": {}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = d
        .send(
            d.req(reqwest::Method::DELETE, "/environments/minimal")
                .header("If-Match", r.body["revision"].as_str().unwrap_or_default()),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);

    // Every rule, each with its status and the field it names.
    let inline =
        |text: &str| json!({"docker": null, "dockerfile": {"type": "inline", "value": text}});
    let volume = |v: Value| json!([v]);
    let cases: Vec<(Value, u16, &str)> = vec![
        (with_id("Bad_Id", body("container")), 400, "id"),
        (with_id(&"a".repeat(64), body("container")), 400, "id"),
        (body("container"), 400, "id"),
        bad("container", "/provider", json!("kubernetes"), "provider"),
        bad(
            "docker",
            "/image/docker",
            json!("::not a ref"),
            "image.docker",
        ),
        bad(
            "docker",
            "/image",
            json!({"docker": null, "dockerfile": null}),
            "image",
        ),
        bad(
            "docker",
            "/image",
            json!({"docker": "busybox", "dockerfile": inline("FROM busybox")["dockerfile"]}),
            "image",
        ),
        bad(
            "container",
            "/image/dockerfile",
            json!({"type": "path", "value": "./Dockerfile"}),
            "image.dockerfile.type",
        ),
        bad(
            "container",
            "/image",
            inline("./Dockerfile"),
            "image.dockerfile.value",
        ),
        bad(
            "container",
            "/image",
            inline("FROM busybox\nFROBNICATE x\n"),
            "image.dockerfile.value",
        ),
        bad("container", "/resources/cpu", json!(0), "resources.cpu"),
        bad(
            "container",
            "/resources/cpu",
            json!("lots"),
            "resources.cpu",
        ),
        bad(
            "container",
            "/resources/memory",
            json!("12Q"),
            "resources.memory",
        ),
        bad(
            "container",
            "/resources/disk",
            json!("-1Gi"),
            "resources.disk",
        ),
        bad(
            "container",
            "/network",
            json!({"allow": ["not a host!"]}),
            "network.allow[0]",
        ),
        bad(
            "container",
            "/network",
            json!({"mode": "allow_all", "allow": ["10.0.0.0/8"]}),
            "network.allow",
        ),
        bad(
            "container",
            "/network",
            json!({"mode": "cidr_allow_list", "allow": []}),
            "network.allow",
        ),
        bad("local", "/network", json!({"allow": []}), "network"),
        bad(
            "docker",
            "/network",
            json!({"allow": ["10.0.0.0/8"]}),
            "network",
        ),
        bad(
            "container",
            "/lifecycle/auto_stop",
            json!("soon"),
            "lifecycle.auto_stop",
        ),
        bad(
            "container",
            "/lifecycle/auto_stop",
            json!("0s"),
            "lifecycle.auto_stop",
        ),
        bad(
            "container",
            "/volumes",
            volume(json!({"id": "vol_nothere", "mount_path": "/data"})),
            "volumes[0].id",
        ),
        bad(
            "container",
            "/volumes",
            volume(json!({"id": "v", "mount_path": "data"})),
            "volumes[0].mount_path",
        ),
        bad(
            "container",
            "/volumes",
            volume(json!({"id": "v", "mount_path": "/d", "subpath": "../up"})),
            "volumes[0].subpath",
        ),
        bad(
            "container",
            "/volumes",
            volume(json!({"id": "v", "mount_path": "/d", "subpath": "/abs"})),
            "volumes[0].subpath",
        ),
        bad(
            "local",
            "/volumes",
            volume(json!({"id": "v", "mount_path": "/d"})),
            "volumes",
        ),
        bad("container", "/labels", json!({"": "x"}), "labels."),
        bad("container", "/labels", json!({"a": 1}), "labels.a"),
        bad("container", "/env", json!({"1BAD": "x"}), "env.1BAD"),
        bad(
            "container",
            "/env",
            json!({"HOME_COPY": "{{ env.HOME }}"}),
            "env.HOME_COPY",
        ),
        bad("container", "/cwd", json!("relative"), "cwd"),
        bad("container", "/extra", json!(1), "extra"),
    ];
    for (b, status, field) in cases {
        let r = d.post("/environments", b.clone()).await;
        assert_eq!(r.status, status, "{b}: {}", r.body);
        let details: Vec<&str> = r.body["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["detail"].as_str())
            .collect();
        assert!(
            details.iter().any(|m| m.contains(field)),
            "{field} in {details:?}"
        );
    }
    // A body missing a required setting names it.
    let mut missing = with_id("x", body("container"));
    missing.as_object_mut().expect("object").remove("lifecycle");
    let r = d.post("/environments", missing).await;
    assert_eq!(r.status, 422);
    assert!(r.body.to_string().contains("lifecycle"), "{}", r.body);
    let r = d
        .send(
            d.req(reqwest::Method::POST, "/environments")
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_eq!(
        (r.status, r.body["errors"][0]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    // Nothing invalid was stored; the duplicate and the reserved id conflict.
    let r = d
        .post("/environments", with_id("web", body("container")))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = d
        .post("/environments", with_id("local", body("local")))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let list = d.get("/environments").await;
    let ids: Vec<&str> = list.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids, ["local", "web", "web2"]);
    let page = d.get("/environments?limit=1&offset=1").await;
    assert_eq!(page.body["data"][0]["id"], "web");
    assert_eq!(page.body["meta"]["has_more"], true);

    // Replace and delete need the current revision.
    let changed = set(body("container"), "/labels", json!({"team": "data"}));
    let r = d.put("/environments/web", None, changed.clone()).await;
    assert_eq!(r.status, 428, "{}", r.body);
    let r = d
        .put("/environments/web", Some("\"nonsense\""), changed.clone())
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let stale = format!("\"{}\"", "0".repeat(64));
    let r = d
        .put("/environments/web", Some(&stale), changed.clone())
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = d.delete("/environments/web", None).await;
    assert_eq!(r.status, 428, "{}", r.body);
    let r = d.delete("/environments/web", Some(&stale)).await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = d.get("/environments/web").await;
    assert_eq!(
        (r.body["revision"].as_str(), &r.body["labels"]["team"]),
        (Some(rev.as_str()), &json!("infra")),
        "nothing changed"
    );
    let r = d
        .put(
            "/environments/web",
            Some(&format!("\"{rev}\"")),
            set(changed.clone(), "/resources/memory", json!("1Gi")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new_rev = r.body["revision"].as_str().expect("revision").to_owned();
    assert_ne!(new_rev, rev);
    assert_eq!(etag(&r), format!("\"{new_rev}\""));
    // A bare revision works too; an invalid replacement changes nothing.
    let r = d
        .put(
            "/environments/web",
            Some(&new_rev),
            set(changed.clone(), "/resources/memory", json!("lots")),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = d
        .put("/environments/local", Some(&new_rev), body("local"))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = d
        .put("/environments/nothere", Some(&new_rev), body("local"))
        .await;
    assert_eq!(r.status, 404, "{}", r.body);

    // Another account sees none of it; no token is 401.
    let other = server.other_account_key();
    let o = server.client().with_key(None);
    let r = o
        .send(
            o.req(reqwest::Method::GET, "/api/v1/environments/web")
                .bearer_auth(&other),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = d.c.get("/api/v1/environments").await;
    assert_eq!(r.status, 401, "{}", r.body);

    // Revisions survive a restart unchanged.
    server.restart();
    let d = Defs {
        c: server.client().with_key(None),
        token: d.token,
    };
    let r = d.get("/environments/web").await;
    assert_eq!(
        (r.status, r.body["revision"].as_str()),
        (200, Some(new_rev.as_str()))
    );
    let r = d
        .delete("/environments/web", Some(&format!("\"{new_rev}\"")))
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(d.get("/environments/web").await.status, 404);
}

#[tokio::test(flavor = "current_thread")]
async fn of_racing_writers_exactly_one_wins() {
    let mut server = Server::start_with_config(CONFIG);
    server.allow_local();
    let d = Defs::new(&server);
    let r = d
        .post("/environments", with_id("race", body("container")))
        .await;
    let rev = etag(&r);
    let writers = (0..8).map(|i| {
        let b = set(
            body("container"),
            "/labels",
            json!({"writer": i.to_string()}),
        );
        d.put("/environments/race", Some(&rev), b)
    });
    let replies = futures::future::join_all(writers).await;
    let winners: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(replies.iter().all(|r| r.status == 200 || r.status == 409));
    let now = d.get("/environments/race").await;
    assert_eq!(now.body, winners[0].body);
}

#[tokio::test(flavor = "current_thread")]
async fn local_sandboxes_run_scrubbed_host_processes_and_resume_preserved_files() {
    let mut server = Server::start_full_env(
        &[
            ("OPENAI_API_KEY", "sk-must-not-leak"),
            ("GITHUB_TOKEN", "ghp-must-not-leak"),
            ("CI_SHARED_SECRET", "must-not-leak"),
            ("HARMLESS_SETTING", "visible"),
        ],
        CONFIG,
    );
    server.allow_local();
    let d = Defs::new(&server);
    let b = set(body("local"), "/lifecycle/preserve", json!(true));
    d.define("dev", b).await;

    let r = d
        .post(
            "/environments/dev/sandboxes",
            json!({"labels": {"run": "1"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.body["state"].as_str(), r.body["provider"].as_str()),
        (Some("running"), Some("local"))
    );
    assert_eq!(
        r.body["environment_revision"],
        d.get("/environments/dev").await.body["revision"]
    );
    assert_eq!(r.body["labels"], json!({"team": "infra", "run": "1"}));
    let sb = r.body["id"].as_str().expect("id").to_owned();
    // A local sandbox is a VM of the VM API too; it cannot be suspended
    // with its memory, and says why.
    let suspend = server
        .client()
        .post(&format!("/v1/vms/{sb}/suspend"), json!({}))
        .await;
    assert_eq!(suspend.status, 409, "{}", suspend.body);
    let why = suspend.body["detail"].as_str().unwrap_or_default();
    assert!(why.contains("on the host itself"), "{why}");

    let out = d.exec(&sb, "env; echo cwd=$(pwd)").await;
    let stdout = out["stdout"].as_str().expect("stdout");
    assert!(!stdout.contains("must-not-leak"), "{stdout}");
    assert!(!stdout.contains("PADDOCK_"), "{stdout}");
    assert!(stdout.contains("HARMLESS_SETTING=visible"), "{stdout}");
    assert!(stdout.contains("GREETING=hello"), "{stdout}");
    let cwd = stdout
        .lines()
        .find_map(|l| l.strip_prefix("cwd="))
        .expect("cwd")
        .to_owned();
    // Its working directory is outside the data dir, which it cannot
    // read, and it runs as an unprivileged user of its own.
    assert!(
        cwd.starts_with(paddock_runtime::container::DEFAULT_LOCAL_ROOT),
        "{cwd}"
    );
    let key = server.data_dir().join("admin.key");
    let out = d
        .exec(
            &sb,
            &format!(
                "id -u; cat {} 2>&1; ls {} 2>&1",
                key.display(),
                server.data_dir().display()
            ),
        )
        .await;
    let stdout = out["stdout"].as_str().expect("stdout");
    assert!(!stdout.starts_with("0\n"), "{stdout}");
    assert!(!stdout.contains(&server.key), "{stdout}");
    assert!(stdout.contains("Permission denied"), "{stdout}");
    let r = d
        .send(d.req(
            reqwest::Method::GET,
            &format!("/sandboxes/{sb}/files?path={}", key.display()),
        ))
        .await;
    assert!(r.status >= 400, "{} {}", r.status, r.body);
    assert!(!r.body.to_string().contains(&server.key), "{}", r.body);
    // It really is the host: its files are the host's.
    let out = d
        .exec(&sb, "echo kept > state.txt && cat /proc/1/comm")
        .await;
    assert_eq!(out["exit_code"], 0, "{out}");
    let r = d
        .send(d.req(
            reqwest::Method::GET,
            &format!("/sandboxes/{sb}/files?path={cwd}/state.txt"),
        ))
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, Some("kept\n")));
    // The record says where it works, and relative paths start there.
    let record = d.get(&format!("/sandboxes/{sb}")).await;
    assert_eq!(record.body["work_dir"], cwd.as_str(), "{}", record.body);
    let r = d
        .get(&format!("/sandboxes/{sb}/files?path=state.txt"))
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, Some("kept\n")));
    let r = d
        .send(
            d.req(
                reqwest::Method::PUT,
                &format!("/sandboxes/{sb}/files?path=sub/new.txt"),
            )
            .body("relative"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(d.exec(&sb, "cat sub/new.txt").await["stdout"], "relative");
    let r = d
        .get(&format!("/sandboxes/{sb}/files?path=../escape"))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);

    // Another account sees neither the sandbox nor its definition, and
    // may not launch on the local provider, which admits listed accounts
    // only.
    let other = Defs {
        c: server.client().with_key(None),
        token: server.other_account_key(),
    };
    assert_eq!(other.get("/environments/local").await.status, 404);
    let r = other
        .post("/environments", with_id("mine", body("local")))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = other.post("/environments/mine/sandboxes", json!({})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(other.get(&format!("/sandboxes/{sb}")).await.status, 404);
    let r = other
        .post(&format!("/sandboxes/{sb}/exec"), json!({"command": "true"}))
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(other.get("/environments/dev/sandboxes").await.status, 404);
    assert_eq!(other.get("/sandboxes").await.body["meta"]["total"], 0);

    // The sandbox outlives a server restart.
    server.restart();
    let d = Defs {
        c: server.client().with_key(None),
        token: d.token,
    };
    assert_eq!(d.exec(&sb, "cat state.txt").await["stdout"], "kept\n");

    // Stop keeps the working directory; start resumes on it.
    let r = d.post(&format!("/sandboxes/{sb}/stop"), json!({})).await;
    assert_eq!(r.body["state"], "stopped", "{}", r.body);
    let r = d
        .post(&format!("/sandboxes/{sb}/exec"), json!({"command": "true"}))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = d.post(&format!("/sandboxes/{sb}/start"), json!({})).await;
    assert_eq!(r.body["state"], "running", "{}", r.body);
    assert_eq!(d.exec(&sb, "cat state.txt").await["stdout"], "kept\n");

    // Listing, per definition and in all; deleting ends it for good.
    let r = d.get("/environments/dev/sandboxes").await;
    assert_eq!(r.body["data"][0]["id"], sb.as_str());
    assert_eq!(d.get("/sandboxes").await.body["meta"]["total"], 1);
    assert_eq!(
        d.get("/environments/local/sandboxes").await.body["meta"]["total"],
        0
    );
    // Lists page with limit and offset.
    let r = d.post("/environments/dev/sandboxes", json!({})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let second = r.body["id"].as_str().expect("id").to_owned();
    let page = d.get("/sandboxes?limit=1").await;
    assert_eq!(
        page.body["data"].as_array().map(Vec::len),
        Some(1),
        "{}",
        page.body
    );
    assert_eq!(page.body["meta"]["total"], 2);
    assert_eq!(page.body["meta"]["has_more"], true);
    let rest = d
        .get("/environments/dev/sandboxes?page[limit]=1&page[offset]=1")
        .await;
    assert_eq!(
        rest.body["data"].as_array().map(Vec::len),
        Some(1),
        "{}",
        rest.body
    );
    assert_eq!(rest.body["meta"]["has_more"], false);
    assert_ne!(rest.body["data"][0]["id"], page.body["data"][0]["id"]);
    assert_eq!(d.get("/sandboxes?limit=many").await.status, 400);
    let r = d
        .send(d.req(reqwest::Method::DELETE, &format!("/sandboxes/{second}")))
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = d
        .send(d.req(reqwest::Method::DELETE, &format!("/sandboxes/{sb}")))
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        d.get(&format!("/sandboxes/{sb}")).await.body["state"],
        "deleted"
    );
    assert!(
        !std::path::Path::new(&cwd).exists(),
        "the working directory is gone"
    );

    // Providers that cannot launch here say so.
    let daytona = set(
        body("daytona"),
        "/image/docker",
        json!("buildpack-deps:noble"),
    );
    d.define("remote", daytona).await;
    let r = d.post("/environments/remote/sandboxes", json!({})).await;
    assert_eq!(
        (r.status, r.body["errors"][0]["code"].as_str()),
        (409, Some("provider_unavailable")),
        "{}",
        r.body
    );
    let r = d.post("/environments/nothere/sandboxes", json!({})).await;
    assert_eq!(r.status, 404, "{}", r.body);
}

/// The CPU quota of the sandbox `id` on the host: (quota, period) in µs.
fn host_cpu_quota(server: &Server, id: &str) -> (u64, u64) {
    let instance = paddock_runtime::container::instance_id(&server.data_dir());
    let v1 = format!("/sys/fs/cgroup/cpu/paddock/{instance}/{id}");
    let v2 = format!("/sys/fs/cgroup/paddock/{instance}/{id}/cpu.max");
    let read = |f: &str| std::fs::read_to_string(f).map(|s| s.trim().to_owned());
    if let Ok(quota) = read(&format!("{v1}/cpu.cfs_quota_us")) {
        let period = read(&format!("{v1}/cpu.cfs_period_us")).expect("period");
        return (
            quota.parse().expect("quota"),
            period.parse().expect("period"),
        );
    }
    let max = read(&v2).expect("cpu.max");
    let (quota, period) = max.split_once(' ').expect("quota period");
    (
        quota.parse().expect("quota"),
        period.parse().expect("period"),
    )
}

/// `resources.cpu: "500m"` is half of one CPU's time, not a whole CPU, on
/// every provider with a CPU quota (container and local here; docker's
/// NanoCpus in its own test).
#[tokio::test]
async fn fractional_cpus_are_a_quota() {
    let mut server = Server::start_with_config(CONFIG);
    server.allow_local();
    let d = Defs::new(&server);
    for provider in ["container", "local"] {
        let b = set(body(provider), "/resources/cpu", json!("500m"));
        d.define(&format!("half-{provider}"), b).await;
        let r = d
            .post(
                &format!("/environments/half-{provider}/sandboxes"),
                json!({}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["resources"]["cpu"], 0.5, "{}", r.body);
        let sb = r.body["id"].as_str().expect("id").to_owned();
        let (quota, period) = host_cpu_quota(&server, &sb);
        assert_eq!(quota * 2, period, "{provider}: {quota}/{period}");
        let b = set(body(provider), "/resources/cpu", json!(1.5));
        d.define(&format!("more-{provider}"), b).await;
        let r = d
            .post(
                &format!("/environments/more-{provider}/sandboxes"),
                json!({}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let sb = r.body["id"].as_str().expect("id").to_owned();
        let (quota, period) = host_cpu_quota(&server, &sb);
        assert_eq!(quota * 2, period * 3, "{provider}: {quota}/{period}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn container_sandboxes_stop_on_terminal_and_idle_and_discard_unless_preserved() {
    let mut server = Server::start_with_config(CONFIG);
    server.allow_local();
    let d = Defs::new(&server);
    let c = server.client();
    let vol = c
        .post(
            "/v1/volumes",
            json!({"name": "shared", "quota_bytes": 64u64 << 20}),
        )
        .await;
    assert_eq!(vol.status, 200, "{}", vol.body);
    let vol = vol.body["id"].as_str().expect("id").to_owned();

    // stop_on_terminal: the main command's end stops the sandbox.
    let b = set(
        body("container"),
        "/lifecycle/stop_on_terminal",
        json!(true),
    );
    let b = set(b, "/network", json!({"allow": []}));
    d.define("job", b).await;
    let r = d
        .post(
            "/environments/job/sandboxes",
            json!({"command": "echo $GREETING from main; sleep 0.5"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["provider"], "container");
    let sb = r.body["id"].as_str().expect("id").to_owned();
    let done = d.wait_state(&sb, "stopped", Duration::from_secs(20)).await;
    assert_eq!(done["command"]["exit_code"], 0, "{done}");
    assert_eq!(done["command"]["stdout"], "hello from main\n");
    assert_eq!(done["state_reason"], "stopped when its main command ended");

    // auto_stop: idle that long, it stops; use keeps it running.
    let b = set(body("container"), "/lifecycle/auto_stop", json!("2s"));
    d.define("idle", b).await;
    let r = d.post("/environments/idle/sandboxes", json!({})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sb = r.body["id"].as_str().expect("id").to_owned();
    let busy_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < busy_until {
        d.exec(&sb, "true").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        d.get(&format!("/sandboxes/{sb}")).await.body["state"],
        "running"
    );
    let idle = d.wait_state(&sb, "stopped", Duration::from_secs(15)).await;
    assert_eq!(
        idle["state_reason"],
        "stopped after its auto_stop idle time"
    );
    // A long main command is no use: nobody touching the sandbox, it
    // stops all the same.
    let r = d
        .post(
            "/environments/idle/sandboxes",
            json!({"command": "sleep 600"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sb = r.body["id"].as_str().expect("id").to_owned();
    let idle = d.wait_state(&sb, "stopped", Duration::from_secs(15)).await;
    assert_eq!(
        idle["state_reason"], "stopped after its auto_stop idle time",
        "{idle}"
    );
    // The stop killed it: exited 137, as a Docker engine reports it.
    assert_eq!(
        (
            idle["command"]["state"].as_str(),
            idle["command"]["exit_code"].as_i64()
        ),
        (Some("exited"), Some(137)),
        "{idle}"
    );

    // Without preserve a restart begins from the image again; with it the
    // files stay. The volume's subpath is the same directory either way.
    for preserve in [false, true] {
        let id = format!("keep-{preserve}");
        let b = set(body("container"), "/lifecycle/preserve", json!(preserve));
        let b = set(b, "/resources/disk", json!("96Mi"));
        let b = set(
            b,
            "/volumes",
            json!([{"id": vol, "mount_path": "/work", "subpath": "projects/a"}]),
        );
        d.define(&id, b).await;
        let r = d
            .post(&format!("/environments/{id}/sandboxes"), json!({}))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let sb = r.body["id"].as_str().expect("id").to_owned();
        let out = d
            .exec(&sb, &format!("echo {preserve} > /root/state && echo {preserve} >> /work/log && cat /work/log"))
            .await;
        assert_eq!(out["exit_code"], 0, "{out}");
        assert_eq!(
            d.post(&format!("/sandboxes/{sb}/stop"), json!({}))
                .await
                .body["state"],
            "stopped"
        );
        assert_eq!(
            d.post(&format!("/sandboxes/{sb}/start"), json!({}))
                .await
                .body["state"],
            "running"
        );
        // `resources.disk` is the size of its writable layer, kept across
        // the restart.
        let out = d
            .exec(&sb, "df -m / | awk 'NR==2 {print $2}'; dd if=/dev/zero of=/big bs=1M count=150 2>&1 | grep -o 'No space left'")
            .await;
        let stdout = out["stdout"].as_str().expect("stdout");
        let size: u32 = stdout
            .lines()
            .next()
            .and_then(|l| l.parse().ok())
            .expect("df");
        assert!((60..=96).contains(&size), "{out}");
        assert!(stdout.contains("No space left"), "{out}");
        d.exec(&sb, "rm -f /big").await;
        let out = d.exec(&sb, "cat /root/state; cat /work/log").await;
        let expected = if preserve {
            "true\nfalse\ntrue\n"
        } else {
            "false\n"
        };
        assert_eq!(out["stdout"], expected, "preserve={preserve}: {out}");
        let r = d
            .send(d.req(
                reqwest::Method::DELETE,
                &format!("/environments/{id}/sandboxes/{sb}"),
            ))
            .await;
        assert_eq!(r.status, 204, "{}", r.body);
    }
    // The subpath is a directory of the volume, seen from a plain VM too.
    let vm = c
        .create_vm(json!({"volumes": [{"volume_id": vol, "mount_path": "/v"}]}))
        .await;
    let (out, _, _) = c
        .exec(
            vm["vm_id"].as_str().expect("vm_id"),
            "cat /v/projects/a/log",
        )
        .await;
    assert_eq!(out, "false\ntrue\n");

    // The main command runs as a job of the sandbox: what it printed is
    // saved as it comes, and a server that crashes and starts again
    // attaches to it, missing nothing, and stops the sandbox at its end.
    let r = d
        .post(
            "/environments/job/sandboxes",
            json!({"command": "echo before the crash; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo after the crash; exit 3"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sb = r.body["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.get(&format!("/sandboxes/{sb}")).await.body["command"]["stdout"] != "before the crash\n"
    {
        assert!(Instant::now() < deadline, "the output was never saved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.restart();
    let d = Defs::new(&server);
    let after = d.get(&format!("/sandboxes/{sb}")).await.body;
    assert_eq!(
        (
            after["command"]["state"].as_str(),
            after["command"]["stdout"].as_str()
        ),
        (Some("running"), Some("before the crash\n")),
        "{after}"
    );
    d.exec(&sb, "touch /tmp/go").await;
    let done = d.wait_state(&sb, "stopped", Duration::from_secs(20)).await;
    assert_eq!(
        (
            done["command"]["state"].as_str(),
            done["command"]["exit_code"].as_i64(),
            done["command"]["stdout"].as_str()
        ),
        (
            Some("exited"),
            Some(3),
            Some("before the crash\nafter the crash\n")
        ),
        "{done}"
    );
    assert_eq!(done["state_reason"], "stopped when its main command ended");
}

#[tokio::test(flavor = "current_thread")]
async fn docker_sandboxes_run_in_a_real_engine() {
    let mut engine = common::docker::DockerEngine::start();
    let root = common::registry::busybox_base()
        .symlink("bin/mkdir", "busybox")
        .symlink("bin/env", "busybox")
        .bytes();
    engine.import(&root, "paddock-test/busybox:1");
    let mut server = Server::start_with_config(&format!("{CONFIG}docker = {:?}\n", engine.host()));
    server.allow_local();
    let d = Defs::new(&server);
    let vol = server
        .client()
        .post(
            "/v1/volumes",
            json!({"name": "cache", "quota_bytes": 64u64 << 20}),
        )
        .await;
    assert_eq!(vol.status, 200, "{}", vol.body);
    let vol = vol.body["id"].as_str().expect("id").to_owned();

    let b = set(
        body("docker"),
        "/image/docker",
        json!("paddock-test/busybox:1"),
    );
    let b = set(b, "/network", json!({"allow": []}));
    let b = set(b, "/lifecycle/preserve", json!(true));
    let b = set(b, "/resources/cpu", json!("500m"));
    let with_volume = set(
        b.clone(),
        "/volumes",
        json!([{"id": vol, "mount_path": "/cache", "subpath": "engine"}]),
    );
    d.define("engine", with_volume).await;
    let r = d.post("/environments/engine/sandboxes", json!({})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.body["state"].as_str(), r.body["provider"].as_str()),
        (Some("running"), Some("docker")),
        "{}",
        r.body
    );
    let sb = r.body["id"].as_str().expect("id").to_owned();
    let name = engine
        .containers()
        .into_iter()
        .find(|c| c.ends_with(&sb))
        .expect("the sandbox's container");
    // The engine holds the definition's limits and labels.
    let inspect = engine.cli(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.NetworkMode}} {{index .Config.Labels \"team\"}}",
        &name,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        format!("{} 500000000 none infra", 256u64 << 20)
    );

    // Commands run in the engine's container, with the definition's
    // environment and no network but loopback.
    let out = d
        .exec(
            &sb,
            "echo $GREETING; cat /proc/net/dev; echo oops >&2; exit 3",
        )
        .await;
    assert_eq!(out["exit_code"], 3, "{out}");
    assert_eq!(out["stderr"], "oops\n");
    let stdout = out["stdout"].as_str().expect("stdout");
    assert!(stdout.starts_with("hello\n"), "{stdout}");
    assert!(
        stdout.contains("lo:") && !stdout.contains("eth0"),
        "{stdout}"
    );
    let r = d
        .post(
            &format!("/sandboxes/{sb}/exec"),
            json!({"command": ["sleep", "30"], "timeout_seconds": 1}),
        )
        .await;
    assert_eq!(r.body["timed_out"], true, "{}", r.body);

    // Files go in and out through the engine's archives.
    let r = d
        .send(
            d.req(
                reqwest::Method::PUT,
                &format!("/sandboxes/{sb}/files?path=/work/sub/notes.txt"),
            )
            .body("from the api"),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["bytes"]),
        (200, &json!(12)),
        "{}",
        r.body
    );
    let r = d
        .get(&format!("/sandboxes/{sb}/files?path=/work/sub/notes.txt"))
        .await;
    assert_eq!(r.body, "from the api");
    let r = d.get(&format!("/sandboxes/{sb}/files?path=/work")).await;
    assert_eq!(r.body["entries"], json!(["sub"]));
    let r = d.get(&format!("/sandboxes/{sb}/files?path=/nothere")).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        d.exec(&sb, "cat /work/sub/notes.txt").await["stdout"],
        "from the api"
    );

    // The sandbox outlives a server restart.
    server.restart();
    let d = Defs {
        c: server.client().with_key(None),
        token: d.token,
    };
    assert_eq!(
        d.get(&format!("/sandboxes/{sb}")).await.body["state"],
        "running"
    );
    assert_eq!(
        d.exec(&sb, "cat /work/sub/notes.txt").await["stdout"],
        "from the api"
    );

    // The volume's subpath is mounted in the engine's container.
    let out = d
        .exec(&sb, "echo cached >> /cache/log && cat /cache/log")
        .await;
    assert_eq!(out["stdout"], "cached\n", "{out}");

    // A preserving stop keeps the container; start resumes it, with the
    // volume mounted again.
    assert_eq!(
        d.post(&format!("/sandboxes/{sb}/stop"), json!({}))
            .await
            .body["state"],
        "stopped"
    );
    assert!(engine.containers().iter().any(|c| c.ends_with(&sb)));
    assert_eq!(
        d.post(&format!("/sandboxes/{sb}/start"), json!({}))
            .await
            .body["state"],
        "running"
    );
    assert_eq!(
        d.exec(&sb, "cat /work/sub/notes.txt").await["stdout"],
        "from the api"
    );
    assert_eq!(d.exec(&sb, "cat /cache/log").await["stdout"], "cached\n");

    // The engine goes away under it: the sandbox stops (it is not
    // failed, though the engine cannot be asked to tidy up), keeps its
    // container, and starts again once the engine is back.
    engine.stop();
    let stopped = d.wait_state(&sb, "stopped", Duration::from_secs(30)).await;
    engine.start_again();
    assert!(
        stopped["state_reason"]
            .as_str()
            .is_some_and(|r| r.contains("start resumes it")),
        "{stopped}"
    );
    let r = d.post(&format!("/sandboxes/{sb}/start"), json!({})).await;
    assert_eq!(r.body["state"], "running", "{}", r.body);
    assert_eq!(
        d.exec(&sb, "cat /work/sub/notes.txt").await["stdout"],
        "from the api"
    );
    let r = d
        .send(d.req(reqwest::Method::DELETE, &format!("/sandboxes/{sb}")))
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(
        !engine.containers().iter().any(|c| c.ends_with(&sb)),
        "removed"
    );

    // Without preserve, a stop removes the container: the next start is
    // a fresh one from the image.
    let fresh = set(b.clone(), "/lifecycle/preserve", json!(false));
    d.define("fresh", fresh).await;
    let sb = d
        .post(
            "/environments/fresh/sandboxes",
            json!({"command": "echo printed; sleep 600"}),
        )
        .await
        .body["id"]
        .as_str()
        .expect("id")
        .to_owned();
    d.exec(&sb, "echo x > /root/mark").await;
    // Its output is read from the engine every moment: wait for it (what
    // a command prints in the last moment before a stop can be lost).
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.get(&format!("/sandboxes/{sb}")).await.body["command"]["stdout"] != "printed\n" {
        assert!(Instant::now() < deadline, "the output was never read");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The main command runs as a job of the engine's container: a server
    // that restarts attaches to it again.
    server.restart();
    let d = Defs::new(&server);
    let after = d.get(&format!("/sandboxes/{sb}")).await.body;
    assert_eq!(after["command"]["state"], "running", "{after}");
    let stopped = d.post(&format!("/sandboxes/{sb}/stop"), json!({})).await;
    // A stop kills the main command: exited 137, as on every provider.
    assert_eq!(
        (
            stopped.body["command"]["state"].as_str(),
            stopped.body["command"]["exit_code"].as_i64(),
            stopped.body["command"]["stdout"].as_str()
        ),
        (Some("exited"), Some(137), Some("printed\n")),
        "{}",
        stopped.body
    );
    assert!(!engine.containers().iter().any(|c| c.ends_with(&sb)));
    d.post(&format!("/sandboxes/{sb}/start"), json!({})).await;
    assert_eq!(d.exec(&sb, "cat /root/mark").await["exit_code"], 1);

    // A job's files are read a bounded piece at a time: output larger
    // than one read still arrives whole.
    let r = d
        .post(
            "/environments/fresh/sandboxes",
            json!({"command": "head -c 2500000 /dev/zero | tr '\\0' x"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let big = r.body["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = loop {
        let v = d.get(&format!("/sandboxes/{big}")).await.body;
        if v["command"]["state"] == "exited" {
            break v;
        }
        assert!(Instant::now() < deadline, "{}", v["command"]["state"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let out = done["command"]["stdout"].as_str().unwrap_or_default();
    assert_eq!(
        (
            out.len(),
            out.bytes().all(|b| b == b'x'),
            done["command"]["exit_code"].as_i64()
        ),
        (2_500_000, true, Some(0))
    );

    // With `allow_all` a docker sandbox has a network, but no port of the
    // host, listening on every address, answers it (as with paddock's
    // own sandboxes): the engine network is guarded.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("a listener on the host");
    let port = listener.local_addr().expect("port").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let open = set(
        b.clone(),
        "/network",
        json!({"mode": "allow_all", "allow": []}),
    );
    d.define("open", open).await;
    let r = d.post("/environments/open/sandboxes", json!({})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sb = r.body["id"].as_str().expect("id").to_owned();
    let out = d
        .exec(
            &sb,
            &format!(
                "gw=$(busybox ip route | busybox awk '/default/ {{print $3}}'); echo gw=$gw; \
                 busybox nc -w 2 $gw {port} </dev/null && echo REACHED; true"
            ),
        )
        .await;
    let stdout = out["stdout"].as_str().expect("stdout");
    let gateway = stdout
        .lines()
        .find_map(|l| l.strip_prefix("gw="))
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| panic!("the sandbox has a network: {out}"))
        .to_owned();
    assert!(!stdout.contains("REACHED"), "{out}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a connection reached the host"
    );
    // The same port answers on that address from the host itself.
    assert!(
        std::net::TcpStream::connect_timeout(
            &format!("{gateway}:{port}").parse().expect("address"),
            Duration::from_secs(2)
        )
        .is_ok(),
        "the host listens on {gateway}:{port}"
    );

    // An inline Dockerfile is built in the engine; a failing one is a 422.
    let built = set(
        b.clone(),
        "/image",
        json!({"docker": null, "dockerfile": {"type": "inline", "value": "FROM paddock-test/busybox:1\nRUN echo built > /built.txt\n"}}),
    );
    d.define("built", built).await;
    let r = d.post("/environments/built/sandboxes", json!({})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sb = r.body["id"].as_str().expect("id").to_owned();
    assert_eq!(d.exec(&sb, "cat /built.txt").await["stdout"], "built\n");
    let broken = set(
        b.clone(),
        "/image",
        json!({"docker": null, "dockerfile": {"type": "inline", "value": "FROM paddock-test/busybox:1\nRUN exit 7\n"}}),
    );
    d.define("broken", broken).await;
    let r = d.post("/environments/broken/sandboxes", json!({})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.to_string().contains("did not build"), "{}", r.body);

    // An image the engine lacks fails the launch with a reason.
    let missing = set(b, "/image/docker", json!("paddock-test/absent:1"));
    d.define("absent", missing).await;
    let r = d.post("/environments/absent/sandboxes", json!({})).await;
    assert_eq!(r.body["state"], "failed", "{}", r.body);
    assert!(
        r.body["state_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no image"),
        "{}",
        r.body
    );

    // `paddock purge` of the stopped server removes its containers and
    // its engine network from the engine.
    assert!(!engine.containers().is_empty());
    server.kill();
    let config = server.data_dir().with_file_name("paddock.toml");
    let purged = std::process::Command::new(common::bin())
        .args(["purge", "--data-dir"])
        .arg(server.data_dir())
        .arg("--config")
        .arg(&config)
        .envs(server.env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("paddock purge");
    assert!(purged.status.success(), "{purged:?}");
    assert_eq!(engine.containers(), Vec::<String>::new());
    let networks = engine.cli(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(
        !String::from_utf8_lossy(&networks.stdout).contains("paddock-"),
        "{networks:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn container_definitions_pull_and_build_their_images() {
    use common::registry::{busybox_base, config_json, gzip, push, Registry, GZIP};
    let reg = Registry::start();
    let image = reg.reference("test/base:v1");
    push(
        &image,
        vec![(gzip(&busybox_base().bytes()), GZIP)],
        config_json(&["PATH=/bin"], "/", ""),
    )
    .await;
    let latest = reg.reference("test/base:latest");
    push(
        &latest,
        vec![(gzip(&busybox_base().bytes()), GZIP)],
        config_json(&["PATH=/bin"], "/", ""),
    )
    .await;
    let mut server = Server::start_with_config(&format!("{}\n{CONFIG}", reg.paddock_config()));
    server.allow_local();
    let d = Defs::new(&server);

    let pulled = set(body("container"), "/image/docker", json!(image));
    d.define("pulled", pulled).await;
    let r = d.post("/environments/pulled/sandboxes", json!({})).await;
    assert_eq!(
        (r.status, r.body["image"].as_str()),
        (201, Some(image.as_str())),
        "{}",
        r.body
    );
    let sb = r.body["id"].as_str().expect("id").to_owned();
    assert!(d.exec(&sb, "cat /etc/passwd").await["stdout"]
        .as_str()
        .unwrap_or_default()
        .starts_with("root:"));

    let dockerfile = format!("FROM {image}\nRUN echo built > /built.txt\n");
    let built = set(
        body("container"),
        "/image",
        json!({"docker": null, "dockerfile": {"type": "inline", "value": dockerfile}}),
    );
    d.define("built", built).await;
    let r = d.post("/environments/built/sandboxes", json!({})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sb = r.body["id"].as_str().expect("id").to_owned();
    assert_eq!(d.exec(&sb, "cat /built.txt").await["stdout"], "built\n");
    // A second launch of the same revision reuses the built image.
    let r = d.post("/environments/built/sandboxes", json!({})).await;
    assert_eq!(
        r.body["image"],
        json!(format!(
            "paddock.local/definitions/built:{}",
            &r.body["environment_revision"].as_str().unwrap_or_default()[..16]
        ))
    );

    // Local bases need no registry: pull `:latest` once, stop the
    // registry, and build from it by another spelling, from scratch, and
    // from a configured variant.
    let held = set(body("container"), "/image/docker", json!(latest));
    d.define("held", held).await;
    assert_eq!(
        d.post("/environments/held/sandboxes", json!({}))
            .await
            .status,
        201
    );
    drop(reg);
    let untagged = latest.trim_end_matches(":latest");
    for (id, dockerfile, command, want) in [
        (
            "held-base",
            format!("FROM {untagged}\nRUN echo local > /local.txt\n"),
            "cat /local.txt",
            "local\n",
        ),
        (
            "on-variant",
            "FROM default\nENV WHERE=variant\nRUN echo $WHERE > /tmp/v.txt\n".to_owned(),
            "cat /tmp/v.txt; echo $WHERE; test -x /usr/bin/env && echo host-usr",
            "variant\nvariant\nhost-usr\n",
        ),
    ] {
        let b = set(
            body("container"),
            "/image",
            json!({"docker": null, "dockerfile": {"type": "inline", "value": dockerfile}}),
        );
        d.define(id, b).await;
        let r = d
            .post(&format!("/environments/{id}/sandboxes"), json!({}))
            .await;
        assert_eq!(r.status, 201, "{id}: {}", r.body);
        let sb = r.body["id"].as_str().expect("id").to_owned();
        assert_eq!(d.exec(&sb, command).await["stdout"], want, "{id}");
    }
    let scratch = set(
        body("container"),
        "/image",
        json!({"docker": null, "dockerfile": {"type": "inline",
               "value": "FROM scratch\nCOPY <<EOF /hello.txt\nfrom scratch\nEOF\n"}}),
    );
    d.define("scratch", scratch).await;
    let r = d.post("/environments/scratch/sandboxes", json!({})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sb = r.body["id"].as_str().expect("id").to_owned();
    let r = d
        .get(&format!("/sandboxes/{sb}/files?path=/hello.txt"))
        .await;
    assert_eq!(r.body, "from scratch\n", "{}", r.body);
}

#[tokio::test(flavor = "current_thread")]
async fn container_sandboxes_get_the_network_their_definition_allows() {
    let server = Server::start_with_config("[ssh]\nenabled = false\n");
    let d = Defs::new(&server);
    for (id, network, has_interface) in [
        ("blocked", json!({"allow": []}), false),
        ("open", json!({"mode": "allow_all", "allow": []}), true),
        (
            "listed",
            json!({"allow": ["10.200.0.0/16", "*.example.com"]}),
            true,
        ),
    ] {
        let b = set(body("container"), "/network", network);
        d.define(id, b).await;
        let r = d
            .post(&format!("/environments/{id}/sandboxes"), json!({}))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let sb = r.body["id"].as_str().expect("id").to_owned();
        let out = d.exec(&sb, "cat /proc/net/dev").await;
        let interfaces: Vec<String> = out["stdout"]
            .as_str()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_owned()))
            .filter(|n| n != "lo" && !n.contains('|'))
            .collect();
        assert_eq!(
            !interfaces.is_empty(),
            has_interface,
            "{id}: {interfaces:?}"
        );
        if id == "listed" {
            // The allow list is the sandbox's egress policy.
            let egress = server.client().get(&format!("/v1/egress/vm/{sb}")).await;
            assert_eq!(egress.status, 200, "{}", egress.body);
            assert_eq!(egress.body["default"], "deny", "{}", egress.body);
            assert_eq!(
                egress.body["allowed_cidrs"],
                json!(["10.200.0.0/16"]),
                "{}",
                egress.body
            );
            assert_eq!(
                egress.body["allowed_domains"],
                json!(["*.example.com"]),
                "{}",
                egress.body
            );
        }
    }
}

/// A command past the kernel's 128 KiB per argument runs through the
/// definitions' exec on paddock's containers and in a Docker engine, with
/// nothing of it left on the sandbox's disk.
#[tokio::test]
async fn long_commands_run_on_the_container_and_docker_providers() {
    let engine = common::docker::DockerEngine::start();
    let root = common::registry::busybox_base()
        .symlink("bin/mkdir", "busybox")
        .symlink("bin/rm", "busybox")
        .bytes();
    engine.import(&root, "paddock-test/busybox:1");
    let server = Server::start_with_config(&format!("{CONFIG}docker = {:?}\n", engine.host()));
    let d = Defs::new(&server);
    d.define("own", body("container")).await;
    d.define(
        "engine",
        set(
            body("docker"),
            "/image/docker",
            json!("paddock-test/busybox:1"),
        ),
    )
    .await;
    let script = format!(": {}\necho long $((6 * 7))\n", "x".repeat(300 * 1024));
    for definition in ["own", "engine"] {
        let r = d
            .post(&format!("/environments/{definition}/sandboxes"), json!({}))
            .await;
        assert_eq!(r.status, 201, "{definition}: {}", r.body);
        let sb = r.body["id"].as_str().expect("id").to_owned();
        let out = d.exec(&sb, &script).await;
        assert_eq!(out["stdout"], "long 42\n", "{definition}: {out}");
        let left = d.exec(&sb, "ls -a /tmp").await;
        let listing = left["stdout"].as_str().expect("stdout");
        assert!(
            !listing.contains("paddock-script"),
            "{definition}: {listing}"
        );
    }
}

/// Starting a stopped sandbox again is checked against the account's
/// capacity quota, as a create is, and refused in this surface's format.
#[tokio::test]
async fn starting_a_stopped_sandbox_past_a_quota_is_refused() {
    let server = Server::start_with_config(&format!("{CONFIG}[quotas]\nmax_vms = 1\n"));
    let d = Defs::new(&server);
    d.define(
        "q",
        set(body("container"), "/lifecycle/preserve", json!(true)),
    )
    .await;
    let first = d.post("/environments/q/sandboxes", json!({})).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let first = first.body["id"].as_str().expect("id").to_owned();
    let r = d.post(&format!("/sandboxes/{first}/stop"), json!({})).await;
    assert_eq!(r.body["state"], "stopped", "{}", r.body);
    let second = d.post("/environments/q/sandboxes", json!({})).await;
    assert_eq!(second.status, 201, "{}", second.body);

    let r = d
        .post(&format!("/sandboxes/{first}/start"), json!({}))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body["errors"][0]["code"], "forbidden", "{}", r.body);
    let detail = r.body["errors"][0]["detail"].as_str().expect("detail");
    assert!(detail.contains("quota max_vms"), "{detail}");
    let still = d.get(&format!("/sandboxes/{first}")).await;
    assert_eq!(still.body["state"], "stopped", "{}", still.body);
}

/// Sandboxes recorded on a provider the server no longer runs (its
/// configuration dropped `local`): after the restart a running one is
/// failed, not handed to another provider; a stopped one fails to start
/// with the reason; both can still be deleted.
#[tokio::test(flavor = "current_thread")]
async fn sandboxes_whose_provider_is_gone_fail_with_why_and_can_be_deleted() {
    let mut server = Server::start_with_config(CONFIG);
    server.allow_local();
    let d = Defs::new(&server);
    d.define("gone", body("local")).await;
    d.define(
        "kept",
        set(body("local"), "/lifecycle/preserve", json!(true)),
    )
    .await;
    let launch = |env: &'static str| {
        let d = &d;
        async move {
            let r = d
                .post(&format!("/environments/{env}/sandboxes"), json!({}))
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["id"].as_str().expect("id").to_owned()
        }
    };
    let running = launch("gone").await;
    let stopped = launch("kept").await;
    assert_eq!(d.exec(&running, "echo hi").await["stdout"], "hi\n");
    let r = d
        .post(&format!("/sandboxes/{stopped}/stop"), json!({}))
        .await;
    assert_eq!(r.body["state"], "stopped", "{}", r.body);

    server.edit_config(|toml| toml.replace("local = true", "local = false"));
    let d = Defs::new(&server);

    let failed = d
        .wait_state(&running, "failed", Duration::from_secs(10))
        .await;
    assert_eq!(failed["provider"], "local", "{failed}");
    let r = d
        .post(
            &format!("/sandboxes/{running}/exec"),
            json!({"command": "echo hi"}),
        )
        .await;
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.body);
    // Starting it fails, with the reason on the record.
    let r = d
        .post(&format!("/sandboxes/{stopped}/start"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let record = d.get(&format!("/sandboxes/{stopped}")).await.body;
    assert_eq!(record["state"], "failed", "{record}");
    assert_eq!(
        record["state_reason"], "the local provider is not configured on this server",
        "{record}"
    );
    for sb in [&running, &stopped] {
        let r = d
            .send(d.req(reqwest::Method::DELETE, &format!("/sandboxes/{sb}")))
            .await;
        assert!(r.status < 300, "{} {}", r.status, r.body);
    }
}
