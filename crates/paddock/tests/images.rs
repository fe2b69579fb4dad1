//! Images from a real registry on loopback: pull, run, layer semantics,
//! verification, errors, caching and garbage collection.

mod common;

use common::registry::{
    self, busybox_base, config_json, gzip, push, push_index, zstd, Registry, Tar, GZIP, PLAIN, ZSTD,
};
use common::Server;
use serde_json::json;

/// Two layers over busybox: the top one (zstd) deletes a file with a
/// whiteout, makes /data opaque, and adds a hard link and a symlink.
async fn push_tree(reg: &Registry, tag: &str) -> (String, Vec<String>) {
    let base = busybox_base()
        .dir("data/")
        .file("data/old.txt", 0o644, b"old")
        .file("etc/removed", 0o644, b"gone soon")
        .file("etc/kept", 0o600, b"kept")
        .bytes();
    let top = Tar::new()
        .dir("data/")
        .file("data/.wh..wh..opq", 0o644, b"")
        .file("data/new.txt", 0o640, b"new")
        .hardlink("data/new-link", "data/new.txt")
        .symlink("data/sym", "new.txt")
        .file("etc/.wh.removed", 0o644, b"")
        .bytes();
    let (gz, zs) = (gzip(&base), zstd(&top));
    let layer_digests = [&gz, &zs]
        .iter()
        .map(|b| {
            format!(
                "sha256:{}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b))
            )
        })
        .collect();
    let config = config_json(&["PATH=/bin", "GREETING=from-image"], "/data", "");
    let (digest, _) = push(&reg.reference(tag), vec![(gz, GZIP), (zs, ZSTD)], config).await;
    (digest, layer_digests)
}

#[tokio::test]
async fn a_vm_runs_a_pulled_image_with_its_layers_and_config() {
    let reg = Registry::start();
    let server = Server::start_with_config(&reg.paddock_config());
    let c = server.client();
    let (digest, layers) = push_tree(&reg, "test/tree:v1").await;
    let reference = reg.reference("test/tree:v1");

    let pulled = c
        .post("/v1/images?wait=true", json!({"reference": reference}))
        .await;
    assert_eq!(pulled.status, 200, "{}", pulled.body);
    assert_eq!(pulled.body["status"], "done");
    assert_eq!(pulled.body["image"]["digest"], digest);
    assert_eq!(
        pulled.body["image"]["layers"]
            .as_array()
            .expect("layers")
            .len(),
        2
    );
    assert_eq!(
        pulled.body["layers"][1]["done"],
        pulled.body["layers"][1]["total"]
    );

    let vm = c.create_vm(json!({"image_variant": reference})).await;
    let id = vm["vm_id"].as_str().expect("id");
    let (out, err, exit) = c
        .exec(id, "pwd; echo $GREETING; ls /data; cat /data/new.txt /data/new-link; echo; readlink /data/sym; ls /etc; stat -c %a /etc/kept /data/new.txt")
        .await;
    assert_eq!(exit["exit_code"], 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "/data", "WorkingDir is the default cwd");
    assert_eq!(lines[1], "from-image", "Env comes from the image config");
    assert_eq!(
        lines[2..5],
        ["new-link", "new.txt", "sym"],
        "the opaque dir hides old.txt: {out}"
    );
    assert_eq!(lines[5], "newnew");
    assert_eq!(lines[6], "new.txt");
    assert!(
        !out.contains("removed"),
        "the whiteout hides /etc/removed: {out}"
    );
    assert!(out.contains("kept"));
    assert!(out.ends_with("600\n640\n"), "{out}");

    // The VM records the digest it runs; the image cannot go while it runs.
    let got = c.get(&format!("/v1/vms/{id}")).await;
    assert_eq!(got.body["status"], "active");
    assert_eq!(got.body["image_digest"], digest);
    // A reference by digest names the same image.
    let by_digest = c
        .create_vm(json!({"image_variant": format!("{}@{digest}", reg.reference("test/tree"))}))
        .await;
    assert_eq!(by_digest["image_digest"], digest);
    c.delete(&format!(
        "/v1/vms/{}",
        by_digest["vm_id"].as_str().expect("id")
    ))
    .await;
    let refused = c.delete(&format!("/v1/images/{digest}")).await;
    assert_eq!(refused.status, 409, "{}", refused.body);

    // A second pull downloads nothing: the blobs on disk stay as they were.
    let blob = server
        .data_dir()
        .join("images/blobs/sha256")
        .join(layers[0].trim_start_matches("sha256:"));
    let before = std::fs::metadata(&blob)
        .expect("blob stored")
        .modified()
        .expect("mtime");
    let again = c
        .post("/v1/images?wait=true", json!({"reference": reference}))
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(
        std::fs::metadata(&blob)
            .expect("blob")
            .modified()
            .expect("mtime"),
        before
    );

    // Delete: refused while used, then garbage-collected.
    c.delete(&format!("/v1/vms/{id}")).await;
    let listed = c.get("/v1/images").await;
    assert_eq!(listed.body.as_array().expect("array").len(), 1);
    let inspect = c
        .get(&format!("/v1/images/{}", reference.replace('/', "%2F")))
        .await;
    assert_eq!(inspect.body["digest"], digest, "{}", inspect.body);
    let deleted = c.delete(&format!("/v1/images/{digest}")).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert!(deleted.body["freed_bytes"].as_u64().expect("bytes") > 1_000_000);
    assert!(!blob.exists());
    assert_eq!(
        std::fs::read_dir(server.data_dir().join("images/layers"))
            .expect("dir")
            .count(),
        0
    );
    assert_eq!(c.get(&format!("/v1/images/{digest}")).await.status, 404);
}

#[tokio::test]
async fn the_image_user_runs_commands_and_an_index_picks_amd64() {
    let reg = Registry::start();
    let server = Server::start_with_config(&reg.paddock_config());
    let c = server.client();
    let base = gzip(&busybox_base().bytes());
    let amd64 = push(
        &reg.reference("test/multi:amd64"),
        vec![(base.clone(), GZIP)],
        config_json(&["PATH=/bin"], "", "app"),
    )
    .await;
    let arm64_marker = Tar::new().file("ARM64", 0o644, b"wrong platform").bytes();
    let arm64 = push(
        &reg.reference("test/multi:arm64"),
        vec![(base, GZIP), (arm64_marker, PLAIN)],
        config_json(&["PATH=/bin"], "", ""),
    )
    .await;
    push_index(
        &reg.reference("test/multi:latest"),
        (&amd64.0, amd64.1),
        (&arm64.0, arm64.1),
    )
    .await;

    let vm = c
        .create_vm(json!({"image_variant": reg.reference("test/multi:latest")}))
        .await;
    let id = vm["vm_id"].as_str().expect("id");
    let (out, _, _) = c.exec(id, "id -u; id -g; ls /").await;
    assert!(out.starts_with("1000\n1000\n"), "the image's User: {out}");
    assert!(
        !out.contains("ARM64"),
        "the linux/amd64 manifest was chosen: {out}"
    );
    let pulled = c.get("/v1/images").await;
    assert_eq!(pulled.body[0]["digest"], amd64.0);
}

#[tokio::test]
async fn tampered_blobs_and_unreachable_registries_are_clear_errors() {
    let reg = Registry::start();
    let server = Server::start_with_config(&reg.paddock_config());
    let c = server.client();
    let layer = gzip(&busybox_base().file("marker", 0o644, b"tamper-me").bytes());
    let layer_digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&layer))
    );
    push(
        &reg.reference("test/tampered:v1"),
        vec![(layer, GZIP)],
        config_json(&["PATH=/bin"], "", ""),
    )
    .await;
    let stored = reg.blob_file(&layer_digest);
    let mut bytes = std::fs::read(&stored).expect("registry blob");
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&stored, bytes).expect("tamper");

    let r = c
        .post(
            "/v1/images?wait=true",
            json!({"reference": reg.reference("test/tampered:v1")}),
        )
        .await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        r.body["detail"]
            .as_str()
            .expect("detail")
            .contains("corrupt"),
        "{}",
        r.body
    );
    let blobs = server.data_dir().join("images/blobs/sha256");
    assert!(
        !blobs
            .join(layer_digest.trim_start_matches("sha256:"))
            .exists(),
        "nothing half-written remains"
    );
    assert_eq!(
        std::fs::read_dir(server.data_dir().join("images/blobs/ingest"))
            .expect("dir")
            .count(),
        0
    );

    let r = c
        .post(
            "/v1/vms",
            json!({"image_variant": reg.reference("test/tampered:v1")}),
        )
        .await;
    assert_eq!(r.body["status"], "failed", "{}", r.body);
    assert!(r.body["status_reason"]
        .as_str()
        .expect("reason")
        .contains("corrupt"));

    let missing = c
        .post(
            "/v1/images?wait=true",
            json!({"reference": reg.reference("test/nothing:here")}),
        )
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);

    let down = c
        .post(
            "/v1/images?wait=true",
            json!({"reference": "127.0.0.1:9/test/x:v1"}),
        )
        .await;
    assert_eq!(down.status, 502, "{}", down.body);
    assert!(
        down.body["detail"]
            .as_str()
            .expect("detail")
            .contains("127.0.0.1:9"),
        "{}",
        down.body
    );

    let bad = c
        .post(
            "/v1/images?wait=true",
            json!({"reference": "UPPER/Case::bad"}),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    let bad_vm = c
        .post("/v1/vms", json!({"image_variant": "not a reference"}))
        .await;
    assert_eq!(bad_vm.status, 422, "{}", bad_vm.body);
}

#[tokio::test]
async fn only_listed_registries_are_contacted_when_the_config_says_so() {
    let reg = Registry::start();
    let config = format!("only_listed_registries = true\n{}", reg.paddock_config());
    let server = Server::start_with_config(&config);
    let c = server.client();
    push(
        &reg.reference("test/listed:v1"),
        vec![(gzip(&busybox_base().bytes()), GZIP)],
        config_json(&["PATH=/bin"], "", ""),
    )
    .await;
    let listed = c
        .post(
            "/v1/images?wait=true",
            json!({"reference": reg.reference("test/listed:v1")}),
        )
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);

    // A listener on the unlisted port would see a connection if one were
    // made; the refusal comes first.
    let unlisted = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    unlisted.set_nonblocking(true).expect("nonblocking");
    let host = unlisted.local_addr().expect("addr");
    let refused = c
        .post(
            "/v1/images?wait=true",
            json!({"reference": format!("{host}/test/x:v1")}),
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let detail = refused.body["detail"].as_str().expect("detail");
    assert!(
        detail.contains(&host.to_string()) && detail.contains("lists"),
        "{detail}"
    );
    let docker_hub = c
        .post("/v1/images?wait=true", json!({"reference": "alpine:3"}))
        .await;
    assert_eq!(docker_hub.status, 403, "{}", docker_hub.body);
    let image = listed.body["image_digest"]
        .as_str()
        .expect("the pulled digest")
        .to_owned();
    let pushed = c
        .post(
            &format!("/v1/images/{image}/push"),
            json!({"target": format!("{host}/test/copy:v1")}),
        )
        .await;
    assert_eq!(pushed.status, 403, "{}", pushed.body);
    assert!(
        unlisted.accept().is_err(),
        "no connection reached the unlisted registry"
    );
}

#[tokio::test]
async fn a_pull_reports_progress_while_it_runs() {
    let reg = Registry::start();
    let server = Server::start_with_config(&reg.paddock_config());
    let c = server.client();
    let big: Vec<u8> = (0..48 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let layer = Tar::new().file("big.bin", 0o644, &big).bytes();
    push(
        &reg.reference("test/big:v1"),
        vec![(gzip(&busybox_base().bytes()), GZIP), (layer, PLAIN)],
        config_json(&["PATH=/bin"], "", ""),
    )
    .await;
    let started = c
        .post(
            "/v1/images?wait=false",
            json!({"reference": reg.reference("test/big:v1")}),
        )
        .await;
    assert_eq!(started.status, 200, "{}", started.body);
    let id = started.body["pull_id"]
        .as_str()
        .expect("pull id")
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let last = loop {
        let p = c.get(&format!("/v1/images/pulls/{id}")).await;
        assert_eq!(p.status, 200);
        if p.body["status"] == "done" || p.body["status"] == "failed" {
            break p.body;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(last["status"], "done", "{last}");
    assert!(last["layers"][1]["total"].as_u64().expect("total") > 48 * 1024 * 1024);
    let other = c.with_key(Some(&server.other_account_key()));
    assert_eq!(
        other.get(&format!("/v1/images/pulls/{id}")).await.status,
        404
    );
    assert!(other
        .get("/v1/images")
        .await
        .body
        .as_array()
        .expect("array")
        .is_empty());
    let _ = registry::PLAIN;
}

#[tokio::test]
async fn image_commands_pull_list_inspect_rm() {
    let reg = Registry::start();
    let server = Server::start_with_config(&reg.paddock_config());
    let (digest, _) = push_tree(&reg, "test/cli:v1").await;
    let reference = reg.reference("test/cli:v1");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::bin())
            .args(args)
            .env("PADDOCK_SERVER", &server.base)
            .env("PADDOCK_API_KEY", &server.key)
            .output()
            .expect("run paddock");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run(&["image", "pull", &reference]).trim(), digest);
    assert!(run(&["image", "list"]).contains(&reference));
    let inspected: serde_json::Value =
        serde_json::from_str(&run(&["image", "inspect", &reference])).expect("json");
    assert_eq!(inspected["digest"], digest);
    assert_eq!(inspected["working_dir"], "/data");
    run(&["image", "rm", &digest]);
    assert!(!run(&["image", "list"]).contains(&reference));
}

/// Reads an NDJSON build log into its events.
fn events(body: &serde_json::Value) -> Vec<serde_json::Value> {
    body.as_str()
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect()
}

#[tokio::test]
async fn a_dockerfile_builds_caches_and_pushes() {
    let reg = Registry::start();
    let server = Server::start_with_config(&reg.paddock_config());
    let c = server.client();
    push(
        &reg.reference("test/base:v1"),
        vec![(gzip(&busybox_base().bytes()), GZIP)],
        config_json(&["PATH=/bin"], "", ""),
    )
    .await;
    let dockerfile = format!(
        "ARG GREETING=hello\nFROM {}\nENV APP=demo\nWORKDIR /app\nRUN echo \"$GREETING from $APP\" > /app/greeting && echo built-it && rm /etc/group\nCOPY --chmod=755 <<EOF /app/run.sh\n#!/bin/sh\necho running $APP\nEOF\nUSER app\nCMD [\"/app/run.sh\"]\n",
        reg.reference("test/base:v1")
    );
    let body = json!({"dockerfile": dockerfile, "tag": "local/app:v1"});
    let first = c.post("/v1/images/build", body.clone()).await;
    assert_eq!(first.status, 200);
    let log = events(&first.body);
    let done = log.last().expect("events");
    assert_eq!(done["type"], "done", "{log:?}");
    assert_eq!(log.iter().filter(|e| e["type"] == "step").count(), 8);
    assert!(log.iter().any(
        |e| e["type"] == "stdout" && e["data"].as_str().is_some_and(|d| d.contains("built-it"))
    ));
    let digest = done["image"]["digest"].as_str().expect("digest").to_owned();
    assert_eq!(done["image"]["user"], "app");
    assert_eq!(done["image"]["cmd"], json!(["/app/run.sh"]));

    let vm = c.create_vm(json!({"image_variant": "local/app:v1"})).await;
    let id = vm["vm_id"].as_str().expect("id");
    let (out, _, _) = c
        .exec(
            id,
            "cat greeting; /app/run.sh; id -u; ls /etc/group 2>&1; echo $APP",
        )
        .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "hello from demo", "{out}");
    assert_eq!(lines[1], "running demo");
    assert_eq!(lines[2], "1000");
    assert!(
        lines[3].contains("No such file"),
        "RUN's deletion is a whiteout: {out}"
    );
    assert_eq!(lines[4], "demo");

    // A rebuild with no change reuses every layer and runs nothing.
    let again = events(&c.post("/v1/images/build", body).await.body);
    let layer_steps: Vec<_> = again
        .iter()
        .filter(|e| {
            e["type"] == "step"
                && (e["instruction"].as_str().unwrap_or("").starts_with("RUN")
                    || e["instruction"].as_str().unwrap_or("").starts_with("COPY"))
        })
        .collect();
    assert_eq!(layer_steps.len(), 2);
    assert!(layer_steps.iter().all(|e| e["cached"] == true), "{again:?}");
    assert!(
        !again.iter().any(|e| e["type"] == "stdout"),
        "a cached RUN runs nothing"
    );
    assert_eq!(again.last().expect("done")["image"]["digest"], digest);

    // Push it, and run it from the registry on another server.
    let pushed = c
        .post(
            &format!("/v1/images/{digest}/push"),
            json!({"target": reg.reference("test/built:v1")}),
        )
        .await;
    assert_eq!(pushed.status, 200, "{}", pushed.body);
    let other = Server::start_with_config(&reg.paddock_config());
    let oc = other.client();
    let vm = oc
        .create_vm(json!({"image_variant": reg.reference("test/built:v1")}))
        .await;
    let (out, _, _) = oc
        .exec(
            vm["vm_id"].as_str().expect("id"),
            "cat /app/greeting; id -u",
        )
        .await;
    assert_eq!(out, "hello from demo\n1000\n");
}

#[tokio::test]
async fn build_errors_name_the_line_and_store_nothing() {
    let reg = Registry::start();
    let server = Server::start_with_config(&reg.paddock_config());
    let c = server.client();
    push(
        &reg.reference("test/base:v1"),
        vec![(gzip(&busybox_base().bytes()), GZIP)],
        config_json(&["PATH=/bin"], "", ""),
    )
    .await;
    let bad = c.post("/v1/images/build", json!({"dockerfile": format!("FROM {}\n\nEXPOSE 80\n", reg.reference("test/base:v1")), "tag": "local/x:v1"})).await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(bad.body["detail"][0]["loc"], json!(["body", "dockerfile"]));
    assert!(bad.body["detail"][0]["msg"]
        .as_str()
        .expect("msg")
        .contains("line 3"));

    let failing = c.post("/v1/images/build", json!({"dockerfile": format!("FROM {}\nRUN echo partial > /f && exit 3\n", reg.reference("test/base:v1")), "tag": "local/x:v1"})).await;
    let log = events(&failing.body);
    let last = log.last().expect("events");
    assert_eq!(last["type"], "error", "{log:?}");
    assert!(
        last["detail"].as_str().expect("detail").contains("line 2"),
        "{last}"
    );
    assert!(
        last["detail"]
            .as_str()
            .expect("detail")
            .contains("exit code 3"),
        "{last}"
    );
    assert_eq!(c.get("/v1/images/local%2Fx:v1").await.status, 404);
    // The build sandbox is gone.
    assert_eq!(
        std::fs::read_dir(server.data_dir().join("sandboxes"))
            .expect("dir")
            .count(),
        0
    );
}

/// Pushes an image to a registry that wants `puller:password`, then checks
/// that a server configured with that password pulls it (and never logs
/// it), and that one with a wrong password or none gets a clear 502.
async fn check_credentials(reg: &Registry, password: &str) {
    let auth = oci_client::secrets::RegistryAuth::Basic("puller".into(), password.into());
    let reference = reg.reference("test/private:v1");
    registry::push_as(
        &reference,
        vec![(gzip(&busybox_base().bytes()), GZIP)],
        config_json(&["PATH=/bin"], "", ""),
        &auth,
    )
    .await;
    let configured = |pass: &str| {
        Server::start_with_config(&format!(
            "[registries.\"{}\"]\ninsecure = true\nusername = \"puller\"\npassword = \"{pass}\"\n",
            reg.host
        ))
    };
    let body = json!({"reference": reference});

    let good = configured(password);
    let r = good
        .client()
        .post("/v1/images?wait=true", body.clone())
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        !good.log().contains(password),
        "credentials never reach the log"
    );

    let wrong = configured("wrong-pass");
    let r = wrong
        .client()
        .post("/v1/images?wait=true", body.clone())
        .await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        r.body["detail"]
            .as_str()
            .expect("detail")
            .contains("refused the credentials"),
        "{}",
        r.body
    );
    assert!(!r.body.to_string().contains("wrong-pass"));

    let anonymous = Server::start_with_config(&reg.paddock_config());
    let r = anonymous.client().post("/v1/images?wait=true", body).await;
    assert_eq!(r.status, 502, "{}", r.body);
}

#[tokio::test]
async fn basic_auth_registries_take_the_configured_credentials() {
    let reg = Registry::start_with_auth(Some(("puller", "s3cret-pass")));
    check_credentials(&reg, "s3cret-pass").await;
}

#[tokio::test]
async fn bearer_token_registries_take_the_configured_credentials() {
    let tokens =
        common::token::TokenService::start("puller", "tok3n-pass", "paddock-registry").await;
    let reg = Registry::start_with_tokens(&tokens);
    check_credentials(&reg, "tok3n-pass").await;
}

/// An image may list one layer more than once (Docker's builders repeat
/// the empty layer; snapshot stacks of quiet sessions once did): it is
/// stacked once, at its topmost place, and the VM starts with the same
/// files as if every copy were there.
#[tokio::test]
async fn an_image_that_repeats_a_layer_runs() {
    let reg = Registry::start();
    let server = Server::start_with_config(&reg.paddock_config());
    let c = server.client();
    let base = gzip(&busybox_base().bytes());
    let empty = gzip(&Tar::new().bytes());
    let marker = gzip(&Tar::new().file("etc/marker", 0o644, b"top").bytes());
    let reference = reg.reference("test/repeats:v1");
    push(
        &reference,
        vec![
            (base, GZIP),
            (empty.clone(), GZIP),
            (marker.clone(), GZIP),
            (empty, GZIP),
            (marker, GZIP),
        ],
        config_json(&["PATH=/bin"], "/", ""),
    )
    .await;
    let vm = c.create_vm(json!({"image_variant": reference})).await;
    let id = vm["vm_id"].as_str().expect("vm_id");
    assert_eq!(vm["status"], "active", "{vm}");
    let (out, err, _) = c.exec(id, "cat /etc/marker; echo; ls /bin/busybox").await;
    assert_eq!(out, "top\n/bin/busybox\n", "{err}");
}
