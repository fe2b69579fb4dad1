//! Sandboxes launched from environment definitions, per provider, with
//! a plain VM create measured in the same run as the baseline.
//!
//! `cargo bench --bench definitions` (root; Debian's docker.io and
//! busybox-static: the bench starts its own dockerd). Prints p50/p99 of:
//! - baseline: `POST /v1/vms?wait=true` → first exec output;
//! - launch → first exec output (`POST /api/v1/environments/{id}/sandboxes`
//!   then `…/exec`) on `container`, `local` and `docker`;
//! - an exec round trip (`echo hi`) on each;
//! - stop + start of a preserved sandbox on each;
//! - `PUT` of a definition with If-Match;
//!
//! and the server's peak resident memory.

mod common;

#[path = "../tests/common/docker.rs"]
mod docker;
#[path = "../tests/common/registry.rs"]
mod registry;
#[path = "../tests/common/token.rs"]
mod token;

use std::process::Command;
use std::time::Instant;

use common::{peak_rss_mib, percentile, row, Api};
use serde_json::{json, Value};

/// `registry` (shared with the tests) finds it here.
pub use common::install_crypto;

const ROUNDS: usize = 30;

struct Defs {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Defs {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.send(reqwest::Method::POST, path, Some(body)).await;
        assert!(status < 300, "{path}: {status} {v}");
        v
    }

    async fn exec(&self, sb: &str, cmd: &str) -> String {
        let v = self
            .post(&format!("/sandboxes/{sb}/exec"), json!({"command": cmd}))
            .await;
        v["stdout"].as_str().unwrap_or_default().to_owned()
    }
}

fn definition(provider: &str, image: Option<&str>) -> Value {
    json!({
        "provider": provider,
        "image": {"docker": image, "dockerfile": null},
        "resources": {"cpu": 1, "memory": "256Mi", "disk": null},
        "network": {"mode": if provider == "local" { "allow_all" } else { "block" }, "allow": []},
        "lifecycle": {"preserve": true, "stop_on_terminal": false, "auto_stop": null},
        "labels": {}, "volumes": [], "env": {}
    })
}

#[tokio::main]
async fn main() {
    common::install_crypto();
    let engine = docker::DockerEngine::start();
    engine.import(&registry::busybox_base().bytes(), "bench/busybox:1");
    let server = common::start_server(Some(&format!(
        "[providers]\nlocal = true\nlocal_accounts = [\"default\"]\ndocker = {:?}\n",
        engine.host()
    )));
    let out = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["keys", "--data-dir"])
        .arg(&server.data)
        .args(["create", "--dev-token"])
        .output()
        .expect("paddock keys create");
    let d = Defs {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        token: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    };
    let api = Api {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        key: server.key.clone(),
    };

    let mut plain = Vec::new();
    for i in 0..=ROUNDS {
        let (t, vm) = api.create_then_exec().await;
        if i > 0 {
            plain.push(t);
        }
        api.delete(&vm).await;
    }

    let mut results = Vec::new();
    for (provider, image) in [
        ("container", None),
        ("local", None),
        ("docker", Some("bench/busybox:1")),
    ] {
        d.post("/environments", {
            let mut b = definition(provider, image);
            b["id"] = json!(format!("on-{provider}"));
            b
        })
        .await;
        let (mut launch, mut exec, mut restart) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..=ROUNDS {
            let t = Instant::now();
            let sb = d
                .post(&format!("/environments/on-{provider}/sandboxes"), json!({}))
                .await;
            let id = sb["id"].as_str().expect("id").to_owned();
            assert!(d.exec(&id, "echo ready").await.contains("ready"), "{sb}");
            let launched = t.elapsed();
            let t = Instant::now();
            d.exec(&id, "echo hi").await;
            let round_trip = t.elapsed();
            let t = Instant::now();
            d.post(&format!("/sandboxes/{id}/stop"), json!({})).await;
            d.post(&format!("/sandboxes/{id}/start"), json!({})).await;
            assert!(d.exec(&id, "echo back").await.contains("back"));
            let restarted = t.elapsed();
            d.send(reqwest::Method::DELETE, &format!("/sandboxes/{id}"), None)
                .await;
            if i > 0 {
                launch.push(launched);
                exec.push(round_trip);
                restart.push(restarted);
            }
        }
        results.push((provider, launch, exec, restart));
    }

    let mut replace = Vec::new();
    let (_, created) = d
        .send(reqwest::Method::GET, "/environments/on-container", None)
        .await;
    let mut revision = created["revision"].as_str().unwrap_or_default().to_owned();
    for i in 0..=ROUNDS * 4 {
        let mut b = definition("container", None);
        b["labels"] = json!({"round": i.to_string()});
        let t = Instant::now();
        let r = d
            .http
            .put(format!("{}/api/v1/environments/on-container", d.base))
            .bearer_auth(&d.token)
            .header("If-Match", format!("\"{revision}\""))
            .json(&b)
            .send()
            .await
            .expect("put");
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.expect("json");
        if i > 0 {
            replace.push(t.elapsed());
        }
        revision = v["revision"].as_str().unwrap_or_default().to_owned();
    }

    println!("| measurement | p50 ms | p99 ms | n |");
    println!("|---|---|---|---|");
    row("baseline: VM create → first exec (VM API)", &mut plain);
    for (provider, launch, exec, restart) in &mut results {
        row(&format!("{provider}: launch → first exec"), launch);
        row(&format!("{provider}: exec round trip"), exec);
        row(
            &format!("{provider}: stop + start (preserved) → exec"),
            restart,
        );
    }
    row("PUT a definition with If-Match", &mut replace);
    println!();
    let base = percentile(&mut plain, 0.5).as_secs_f64() * 1e3;
    for (provider, launch, _, _) in &mut results {
        let p = percentile(launch, 0.5).as_secs_f64() * 1e3;
        println!("{provider} launch p50 − baseline p50: {:+.2} ms", p - base);
    }
    println!(
        "server peak RSS: {:.1} MiB",
        peak_rss_mib(server.child.id())
    );
}
