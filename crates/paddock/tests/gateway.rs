//! The account gateway over HTTP: clusters, node pools, environments
//! (connect, disconnect, snapshots, home volume), batch jobs and their
//! queue, listing, errors, and users' sharing.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::registry::{busybox_base, config_json, gzip, push, Registry, GZIP};
use common::{bin, Client, Reply, Server};
use serde_json::{json, Value};

struct Gw {
    c: Client,
    account: String,
}

impl Gw {
    fn url(&self, rest: &str) -> String {
        format!("/v1/accounts/{}/{rest}", self.account)
    }

    async fn get(&self, rest: &str) -> Reply {
        self.c.get(&self.url(rest)).await
    }

    async fn post(&self, rest: &str, body: Value) -> Reply {
        self.c.post(&self.url(rest), body).await
    }

    async fn patch(&self, rest: &str, body: Value) -> Reply {
        self.c
            .send(
                self.c
                    .req(reqwest::Method::PATCH, &self.url(rest))
                    .json(&body),
            )
            .await
    }

    async fn delete(&self, rest: &str) -> Reply {
        self.c.delete(&self.url(rest)).await
    }

    /// Polls `rest` until `field` is `want` (panics with the last body).
    async fn wait_for(&self, rest: &str, field: &str, want: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.get(rest).await;
            if r.body[field] == want {
                return r.body;
            }
            assert!(
                Instant::now() < deadline,
                "{rest}: {field} never became {want}: {}",
                r.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates an environment on `image` and waits until it is ready.
    async fn create_env(&self, id: &str, image: &str) -> Value {
        let r = self
            .post(
                "environments",
                json!({"environmentId": id, "environment": {"baseImageRef": image}}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        self.wait_for(&format!("environments/{id}"), "state", "DISCONNECTED", 60)
            .await
    }

    /// Connects an environment with `connection` and waits until it is;
    /// the sandbox's VM id.
    async fn connect_env(&self, id: &str, connection: Value) -> String {
        let r = self
            .post(
                &format!("environments/{id}:connect"),
                json!({ "connection": connection }),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let env = self
            .wait_for(&format!("environments/{id}"), "state", "CONNECTED", 60)
            .await;
        env["vmId"].as_str().expect("vmId").to_owned()
    }

    async fn exec(&self, vm: &str, command: &str) -> String {
        let (out, err, status) = self.c.exec(vm, command).await;
        assert_eq!(status["exit_code"], 0, "{command}: {err}");
        out
    }
}

/// A key for another user of the server's first account.
fn user_key(server: &Server, user: &str) -> String {
    let out = Command::new(bin())
        .args(["keys", "--data-dir"])
        .arg(server.data_dir())
        .args(["create", "--user", user])
        .output()
        .expect("paddock keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn setup() -> (Registry, Server, Gw, String) {
    setup_with(false).await
}

/// A registry with a busybox image and a server pulling from it. VM
/// networking is off unless a test needs it (SSH's `-L` reaches into a
/// VM's namespace): each networked server prepares a pool of namespaces
/// and veths, and the kernel tears those down slowly after the server
/// goes, long enough to slow the next test binary's networking.
async fn setup_with(network: bool) -> (Registry, Server, Gw, String) {
    serve_image(
        busybox_base().bytes(),
        "cpu_nodes = 2\nhome_size_gib = 1\nscratch_size_gib = 1",
        network,
    )
    .await
}

/// A registry holding `layer` as an image, and a server pulling from it
/// with `gateway` as its `[gateway]` config.
async fn serve_image(
    layer: Vec<u8>,
    gateway: &str,
    network: bool,
) -> (Registry, Server, Gw, String) {
    let reg = Registry::start();
    let image = reg.reference("test/dev:v1");
    push(
        &image,
        vec![(gzip(&layer), GZIP)],
        config_json(&["PATH=/bin"], "/", ""),
    )
    .await;
    let server = Server::start_with_config(&format!(
        "{}\n[gateway]\n{gateway}\n[network]\nenabled = {network}\n",
        reg.paddock_config()
    ));
    let gw = Gw {
        c: server.client(),
        account: account_id(&server).expect("the account id"),
    };
    (reg, server, gw, image)
}

/// Environments `one` and `none` connected to the GPU pool with one rank
/// and with none; their VMs.
async fn connect_one_and_no_gpu(gw: &Gw, image: &str) -> (String, String) {
    let mut vms = Vec::new();
    for (env, ranks) in [("one", 1), ("none", 0)] {
        gw.create_env(env, image).await;
        vms.push(
            gw.connect_env(env, json!({"nodePoolId": "host-gpu", "numRanks": ranks}))
                .await,
        );
    }
    (vms.remove(0), vms.remove(0))
}

fn account_id(server: &Server) -> Option<String> {
    let out = Command::new(bin())
        .args(["keys", "--data-dir"])
        .arg(server.data_dir())
        .args(["--json", "list"])
        .output()
        .ok()?;
    let keys: Value = serde_json::from_slice(&out.stdout).ok()?;
    keys[0]["account_id"].as_str().map(str::to_owned)
}

fn code(r: &Reply) -> i64 {
    r.body["code"].as_i64().unwrap_or(-1)
}

#[tokio::test]
async fn an_environment_keeps_what_was_installed_across_disconnects() {
    let (_reg, _server, gw, image) = setup().await;

    let created = gw
        .post(
            "environments",
            json!({"environmentId": "dev", "environment": {
                "displayName": "Dev", "baseImageRef": image, "annotations": {"team": "ml"}}}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(
        created.body["name"],
        format!("accounts/{}/environments/dev", gw.account)
    );
    assert_eq!(created.body["createdBy"], "admin@localhost");
    let env = gw
        .wait_for("environments/dev", "state", "DISCONNECTED", 60)
        .await;
    let pinned = env["imageRef"].as_str().expect("imageRef");
    assert!(pinned.contains("@sha256:"), "{env}");
    assert!(pinned.starts_with(image.trim_end_matches(":v1")), "{env}");

    let r = gw
        .post(
            "environments/dev:connect",
            json!({"connection": {"nodePoolId": "host-cpu", "numRanks": 1}, "vscodeVersion": "1.95.0"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({}));
    // A connect that ends within moments answers with its outcome.
    let env = gw.get("environments/dev").await.body;
    assert_eq!(env["state"], "CONNECTED", "{env}");
    assert_eq!(env["connection"]["zone"], "local", "{env}");
    assert_eq!(env["vscodeVersion"], "1.95.0");
    let vm = env["vmId"].as_str().expect("vmId").to_owned();

    gw.exec(
        &vm,
        "echo tool > /bin/installed-tool && echo notes > /root/notes",
    )
    .await;
    let r = gw.post("environments/dev:disconnect", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let env = gw
        .wait_for("environments/dev", "state", "DISCONNECTED", 60)
        .await;
    assert!(
        env["snapshotImageRef"]
            .as_str()
            .is_some_and(|s| s.contains("@sha256:")),
        "{env}"
    );
    assert!(env.get("connection").is_none(), "{env}");
    let vm_after = gw.c.get(&format!("/v1/vms/{vm}")).await;
    assert_ne!(vm_after.body["status"], "running", "{}", vm_after.body);

    // Disconnecting again: not connected.
    let r = gw.post("environments/dev:disconnect", json!({})).await;
    assert_eq!((r.status, code(&r)), (400, 9), "{}", r.body);

    let r = gw
        .post(
            "environments/dev:connect",
            json!({"connection": {"nodePoolId": "host-cpu", "useLocalStorage": true}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let env = gw
        .wait_for("environments/dev", "state", "CONNECTED", 60)
        .await;
    let vm = env["vmId"].as_str().expect("vmId").to_owned();
    assert_eq!(
        gw.exec(&vm, "cat /bin/installed-tool /root/notes").await,
        "tool\nnotes\n"
    );
    // Scratch at /tmp is its own mount.
    let mounts = gw.exec(&vm, "cat /proc/mounts").await;
    assert!(
        mounts.lines().any(|l| l.split(' ').nth(1) == Some("/tmp")),
        "{mounts}"
    );

    // Reconnecting with other parameters goes through RECONNECTING.
    gw.exec(&vm, "echo second > /bin/second").await;
    let r = gw
        .post(
            "environments/dev:connect",
            json!({"connection": {"nodePoolId": "host-cpu", "numRanks": 2}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let env = gw
        .wait_for("environments/dev", "state", "CONNECTED", 60)
        .await;
    assert_eq!(env["connection"]["numRanks"], 2, "{env}");
    let vm2 = env["vmId"].as_str().expect("vmId").to_owned();
    assert_ne!(vm2, vm);
    assert_eq!(gw.exec(&vm2, "cat /bin/second").await, "second\n");

    // The pool counts what the environment holds.
    let stats = gw.get("nodePools/host-cpu:getStats").await;
    assert_eq!(stats.body["environmentCount"], 1, "{}", stats.body);
    assert_eq!(stats.body["environmentRanks"], 2, "{}", stats.body);
    assert_eq!(stats.body["nodeCount"], 2, "{}", stats.body);
    // No room for one more rank.
    let r = gw
        .post(
            "environments",
            json!({"environmentId": "other", "environment": {"baseImageRef": image}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    gw.wait_for("environments/other", "state", "DISCONNECTED", 60)
        .await;
    let full = gw
        .post(
            "environments/other:connect",
            json!({"connection": {"nodePoolId": "host-cpu"}}),
        )
        .await;
    assert_eq!((full.status, code(&full)), (429, 8), "{}", full.body);

    // Snapshots are listed, the latest cannot go, an older one can.
    let snaps = gw.get("snapshots").await;
    assert_eq!(snaps.status, 200, "{}", snaps.body);
    let items = snaps.body["snapshots"]
        .as_array()
        .expect("snapshots")
        .clone();
    assert_eq!(items.len(), 2, "{}", snaps.body);
    let first = items[0]["name"]
        .as_str()
        .expect("name")
        .rsplit('/')
        .next()
        .expect("id")
        .to_owned();
    let latest = items[1]["name"]
        .as_str()
        .expect("name")
        .rsplit('/')
        .next()
        .expect("id")
        .to_owned();
    let got = gw.get(&format!("snapshots/{first}")).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["environmentId"], "dev");
    assert_eq!(got.body["state"], "READY");
    let r = gw.delete(&format!("snapshots/{latest}")).await;
    assert_eq!((r.status, code(&r)), (400, 9), "{}", r.body);
    let r = gw.delete(&format!("snapshots/{first}")).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Delete disconnects and frees everything.
    let r = gw.delete("environments/dev").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(60);
    while gw.get("environments/dev").await.status != 404 {
        assert!(Instant::now() < deadline, "never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let vm_gone = gw.c.get(&format!("/v1/vms/{vm2}")).await;
    assert_ne!(vm_gone.body["status"], "running", "{}", vm_gone.body);
    let vols = gw.c.get("/v1/volumes").await;
    assert!(!vols.body.to_string().contains("env-dev-"), "{}", vols.body);
    assert_eq!(gw.get("snapshots").await.body["snapshots"], json!([]));
}

#[tokio::test]
async fn batch_jobs_run_from_an_environment_queue_and_cancel() {
    let (_reg, _server, gw, image) = setup().await;
    gw.create_env("src", &image).await;
    let vm = gw
        .connect_env("src", json!({"nodePoolId": "host-cpu"}))
        .await;
    gw.exec(&vm, "echo from-env > /bin/marker").await;
    gw.post("environments/src:disconnect", json!({})).await;
    gw.wait_for("environments/src", "state", "DISCONNECTED", 60)
        .await;

    let r = gw
        .post(
            "batchJobs?batchJobId=reads-marker",
            json!({"displayName": "reads", "nodePoolId": "host-cpu", "environmentId": "src",
                   "envVars": {"GREETING": "hello"},
                   "shellExecutor": {"command": "cat /bin/marker; echo $GREETING; echo oops >&2"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let job = gw
        .wait_for("batchJobs/reads-marker", "state", "COMPLETED", 60)
        .await;
    assert!(job["endTime"].is_string(), "{job}");
    let logs = gw.get("batchJobs/reads-marker:getLogs").await;
    assert_eq!(logs.status, 200, "{}", logs.body);
    let text = logs.body["logs"].as_str().unwrap_or_default();
    assert!(
        text.contains("from-env") && text.contains("hello") && text.contains("oops"),
        "{}",
        logs.body
    );
    // Getters answer POST too, with their parameters in the body.
    let posted = gw
        .post("batchJobs/reads-marker:getLogs", json!({"pageSize": 1}))
        .await;
    assert_eq!(posted.status, 200, "{}", posted.body);
    assert_eq!(posted.body["entries"].as_array().map(Vec::len), Some(1));
    assert_ne!(posted.body["nextPageToken"], "", "{}", posted.body);

    // PATCH changes what may change, and refuses what a job runs.
    let r = gw
        .patch(
            "batchJobs/reads-marker",
            json!({"displayName": "renamed", "annotations": {"k": "v"}}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["displayName"].as_str()),
        (200, Some("renamed")),
        "{}",
        r.body
    );
    let r = gw
        .patch("batchJobs/reads-marker", json!({"imageRef": image}))
        .await;
    assert_eq!((r.status, code(&r)), (400, 3), "{}", r.body);

    // From one of the environment's snapshots (the one taken above).
    let snaps = gw.get("snapshots").await;
    let snap = snaps.body["snapshots"][0]["name"]
        .as_str()
        .expect("snapshot")
        .rsplit('/')
        .next()
        .expect("id")
        .to_owned();
    let r = gw
        .post(
            "batchJobs?batchJobId=from-snapshot",
            json!({"nodePoolId": "host-cpu", "environmentId": "src", "snapshotId": snap,
                   "shellExecutor": {"command": "cat /bin/marker"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let job = gw
        .wait_for("batchJobs/from-snapshot", "state", "COMPLETED", 60)
        .await;
    // The job says what it ran: the snapshot and the image below it.
    assert_eq!(job["snapshotId"], snap.as_str(), "{job}");
    assert!(
        job["imageRef"]
            .as_str()
            .is_some_and(|r| r.contains("test/dev")),
        "{job}"
    );
    assert_eq!(job["status"]["code"], "OK", "{job}");
    let logs = gw.get("batchJobs/from-snapshot:getLogs").await;
    assert_eq!(logs.body["logs"], "from-env\n", "{}", logs.body);

    // A notebook needs a runner the image does not have: FAILED, saying so.
    let r = gw
        .post(
            "batchJobs?batchJobId=notebook",
            json!({"nodePoolId": "host-cpu", "imageRef": image, "notebookExecutor": {"notebookFilename": "/nb.ipynb"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    gw.wait_for("batchJobs/notebook", "state", "FAILED", 60)
        .await;
    let logs = gw.get("batchJobs/notebook:getLogs").await;
    assert!(
        logs.body["logs"]
            .as_str()
            .is_some_and(|l| l.contains("no notebook runner")),
        "{}",
        logs.body
    );

    // A failing command ends FAILED with its code.
    let r = gw
        .post(
            "batchJobs?batchJobId=fails",
            json!({"nodePoolId": "host-cpu", "imageRef": image, "shellExecutor": {"command": "exit 3"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let job = gw.wait_for("batchJobs/fails", "state", "FAILED", 60).await;
    assert!(
        job["status"]["message"]
            .as_str()
            .is_some_and(|s| s.contains('3')),
        "{job}"
    );
    assert_eq!(job["status"]["code"], "UNKNOWN", "{job}");

    // Two ranks in all: a two-rank job holds them, the next one queues,
    // and starts when the first is cancelled.
    let r = gw
        .post(
            "batchJobs?batchJobId=big",
            json!({"nodePoolId": "host-cpu", "imageRef": image, "numRanks": 2, "shellExecutor": {"command": "sleep 300"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    gw.wait_for("batchJobs/big", "state", "RUNNING", 60).await;
    let r = gw
        .post(
            "batchJobs?batchJobId=waits",
            json!({"nodePoolId": "host-cpu", "imageRef": image, "shellExecutor": {"command": "echo ran"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["state"], "QUEUED", "{}", r.body);
    let stats = gw.get("nodePools/host-cpu:getStats").await;
    assert_eq!(stats.body["batchJobCount"]["RUNNING"], 1, "{}", stats.body);
    assert_eq!(stats.body["batchJobRanks"]["RUNNING"], 2, "{}", stats.body);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.get("batchJobs/waits").await.body["state"], "QUEUED");

    let r = gw.post("batchJobs/big:cancel", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    gw.wait_for("batchJobs/big", "state", "CANCELLED", 60).await;
    gw.wait_for("batchJobs/waits", "state", "COMPLETED", 60)
        .await;
    let r = gw.post("batchJobs/waits:cancel", json!({})).await;
    assert_eq!((r.status, code(&r)), (400, 9), "{}", r.body);

    // Too big for the pool ever: refused at once.
    let r = gw
        .post(
            "batchJobs",
            json!({"nodePoolId": "host-cpu", "imageRef": image, "numRanks": 3, "shellExecutor": {"command": "true"}}),
        )
        .await;
    assert_eq!((r.status, code(&r)), (429, 8), "{}", r.body);

    // Logs outlive the sandbox; delete removes the job.
    let list = gw.get("batchJobs?orderBy=createTime").await;
    assert_eq!(list.body["totalSize"], 6, "{}", list.body);
    let r = gw
        .post(
            "batchJobs:batchDelete",
            json!({"names": [format!("accounts/{}/batchJobs/fails", gw.account)]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(gw.get("batchJobs/fails").await.status, 404);
}

#[tokio::test]
async fn listing_pages_filters_orders_and_masks() {
    let (_reg, _server, gw, image) = setup().await;
    for i in 0..250 {
        let r = gw
            .post(
                "environments",
                json!({"environmentId": format!("e{i:03}"), "environment": {
                    "baseImageRef": image, "displayName": format!("n{:03}", 249 - i),
                    "annotations": {"parity": if i % 2 == 0 { "even" } else { "odd" }}}}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let r = gw
            .get(&format!("environments?pageSize=37&pageToken={token}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["totalSize"], 250);
        for e in r.body["environments"].as_array().expect("page") {
            seen.push(e["name"].as_str().expect("name").to_owned());
        }
        token = r.body["nextPageToken"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if token.is_empty() {
            break;
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen.len(), 250);
    assert_eq!(sorted, seen, "default order is by name, without repeats");

    let r = gw.get("environments?pageSize=500").await;
    assert_eq!(r.body["environments"].as_array().map(Vec::len), Some(200));

    let r = gw
        .get("environments?filter=annotations.parity%3D%22odd%22%20AND%20displayName%3E%22n240%22&orderBy=displayName%20desc&readMask=name,displayName")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let names: Vec<&str> = r.body["environments"]
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e["displayName"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["n248", "n246", "n244", "n242"], "{}", r.body);
    assert!(
        r.body["environments"][0].get("state").is_none(),
        "masked: {}",
        r.body
    );

    for bad in [
        "filter=nope%3D1",
        "orderBy=bogus",
        "pageToken=garbage",
        "readMask=bogus",
        "pageSize=-1",
    ] {
        let r = gw.get(&format!("environments?{bad}")).await;
        assert_eq!((r.status, code(&r)), (400, 3), "{bad}: {}", r.body);
    }

    let r = gw
        .patch(
            "environments/e001",
            json!({"displayName": "renamed", "annotations": {"a": "b"}, "state": "CONNECTED"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["displayName"], "renamed");
    assert_eq!(r.body["annotations"], json!({"a": "b"}));
    let r = gw.get("environments/e001?readMask=displayName").await;
    assert_eq!(r.body, json!({"displayName": "renamed"}));
}

#[tokio::test]
async fn errors_have_their_codes_and_users_see_only_what_is_theirs() {
    let (_reg, server, gw, image) = setup().await;
    let cases: Vec<(&str, Value, u16, i64, &str)> = vec![
        (
            "environments",
            json!({"environment": {"baseImageRef": image}}),
            400,
            3,
            "environmentId",
        ),
        (
            "environments",
            json!({"environmentId": "Bad_Id", "environment": {"baseImageRef": image}}),
            400,
            3,
            "environmentId",
        ),
        (
            "environments",
            json!({"environmentId": "x", "environment": {}}),
            400,
            3,
            "baseImageRef",
        ),
        (
            "environments",
            json!({"environmentId": "x", "environment": {"baseImageRef": image, "annotations": {"fireworks.ai/x": "1"}}}),
            400,
            3,
            "reserved",
        ),
        (
            "environments",
            json!({"environmentId": "x", "environment": {"baseImageRef": image, "annotations": {"-bad": "1"}}}),
            400,
            3,
            "annotations",
        ),
        (
            "environments",
            json!({"environmentId": "x", "environment": {"baseImageRef": image, "bogus": 1}}),
            400,
            3,
            "bogus",
        ),
        (
            "environments",
            json!({"environmentId": "x", "environment": {"baseImageRef": image, "displayName": "x".repeat(64)}}),
            400,
            3,
            "displayName",
        ),
        (
            "clusters",
            json!({"clusterId": "c", "cluster": {}}),
            400,
            3,
            "cluster",
        ),
        (
            "clusters",
            json!({"clusterId": "c", "cluster": {"eksCluster": {"awsAccountId": "12"}}}),
            400,
            3,
            "awsAccountId",
        ),
        (
            "nodePools",
            json!({"nodePoolId": "p", "nodePool": {"fakeNodePool": {}, "minNodeCount": 3, "maxNodeCount": 2}}),
            400,
            3,
            "maxNodeCount",
        ),
        (
            "batchJobs",
            json!({"nodePoolId": "host-cpu", "imageRef": image}),
            400,
            3,
            "Executor",
        ),
        (
            "batchJobs",
            json!({"nodePoolId": "host-cpu", "imageRef": image, "environmentId": "e", "shellExecutor": {"command": "x"}}),
            400,
            3,
            "imageRef",
        ),
        (
            "batchJobs",
            json!({"nodePoolId": "host-cpu", "snapshotId": "s", "imageRef": image, "shellExecutor": {"command": "x"}}),
            400,
            3,
            "snapshotId",
        ),
    ];
    for (path, body, status, c, needle) in cases {
        let r = gw.post(path, body.clone()).await;
        assert_eq!(
            (r.status, code(&r)),
            (status, c),
            "{path} {body}: {}",
            r.body
        );
        assert!(
            r.body["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle)),
            "{path} {body}: {}",
            r.body
        );
        assert!(r.body["details"].is_array(), "{}", r.body);
    }
    assert_eq!(
        gw.get("environments").await.body["totalSize"],
        0,
        "bad input changed nothing"
    );

    let r = gw
        .post(
            "environments",
            json!({"environmentId": "mine", "environment": {"baseImageRef": image}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let dup = gw
        .post(
            "environments",
            json!({"environmentId": "mine", "environment": {"baseImageRef": image}}),
        )
        .await;
    assert_eq!((dup.status, code(&dup)), (409, 6), "{}", dup.body);
    let r = gw.get("environments/nope").await;
    assert_eq!((r.status, code(&r)), (404, 5), "{}", r.body);
    let r = gw.c.with_key(None).get(&gw.url("environments")).await;
    assert_eq!((r.status, code(&r)), (401, 16), "{}", r.body);
    gw.wait_for("environments/mine", "state", "DISCONNECTED", 60)
        .await;
    let r = gw
        .post("environments/mine:connect", json!({"connection": {}}))
        .await;
    assert_eq!((r.status, code(&r)), (400, 3), "{}", r.body);
    let r = gw
        .post(
            "environments/mine:connect",
            json!({"connection": {"nodePoolId": "nope"}}),
        )
        .await;
    assert_eq!((r.status, code(&r)), (400, 3), "{}", r.body);
    let r = gw.post("environments/mine:explode", json!({})).await;
    assert_eq!((r.status, code(&r)), (404, 5), "{}", r.body);

    // An image that cannot be had: the environment says so and cannot
    // connect until its base image is fixed.
    let missing = image.replace("test/dev:v1", "test/missing:v1");
    let r = gw
        .post(
            "environments",
            json!({"environmentId": "broken", "environment": {"baseImageRef": missing}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let broken = gw
        .wait_for("environments/broken", "state", "DISCONNECTED", 60)
        .await;
    assert_eq!(broken["status"]["code"], "FAILED_PRECONDITION", "{broken}");
    assert_eq!(broken["imageRef"], "", "{broken}");
    let r = gw
        .post(
            "environments/broken:connect",
            json!({"connection": {"nodePoolId": "host-cpu"}}),
        )
        .await;
    assert_eq!((r.status, code(&r)), (400, 9), "{}", r.body);
    let r = gw
        .patch("environments/broken", json!({"baseImageRef": image}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let fixed = gw
        .wait_for("environments/broken", "state", "DISCONNECTED", 60)
        .await;
    assert!(
        fixed["imageRef"]
            .as_str()
            .is_some_and(|r| r.contains("@sha256:")),
        "{fixed}"
    );
    assert_eq!(fixed["status"]["code"], "OK", "{fixed}");
    // Once pinned, the base image is fixed.
    let r = gw
        .patch("environments/broken", json!({"baseImageRef": missing}))
        .await;
    assert_eq!((r.status, code(&r)), (400, 3), "{}", r.body);
    let r = gw.post("snapshots", json!({})).await;
    assert_eq!((r.status, code(&r)), (501, 12), "{}", r.body);

    // Another account: its key cannot name this account, nor see in.
    let other = gw.c.with_key(Some(&server.other_account_key()));
    let r = other.get(&gw.url("environments/mine")).await;
    assert_eq!((r.status, code(&r)), (404, 5), "{}", r.body);

    // Another user of the account: a private environment is not there; a
    // shared one is, but only its creator may unshare it.
    let bob = Gw {
        c: gw.c.with_key(Some(&user_key(&server, "bob@example.com"))),
        account: gw.account.clone(),
    };
    assert_eq!(bob.get("environments/mine").await.status, 404);
    assert_eq!(bob.get("environments").await.body["totalSize"], 0);
    assert_eq!(
        bob.post(
            "environments/mine:connect",
            json!({"connection": {"nodePoolId": "host-cpu"}})
        )
        .await
        .status,
        404
    );
    let r = gw.patch("environments/mine", json!({"shared": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = bob.get("environments/mine").await;
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert_eq!(seen.body["createdBy"], "admin@localhost");
    let r = bob
        .patch("environments/mine", json!({"shared": false}))
        .await;
    assert_eq!((r.status, code(&r)), (403, 7), "{}", r.body);
    let r = bob
        .post(
            "environments",
            json!({"environmentId": "bobs", "environment": {"baseImageRef": image}}),
        )
        .await;
    assert_eq!(r.body["createdBy"], "bob@example.com", "{}", r.body);
    assert_eq!(gw.get("environments/bobs").await.status, 404);
}

#[tokio::test]
async fn clusters_and_node_pools() {
    let (_reg, _server, gw, _image) = setup().await;
    let r = gw.get("clusters").await;
    assert_eq!(r.body["totalSize"], 1, "{}", r.body);
    assert_eq!(r.body["clusters"][0]["state"], "READY");

    let r = gw
        .post("clusters", json!({"clusterId": "fake", "cluster": {"displayName": "F", "fakeCluster": {"projectId": "p", "location": "l", "clusterName": "n"}}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["state"], "READY");
    let r = gw
        .post("clusters", json!({"clusterId": "eks", "cluster": {"eksCluster": {"awsAccountId": "123456789012", "region": "us-east-1", "clusterName": "prod"}}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["state"], "FAILED", "{}", r.body);
    assert!(
        r.body["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("AWS")),
        "{}",
        r.body
    );
    let r = gw.patch("clusters/fake", json!({"displayName": "G"})).await;
    assert_eq!(r.body["displayName"], "G", "{}", r.body);
    let r = gw.get("clusters/fake:getConnectionInfo").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Getters answer POST as well as GET; every refusal is a Status.
    let r = gw.post("clusters/fake:getConnectionInfo", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = gw.post("nodePools/host-cpu:getStats", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = gw.post("nodePools/host-cpu", json!({})).await;
    assert_eq!((r.status, code(&r)), (404, 5), "{}", r.body);
    let r =
        gw.c.send(gw.c.req(reqwest::Method::PUT, &gw.url("clusters/fake")))
            .await;
    assert_eq!((r.status, code(&r)), (405, 12), "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("PUT")),
        "{}",
        r.body
    );
    let r = gw.get("clusters?filter=state%3DFAILED").await;
    assert_eq!(r.body["totalSize"], 1, "{}", r.body);
    assert_eq!(gw.delete("clusters/eks").await.status, 200);
    assert_eq!(gw.get("clusters/eks").await.status, 404);
    // The built-in cluster exists since the account does.
    let host = gw.get("clusters/host").await;
    assert!(
        host.body["createTime"]
            .as_str()
            .is_some_and(|t| !t.starts_with("1970")),
        "{}",
        host.body
    );
    let r = gw.delete("clusters/host").await;
    assert_eq!((r.status, code(&r)), (400, 9), "{}", r.body);

    let r = gw
        .post("nodePools", json!({"nodePoolId": "cpu3", "nodePool": {"fakeNodePool": {"machineType": "n2-standard-4", "numNodes": 3}, "maxNodeCount": 4, "annotations": {"tier": "dev"}}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["state"], "READY");
    assert_eq!(r.body["clusterId"], "host", "{}", r.body);
    assert_eq!(r.body["nodePoolStats"]["nodeCount"], 3, "{}", r.body);
    assert_eq!(r.body["nodePoolStats"]["ranksPerNode"], 1, "{}", r.body);
    let r = gw
        .post("nodePools", json!({"nodePoolId": "gpus", "nodePool": {"fakeNodePool": {"machineType": "a2-highgpu-1g"}}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A pool names its cluster: an EKS pool needs an EKS cluster, a fake
    // pool runs on the host or a fake cluster.
    let r = gw
        .post("nodePools", json!({"nodePoolId": "eks", "nodePool": {"eksNodePool": {"instanceType": "p4d.24xlarge"}}}))
        .await;
    assert_eq!((r.status, code(&r)), (400, 3), "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("nodePool.clusterId")),
        "{}",
        r.body
    );
    let r = gw
        .post("clusters", json!({"clusterId": "aws", "cluster": {"eksCluster": {"awsAccountId": "123456789012", "region": "us-east-1", "clusterName": "prod"}}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = gw
        .post("nodePools", json!({"nodePoolId": "eks", "nodePool": {"clusterId": "aws", "eksNodePool": {"instanceType": "p4d.24xlarge"}}}))
        .await;
    assert_eq!(r.body["state"], "FAILED", "{}", r.body);
    assert_eq!(r.body["clusterId"], "aws", "{}", r.body);
    let r = gw
        .post("nodePools", json!({"nodePoolId": "onfake", "nodePool": {"clusterId": "fake", "fakeNodePool": {"machineType": "n2-standard-4"}}}))
        .await;
    assert_eq!(r.body["clusterId"], "fake", "{}", r.body);
    let r = gw
        .post("nodePools", json!({"nodePoolId": "nowhere", "nodePool": {"clusterId": "nope", "fakeNodePool": {"machineType": "n2-standard-4"}}}))
        .await;
    assert_eq!((r.status, code(&r)), (400, 3), "{}", r.body);
    let r = gw
        .patch("nodePools/onfake", json!({"clusterId": "host"}))
        .await;
    assert_eq!((r.status, code(&r)), (400, 3), "{}", r.body);
    // A cluster with pools stays until they go.
    let r = gw.delete("clusters/aws").await;
    assert_eq!((r.status, code(&r)), (400, 9), "{}", r.body);
    let r = gw
        .patch(
            "nodePools/cpu3",
            json!({"maxNodeCount": 5, "displayName": "three"}),
        )
        .await;
    assert_eq!(r.body["maxNodeCount"], 5, "{}", r.body);
    let r = gw.patch("nodePools/cpu3", json!({"minNodeCount": 9})).await;
    assert_eq!((r.status, code(&r)), (400, 3), "{}", r.body);
    let r = gw.get("nodePools").await;
    assert_eq!(
        r.body["totalSize"].as_i64().map(|n| n >= 4),
        Some(true),
        "{}",
        r.body
    );
    let r = gw.post("nodePools:batchDelete", json!({"names": [format!("accounts/{}/nodePools/eks", gw.account), format!("accounts/{}/nodePools/gpus", gw.account)]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(gw.get("nodePools/gpus").await.status, 404);
    assert_eq!(gw.delete("nodePools/cpu3").await.status, 200);
    assert_eq!(gw.delete("clusters/aws").await.status, 200);
}

#[tokio::test]
async fn a_connected_environment_survives_a_server_restart() {
    let (_reg, mut server, gw, image) = setup().await;
    gw.create_env("keep", &image).await;
    let vm = gw
        .connect_env("keep", json!({"nodePoolId": "host-cpu"}))
        .await;
    gw.exec(&vm, "echo kept > /root/kept").await;

    server.restart();
    let gw = Gw {
        c: server.client(),
        account: gw.account.clone(),
    };
    let env = gw
        .wait_for("environments/keep", "state", "CONNECTED", 30)
        .await;
    assert_eq!(env["vmId"], vm.as_str(), "{env}");
    assert_eq!(gw.exec(&vm, "cat /root/kept").await, "kept\n");
    gw.post("environments/keep:disconnect", json!({})).await;
    gw.wait_for("environments/keep", "state", "DISCONNECTED", 60)
        .await;
}

/// GPU passthrough's mechanics on a host without a GPU: the server is
/// pointed at a directory of stand-in device nodes (`/dev/null`'s numbers
/// under GPU names), so a connection with one rank must see exactly one of
/// them, working, and one with no ranks none. A real GPU's `nvidia-smi -L`
/// is checked on a GPU machine (see the closing notes).
#[tokio::test]
async fn a_gpu_pool_passes_exactly_its_ranks_devices() {
    let devs = tempfile::Builder::new()
        .prefix("pdkgpu")
        .tempdir_in("/tmp")
        .expect("tempdir");
    for name in ["nvidia0", "nvidia1", "nvidiactl"] {
        let ok = Command::new("mknod")
            .arg(devs.path().join(name))
            .args(["c", "1", "3"])
            .status()
            .expect("mknod");
        assert!(ok.success());
    }
    let (_reg, _server, gw, image) = serve_image(
        busybox_base().bytes(),
        &format!(
            "gpu_dev_dir = \"{}\"\nhome_size_gib = 1",
            devs.path().display()
        ),
        false,
    )
    .await;
    let pool = gw.get("nodePools/host-gpu:getStats").await;
    assert_eq!(pool.status, 200, "{}", pool.body);
    assert_eq!(pool.body["ranksPerNode"], 2, "{}", pool.body);

    let (one, none) = connect_one_and_no_gpu(&gw, &image).await;
    let vm = &one;
    let listed = gw.exec(vm, "ls /dev | grep nvidia | sort").await;
    assert_eq!(listed, "nvidia0\nnvidiactl\n");
    assert_eq!(
        gw.exec(vm, "echo hi > /dev/nvidia0 && echo $NVIDIA_VISIBLE_DEVICES")
            .await,
        "0\n"
    );
    let vm = &none;
    assert_eq!(gw.exec(vm, "ls /dev | grep -c nvidia || true").await, "0\n");

    // Both GPUs: one is held, so two more ranks do not fit now.
    gw.create_env("two", &image).await;
    let r = gw
        .post(
            "environments/two:connect",
            json!({"connection": {"nodePoolId": "host-gpu", "numRanks": 2}}),
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    let r = gw
        .post(
            "environments/two:connect",
            json!({"connection": {"nodePoolId": "host-gpu", "numRanks": 1}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let two = gw
        .wait_for("environments/two", "state", "CONNECTED", 60)
        .await;
    let listed = gw
        .exec(
            two["vmId"].as_str().expect("vm"),
            "ls /dev | grep nvidia | sort",
        )
        .await;
    assert_eq!(listed, "nvidia1\nnvidiactl\n", "the other GPU");
}

/// Serves `page` on port 8000 of `vm`'s own loopback, then reads it
/// through `ssh -L` into environment `env` through `server`'s SSH gateway.
async fn page_through_ssh_forward(
    gw: &Gw,
    server: &Server,
    key: &std::path::Path,
    env: &str,
    vm: &str,
    page: &str,
) -> String {
    gw.exec(
        vm,
        &format!("mkdir -p /www && echo {page} > /www/index.html && busybox httpd -p 127.0.0.1:8000 -h /www"),
    )
    .await;
    let local = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut tunnel = ssh_command(server, key)
        .arg("-N")
        .args(["-L", &format!("127.0.0.1:{local}:localhost:8000")])
        .arg(format!("{env}@127.0.0.1"))
        .spawn()
        .expect("ssh -L");
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        match reqwest::get(format!("http://127.0.0.1:{local}/")).await {
            Ok(r) if r.status().is_success() => break r.text().await.unwrap_or_default(),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("the forward never answered: {other:?}"),
        }
    };
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    page
}

/// The OpenSSH client, set to reach the gateway with `key` and nothing
/// else (no agent, no known_hosts, no prompts).
fn ssh_command(server: &Server, key: &std::path::Path) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-i")
        .arg(key)
        .args(["-p", &server.ssh_port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
        ]);
    c
}

/// Runs the OpenSSH client: `args` are options, then the command.
fn ssh(server: &Server, key: &std::path::Path, user: &str, args: &[&str]) -> std::process::Output {
    let split = args
        .iter()
        .position(|a| !a.starts_with('-'))
        .unwrap_or(args.len());
    let (options, command) = args.split_at(split);
    ssh_command(server, key)
        .args(options)
        .arg(format!("{user}@127.0.0.1"))
        .args(command)
        .output()
        .expect("ssh runs")
}

/// Runs the OpenSSH client with `args` (destination included), feeding it
/// `input` and then end of input.
fn ssh_with_input(
    server: &Server,
    key: &std::path::Path,
    args: &[&str],
    input: &[u8],
) -> std::process::Output {
    use std::io::Write;
    let mut child = ssh_command(server, key)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ssh");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("write to ssh");
    drop(stdin);
    child.wait_with_output().expect("ssh ends")
}

fn keypair(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let path = dir.join(name);
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen");
    assert!(ok.success());
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("public key");
    (path, public)
}

#[tokio::test]
async fn openssh_logs_in_through_the_gateway() {
    let (_reg, server, gw, image) = setup_with(true).await;
    let keys = tempfile::tempdir().expect("tempdir");
    let (mine, public) = keypair(keys.path(), "mine");
    let r =
        gw.c.post("/v1/ssh-keys", json!({"public_key": public}))
            .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // An RSA key is refused when registered, not at every login.
    let rsa = keys.path().join("rsa");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&rsa)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let rsa_public = std::fs::read_to_string(rsa.with_extension("pub")).expect("rsa.pub");
    let r =
        gw.c.post("/v1/ssh-keys", json!({"public_key": rsa_public}))
            .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.to_string().contains("ed25519"), "{}", r.body);

    gw.create_env("dev", &image).await;
    // Not connected: no login, and the user is told why.
    let out = ssh(&server, &mine, "dev", &["true"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DISCONNECTED; connect it first"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    gw.post(
        "environments/dev:connect",
        json!({"connection": {"nodePoolId": "host-cpu"}}),
    )
    .await;
    gw.wait_for("environments/dev", "state", "CONNECTED", 60)
        .await;
    // A command: stdout and stderr apart, its exit status returned.
    let out = ssh(
        &server,
        &mine,
        "dev",
        &["echo out; echo err >&2; hostname; exit 3"],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\nsandbox\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // The login is in the account's audit log, by the key's fingerprint.
    let logins = gw.c.get("/v1/audit/events?event_type=ssh.login").await;
    let first = &logins.body["items"][0];
    assert_eq!(first["status"], "success", "{}", logins.body);
    assert_eq!(first["resource_id"], "dev");
    assert!(first["actor_id"]
        .as_str()
        .is_some_and(|a| a.starts_with("ssh:SHA256:")));
    assert!(first["vm_id"]
        .as_str()
        .is_some_and(|v| v.starts_with("vm_")));
    // A command past the kernel's 128 KiB per argument: the client joins
    // its arguments (each under the limit on this side) into one.
    let (a, b) = ("x".repeat(100 * 1024), "y".repeat(100 * 1024));
    let out = ssh(&server, &mine, "dev", &[":", &a, &b, "; echo long-ran"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "long-ran\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Stdin streams into a command, to its end (how editors' remote
    // modes start their server: a script piped into a shell).
    let out = ssh_with_input(
        &server,
        &mine,
        &["dev@127.0.0.1", "sh"],
        b"echo script-ran\nhead -c 100000 /dev/zero | wc -c\nexit 5\n",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "script-ran\n100000\n");
    assert_eq!(out.status.code(), Some(5));
    // The end of the client's input is the end of the command's.
    let out = ssh_with_input(&server, &mine, &["dev@127.0.0.1", "wc -c"], b"four");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "4",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With a terminal (-tt), through a PTY.
    let out = ssh(&server, &mine, "dev", &["-tt", "tty && echo pty-ok"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/") && text.contains("pty-ok"),
        "{text}"
    );
    // An interactive shell reads what is typed.
    let out = ssh_with_input(
        &server,
        &mine,
        &["-tt", "dev@127.0.0.1"],
        b"echo typed-$((6*7))\nexit\n",
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("typed-42"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // `ssh -L` reaches a port on the sandbox's own loopback.
    let env = gw.get("environments/dev").await.body;
    let vm = env["vmId"].as_str().expect("vm");
    let page = page_through_ssh_forward(&gw, &server, &mine, "dev", vm, "forwarded-page").await;
    assert_eq!(page, "forwarded-page\n");

    // Another user's key does not reach a private environment; nor does
    // an unregistered key, nor a wrong environment name.
    let bob = Gw {
        c: gw.c.with_key(Some(&user_key(&server, "bob@example.com"))),
        account: gw.account.clone(),
    };
    let (bobs, bob_public) = keypair(keys.path(), "bob");
    let r = bob
        .c
        .post("/v1/ssh-keys", json!({"public_key": bob_public}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let out = ssh(&server, &bobs, "dev", &["true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An unregistered key learns nothing.
    let (stranger, _) = keypair(keys.path(), "stranger");
    assert_eq!(
        ssh(&server, &stranger, "dev", &["true"]).status.code(),
        Some(255)
    );
    let out = ssh(&server, &mine, "nope", &["true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("\"nope"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Shared, bob gets in.
    gw.patch("environments/dev", json!({"shared": true})).await;
    let out = ssh(&server, &bobs, "dev", &["echo bob-in"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "bob-in\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn reset_snapshots_squashes_the_stack_into_one_layer() {
    let (_reg, _server, gw, image) = setup().await;
    gw.create_env("stack", &image).await;
    let steps = [
        (
            "echo one > /bin/one && echo gone > /bin/gone && rm /bin/ls",
            false,
        ),
        (
            "echo two > /bin/two && rm /bin/gone && echo changed > /bin/one",
            false,
        ),
        ("echo three > /bin/three", true),
    ];
    for (command, reset) in steps {
        let vm = gw
            .connect_env("stack", json!({"nodePoolId": "host-cpu"}))
            .await;
        gw.exec(&vm, command).await;
        let r = gw
            .post(
                "environments/stack:disconnect",
                json!({"resetSnapshots": reset}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        gw.wait_for("environments/stack", "state", "DISCONNECTED", 60)
            .await;
    }
    let snaps = gw.get("snapshots?orderBy=createTime").await;
    let layers: Vec<i64> = snaps.body["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| s["layerCount"].as_i64().unwrap_or_default())
        .collect();
    // The image has one layer: stacked 2, 3, then squashed back to 2.
    assert_eq!(layers, [2, 3, 2], "{}", snaps.body);

    let vm = &gw
        .connect_env("stack", json!({"nodePoolId": "host-cpu"}))
        .await;
    assert_eq!(
        gw.exec(vm, "cat /bin/one /bin/two /bin/three").await,
        "changed\ntwo\nthree\n"
    );
    assert_eq!(
        gw.exec(
            vm,
            "test -e /bin/gone || echo no-gone; test -e /bin/ls || echo no-ls"
        )
        .await,
        "no-gone\nno-ls\n"
    );
}

/// On a host with an NVIDIA GPU (and only there: elsewhere it returns at
/// once), `nvidia-smi -L` in an environment connected with one rank lists
/// exactly one GPU, and with no ranks none. The image carries the host's
/// glibc, which `nvidia-smi` needs; the driver comes from the host.
#[tokio::test]
async fn on_a_gpu_host_nvidia_smi_sees_exactly_the_ranks() {
    let smi = ["/usr/local/nvidia/bin/nvidia-smi", "/usr/bin/nvidia-smi"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if !std::path::Path::new("/dev/nvidiactl").exists() || smi.is_none() {
        eprintln!("no NVIDIA GPU here: skipped");
        return;
    }
    let mut base = busybox_base()
        .dir("lib/")
        .dir("lib/x86_64-linux-gnu/")
        .dir("lib64/");
    for lib in [
        "libc.so.6",
        "libm.so.6",
        "libdl.so.2",
        "libpthread.so.0",
        "librt.so.1",
        "libgcc_s.so.1",
    ] {
        let host = format!("/lib/x86_64-linux-gnu/{lib}");
        if let Ok(bytes) = std::fs::read(&host) {
            base = base.file(&format!("lib/x86_64-linux-gnu/{lib}"), 0o755, &bytes);
        }
    }
    let loader = std::fs::read("/lib64/ld-linux-x86-64.so.2").expect("the host's loader");
    base = base.file("lib64/ld-linux-x86-64.so.2", 0o755, &loader);
    let (_reg, _server, gw, image) = serve_image(base.bytes(), "home_size_gib = 1", false).await;
    let (one, none) = connect_one_and_no_gpu(&gw, &image).await;
    let (out, err, status) = gw.c.exec(&one, "/usr/local/nvidia/bin/nvidia-smi -L").await;
    eprintln!("nvidia-smi -L with 1 rank:\n{out}{err}");
    assert_eq!(status["exit_code"], 0, "{out}{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("GPU ")).count(),
        1,
        "{out}"
    );
    let (out, err, _) =
        gw.c.exec(
            &none,
            "ls /dev | grep -c nvidia; /usr/local/nvidia/bin/nvidia-smi -L",
        )
        .await;
    eprintln!("with 0 ranks:\n{out}{err}");
    assert!(out.starts_with("0\n"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("GPU ")).count(),
        0,
        "{out}"
    );
}

/// Sessions that change nothing pack identical (empty) layers, and
/// sessions that set a file back and forth may too: a stack must never
/// hold one layer twice (overlayfs refuses it with ELOOP), so every
/// connect of either kind works and the stack stops growing on repeats.
#[tokio::test]
async fn quiet_and_back_and_forth_sessions_keep_connecting() {
    let (_reg, _server, gw, image) = setup().await;
    gw.create_env("quiet", &image).await;
    let cycle = |command: Option<&'static str>| {
        let gw = &gw;
        async move {
            let vm = gw
                .connect_env("quiet", json!({"nodePoolId": "host-cpu"}))
                .await;
            let seen = gw.exec(&vm, "cat /bin/flip 2>/dev/null; true").await;
            if let Some(command) = command {
                gw.exec(&vm, command).await;
            }
            let r = gw.post("environments/quiet:disconnect", json!({})).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let env = gw
                .wait_for("environments/quiet", "state", "DISCONNECTED", 60)
                .await;
            assert_eq!(env["status"]["code"], "OK", "{env}");
            seen
        }
    };
    for _ in 0..10 {
        cycle(None).await;
    }
    let snaps = gw.get("snapshots?orderBy=createTime").await;
    let counts: Vec<i64> = snaps.body["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| s["layerCount"].as_i64().unwrap_or_default())
        .collect();
    // The first session's layer holds what its exec left; every later
    // one is the same empty layer, stacked once.
    assert!(
        counts.len() == 10 && counts[2..].iter().all(|&n| n == counts[1]) && counts[1] <= 3,
        "the stack grew with quiet sessions: {counts:?} {}",
        snaps.body
    );
    let mut want = String::new();
    for i in 0..6 {
        let value = if i % 2 == 0 { "a" } else { "b" };
        assert_eq!(
            cycle(Some(["echo a > /bin/flip", "echo b > /bin/flip"][i % 2])).await,
            want
        );
        want = format!("{value}\n");
    }
    assert_eq!(cycle(None).await, want);
}

/// AIP-134: `updateMask` names what a PATCH changes; an unknown or
/// immutable path is INVALID_ARGUMENT naming it; without a mask the
/// body's fields change. What a job runs cannot be patched.
#[tokio::test]
async fn patch_follows_the_update_mask() {
    let (_reg, _server, gw, image) = setup().await;
    gw.create_env("masked", &image).await;
    let r = gw
        .patch(
            "environments/masked",
            json!({"displayName": "first", "annotations": {"team": "a"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["annotations"]["team"], "a", "{}", r.body);

    let r = gw
        .patch(
            "environments/masked?updateMask=displayName",
            json!({"displayName": "second", "annotations": {"team": "b"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (
            r.body["displayName"].as_str(),
            r.body["annotations"]["team"].as_str()
        ),
        (Some("second"), Some("a")),
        "{}",
        r.body
    );
    // A masked field the body leaves out is cleared.
    let r = gw
        .patch("environments/masked?updateMask=annotations", json!({}))
        .await;
    assert_eq!(r.body["annotations"], json!({}), "{}", r.body);

    for (mask, says) in [("displayName,bogus", "bogus"), ("state", "state")] {
        let r = gw
            .patch(
                &format!("environments/masked?updateMask={mask}"),
                json!({"displayName": "third"}),
            )
            .await;
        assert_eq!((r.status, code(&r)), (400, 3), "{mask}: {}", r.body);
        assert!(
            r.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("updateMask") && m.contains(says)),
            "{}",
            r.body
        );
    }
    assert_eq!(
        gw.get("environments/masked").await.body["displayName"],
        "second"
    );

    let r = gw
        .post(
            "batchJobs?batchJobId=fixed",
            json!({"nodePoolId": "host-cpu", "imageRef": image, "shellExecutor": {"command": "true"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = gw
        .patch(
            "batchJobs/fixed",
            json!({"shellExecutor": {"command": "echo changed"}}),
        )
        .await;
    assert_eq!((r.status, code(&r)), (400, 3), "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("shellExecutor")),
        "{}",
        r.body
    );
    let r = gw
        .patch(
            "batchJobs/fixed?updateMask=displayName",
            json!({"displayName": "renamed", "shellExecutor": {"command": "echo changed"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["shellExecutor"]["command"], "true", "{}", r.body);
}

/// `environments:batchDelete` answers once the environments are gone: a
/// list right after shows none of them.
#[tokio::test]
async fn batch_delete_answers_once_they_are_gone() {
    let (_reg, _server, gw, image) = setup().await;
    for id in ["gone-a", "gone-b", "kept"] {
        gw.create_env(id, &image).await;
    }
    gw.connect_env("gone-a", json!({"nodePoolId": "host-cpu"}))
        .await;
    let r = gw
        .post(
            "environments:batchDelete",
            json!({"names": [format!("accounts/{}/environments/gone-a", gw.account)], "ids": ["gone-b"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let listed = gw.get("environments").await;
    let ids: Vec<&str> = listed.body["environments"]
        .as_array()
        .expect("environments")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .filter_map(|n| n.rsplit('/').next())
        .collect();
    assert_eq!(ids, ["kept"], "{}", listed.body);
}

/// A connect whose sandbox fails to start says so in its own answer (it
/// waits a few seconds for the outcome), and the environment's status
/// holds the same reason.
#[tokio::test]
async fn a_connect_that_fails_says_so_at_once() {
    let (_reg, server, gw, image) = setup().await;
    gw.create_env("frail", &image).await;
    // Its image's layers vanish from under the server, unpacked and packed
    // (with the blob left, a missing layer is unpacked again).
    let images = server.data_dir().join("images");
    for layer in std::fs::read_dir(images.join("layers"))
        .expect("layers")
        .flatten()
    {
        std::fs::remove_dir_all(layer.path()).expect("remove a layer");
    }
    for blob in std::fs::read_dir(images.join("blobs").join("sha256"))
        .expect("blobs")
        .flatten()
    {
        std::fs::remove_file(blob.path()).expect("remove a blob");
    }
    let r = gw
        .post(
            "environments/frail:connect",
            json!({"connection": {"nodePoolId": "host-cpu"}}),
        )
        .await;
    assert_eq!((r.status, code(&r)), (503, 14), "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("connect failed")),
        "{}",
        r.body
    );
    let env = gw.get("environments/frail").await.body;
    assert_eq!(env["state"], "DISCONNECTED", "{env}");
    assert_ne!(env["status"]["code"], "OK", "{env}");
}

/// A registry holding busybox as `test/dev:v1`, and that reference.
async fn busybox_image() -> (Registry, String) {
    let reg = Registry::start();
    let image = reg.reference("test/dev:v1");
    push(
        &image,
        vec![(gzip(&busybox_base().bytes()), GZIP)],
        config_json(&["PATH=/bin"], "/", ""),
    )
    .await;
    (reg, image)
}

/// A server with config `first` on a fresh PostgreSQL database and one
/// with `second` sharing it; `None` (and a line saying so) when the suite
/// has no PostgreSQL.
fn two_on_postgres(first: &str, second: &str) -> Option<(Server, Server)> {
    let Some(a) = Server::start_on_postgres(first) else {
        eprintln!("PADDOCK_TEST_POSTGRES is not set: no store to share");
        return None;
    };
    let b = Server::start_sharing(&a, Some(second)).expect("a PostgreSQL store");
    Some((a, b))
}

/// A directory of stand-in GPU device nodes (`/dev/null`'s numbers under
/// GPU names), `count` of them.
fn stand_in_gpus(count: u32) -> tempfile::TempDir {
    let devs = tempfile::Builder::new()
        .prefix("pdkgpu")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let names = (0..count)
        .map(|i| format!("nvidia{i}"))
        .chain(["nvidiactl".to_owned()]);
    for name in names {
        let ok = Command::new("mknod")
            .arg(devs.path().join(name))
            .args(["c", "1", "3"])
            .status()
            .expect("mknod");
        assert!(ok.success());
    }
    devs
}

/// Over one PostgreSQL, node A (two GPUs, `gpu = "big"`), node B (one
/// GPU, `zone = "b"`) and an API replica: the `host` cluster is both
/// nodes; an environment's GPUs come from one node, the one its home
/// volume is on (GPU 0 of A and GPU 0 of B are two GPUs); a pool selects
/// nodes by their labels; and a volume made through the replica is kept
/// by a node, whose VMs mount it.
#[tokio::test]
async fn node_pools_map_onto_the_nodes_of_a_cluster() {
    let (reg, image) = busybox_image().await;
    let (gpus_a, gpus_b) = (stand_in_gpus(2), stand_in_gpus(1));
    let config = |gpus: &tempfile::TempDir, labels: &str, role: &str| {
        format!(
            "{}\n[ssh]\nenabled = false\n[network]\nenabled = false\n[gateway]\ngpu_dev_dir = \"{}\"\nhome_size_gib = 1\n[cluster]\nrole = \"{role}\"\nlabels = {{ {labels} }}\n",
            reg.paddock_config(),
            gpus.path().display()
        )
    };
    let Some((a, b)) = two_on_postgres(
        &config(&gpus_a, "gpu = \"big\"", "node"),
        &config(&gpus_b, "zone = \"b\"", "node"),
    ) else {
        return;
    };
    let r =
        Server::start_sharing(&a, Some(&config(&gpus_b, "", "api"))).expect("a PostgreSQL store");
    let account = account_id(&a).expect("the account id");
    let gw = |s: &Server| Gw {
        c: s.client(),
        account: account.clone(),
    };
    let (ga, gb, gr) = (gw(&a), gw(&b), gw(&r));
    let node_of = |vm: &str| {
        a.query_store(&format!("SELECT node_id FROM vms WHERE id = '{vm}'"))
            .trim()
            .to_owned()
    };
    let node_id = |s: &Server| {
        std::fs::read_to_string(s.data_dir().join("node.id"))
            .expect("node.id")
            .trim()
            .to_owned()
    };

    // The built-in GPU pool is both nodes' GPUs.
    let stats = gr.get("nodePools/host-gpu:getStats").await;
    assert_eq!(stats.status, 200, "{}", stats.body);
    assert_eq!(
        (
            stats.body["nodeCount"].as_i64(),
            stats.body["ranksPerNode"].as_i64()
        ),
        (Some(2), Some(2)),
        "{}",
        stats.body
    );

    // Homes on A and on B (each made where its create was received);
    // connected through the replica, each gets GPU 0 of its own node.
    ga.create_env("on-a", &image).await;
    gb.create_env("on-b", &image).await;
    let vm_a = gr
        .connect_env("on-a", json!({"nodePoolId": "host-gpu", "numRanks": 2}))
        .await;
    let vm_b = gr
        .connect_env("on-b", json!({"nodePoolId": "host-gpu", "numRanks": 1}))
        .await;
    assert_eq!(node_of(&vm_a), node_id(&a));
    assert_eq!(node_of(&vm_b), node_id(&b));
    assert_eq!(
        gr.exec(&vm_a, "ls /dev | grep nvidia | sort").await,
        "nvidia0\nnvidia1\nnvidiactl\n"
    );
    assert_eq!(
        gr.exec(&vm_b, "ls /dev | grep nvidia | sort").await,
        "nvidia0\nnvidiactl\n"
    );
    // Every GPU is held now: a third connection waits for ranks.
    ga.create_env("third", &image).await;
    let full = gr
        .post(
            "environments/third:connect",
            json!({"connection": {"nodePoolId": "host-gpu", "numRanks": 1}}),
        )
        .await;
    assert_eq!(full.status, 429, "{}", full.body);
    // A pool that selects zone b runs its jobs on B.
    let pool = gr
        .post("nodePools", json!({"nodePoolId": "zone-b", "nodePool": {"fakeNodePool": {"machineType": "n2-standard-4", "numNodes": 2}, "maxNodeCount": 2, "annotations": {"nodes.paddock.dev/zone": "b"}}}))
        .await;
    assert_eq!(pool.status, 200, "{}", pool.body);
    let job = gr
        .post(
            "batchJobs?batchJobId=where",
            json!({"displayName": "where", "nodePoolId": "zone-b", "imageRef": image,
                   "shellExecutor": {"command": "echo ran"}}),
        )
        .await;
    assert_eq!(job.status, 200, "{}", job.body);
    gr.wait_for("batchJobs/where", "state", "COMPLETED", 60)
        .await;
    let ran_on = a.query_store("SELECT node_id FROM vms WHERE metadata LIKE '%batchJobs/where%'");
    assert_eq!(ran_on.trim(), node_id(&b), "the zone-b job ran on {ran_on}");

    // A volume made through the replica is kept by a node; a VM API
    // create through the replica that mounts it runs on that node.
    let c = r.client();
    let vol = c
        .post(
            "/v1/volumes",
            json!({"name": "shared-data", "quota_bytes": 64 << 20}),
        )
        .await;
    assert_eq!(vol.status, 200, "{}", vol.body);
    let vol_id = vol.body["id"].as_str().expect("volume id").to_owned();
    let kept_by = a.query_store(&format!(
        "SELECT node_id FROM volumes WHERE id = '{vol_id}'"
    ));
    let keeper = [&a, &b]
        .into_iter()
        .find(|n| node_id(n) == kept_by.trim())
        .expect("a node keeps the volume");
    assert!(keeper
        .data_dir()
        .join("volumes")
        .join(&vol_id)
        .join("disk.img")
        .exists());
    let vm = c
        .create_vm(
            json!({"memory_mb": 128, "volumes": [{"volume_id": vol_id, "mount_path": "/data"}]}),
        )
        .await;
    let vm = vm["vm_id"].as_str().expect("vm_id").to_owned();
    assert_eq!(node_of(&vm), kept_by.trim());
    let (out, _, _) = c.exec(&vm, "echo hi > /data/f && cat /data/f").await;
    assert_eq!(out, "hi\n");
    assert_eq!(c.delete(&format!("/v1/vms/{vm}")).await.status, 200);
    let gone = c.delete(&format!("/v1/volumes/{vol_id}")).await;
    assert!(matches!(gone.status, 200 | 204), "{}", gone.body);
    for node in [&a, &b] {
        let dir = node.data_dir().join("volumes").join(&vol_id);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

/// Two processes over one PostgreSQL racing for a pool's only rank, and
/// filling its batch queue: each round one connection gets the rank and
/// the other is told there is none; queued jobs run one at a time, each
/// exactly once, whichever process took them.
#[tokio::test]
async fn two_processes_share_a_pools_ranks_and_its_queue() {
    let (reg, image) = busybox_image().await;
    let config = format!(
        "{}\n[ssh]\nenabled = false\n[network]\nenabled = false\n[gateway]\nhome_size_gib = 1\n",
        reg.paddock_config()
    );
    let Some((a, b)) = two_on_postgres(&config, &config) else {
        return;
    };
    let account = account_id(&a).expect("the account id");
    let (ga, gb) = (
        Gw {
            c: a.client(),
            account: account.clone(),
        },
        Gw {
            c: b.client(),
            account,
        },
    );
    let pool = ga
        .post("nodePools", json!({"nodePoolId": "one", "nodePool": {"fakeNodePool": {"machineType": "n2-standard-4", "numNodes": 1}, "maxNodeCount": 1}}))
        .await;
    assert_eq!(pool.status, 200, "{}", pool.body);

    ga.create_env("left", &image).await;
    gb.create_env("right", &image).await;
    let connect = json!({"connection": {"nodePoolId": "one", "numRanks": 1}});
    for round in 0..3 {
        let (left, right) = tokio::join!(
            ga.post("environments/left:connect", connect.clone()),
            gb.post("environments/right:connect", connect.clone()),
        );
        let mut statuses = [left.status, right.status];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 429],
            "round {round}: {} / {}",
            left.body,
            right.body
        );
        let (winner, via) = if left.status == 200 {
            ("left", &ga)
        } else {
            ("right", &gb)
        };
        let path = format!("environments/{winner}");
        via.wait_for(&path, "state", "CONNECTED", 60).await;
        let r = via.post(&format!("{path}:disconnect"), json!({})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        via.wait_for(&path, "state", "DISCONNECTED", 60).await;
    }

    const JOBS: usize = 4;
    for i in 0..JOBS {
        let via = if i % 2 == 0 { &ga } else { &gb };
        let r = via
            .post(
                &format!("batchJobs?batchJobId=q{i}"),
                json!({"displayName": format!("q{i}"), "nodePoolId": "one", "imageRef": image,
                       "shellExecutor": {"command": "sleep 0.3; echo done"}}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = gb.get("batchJobs").await;
        assert_eq!(list.status, 200, "{}", list.body);
        let states: Vec<String> = list.body["batchJobs"]
            .as_array()
            .map(|jobs| {
                jobs.iter()
                    .map(|j| j["state"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let holding = states
            .iter()
            .filter(|s| *s == "PENDING" || *s == "RUNNING")
            .count();
        assert!(
            holding <= 1,
            "two jobs hold the pool's one rank: {states:?}"
        );
        if states.len() == JOBS && states.iter().all(|s| s == "COMPLETED") {
            break;
        }
        assert!(Instant::now() < deadline, "{states:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..JOBS {
        let runs = a.query_store(&format!(
            "SELECT count(*) FROM vms WHERE metadata LIKE '%batchJobs/q{i}\"%'"
        ));
        assert_eq!(runs.trim(), "1", "job q{i} ran {runs} times");
    }
}

/// SSH to an environment whose sandbox runs on another node: the node
/// that takes the login runs the command and the `-L` forward through the
/// sandbox's node (its agent tunnel and its port tunnel).
#[tokio::test]
async fn ssh_through_another_node_reaches_the_sandbox() {
    let (reg, image) = busybox_image().await;
    let config = format!(
        "{}\n[gateway]\nhome_size_gib = 1\n[network]\nenabled = true\n",
        reg.paddock_config()
    );
    let Some((a, b)) = two_on_postgres(&config, &config) else {
        return;
    };
    let ga = Gw {
        c: a.client(),
        account: account_id(&a).expect("the account id"),
    };
    let keys = tempfile::tempdir().expect("tempdir");
    let (mine, public) = keypair(keys.path(), "mine");
    let r =
        ga.c.post("/v1/ssh-keys", json!({"public_key": public}))
            .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Its home is on A, so its sandbox runs on A.
    ga.create_env("far", &image).await;
    let vm = ga
        .connect_env("far", json!({"nodePoolId": "host-cpu"}))
        .await;
    let on = a.query_store(&format!("SELECT node_id FROM vms WHERE id = '{vm}'"));
    let a_node = std::fs::read_to_string(a.data_dir().join("node.id")).expect("node.id");
    assert_eq!(on.trim(), a_node.trim());

    // Several times: a command's exit races its caller's last bytes
    // through the tunnel (a splice that gave up at the first failed write
    // lost the exit about one time in ten under load).
    for _ in 0..4 {
        let out = ssh(&b, &mine, "far", &["echo", "through-b-$((6*7))"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = ssh(&b, &mine, "far", &["echo", "through-b-$((6*7))"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through-b-42\n");

    let page = page_through_ssh_forward(&ga, &b, &mine, "far", &vm, "forwarded-far").await;
    assert_eq!(page, "forwarded-far\n");
}
