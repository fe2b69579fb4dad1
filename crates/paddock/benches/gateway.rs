//! Dev environment and batch job figures against a real server and a
//! real registry on loopback, with a plain VM create from the same image
//! measured in the same run as the baseline.
//!
//! `cargo bench --bench gateway` (root; Debian's docker-registry and
//! busybox-static). Prints p50/p99 of:
//! - baseline: `POST /v1/vms?wait=true` from the image → first exec output;
//! - `:connect` → CONNECTED → first exec output (a sandbox from the pinned
//!   image, plus the home volume's mount);
//! - `:disconnect` → DISCONNECTED for an environment that changed 1 MiB
//!   (freeze, pack, store the snapshot, end the sandbox);
//! - reconnect from that snapshot → first exec output;
//! - a batch job `true`: create → COMPLETED;
//!
//! and the server's peak resident memory.

mod common;

#[path = "../tests/common/registry.rs"]
mod registry;
#[path = "../tests/common/token.rs"]
mod token;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{peak_rss_mib, percentile, row, Api};
use serde_json::{json, Value};

/// `registry` (shared with the tests) finds it here.
pub use common::install_crypto;

const ROUNDS: usize = 20;

struct Gw {
    api: Api,
    prefix: String,
}

impl Gw {
    async fn get(&self, rest: &str) -> Value {
        self.api
            .http
            .get(format!("{}{}/{rest}", self.api.base, self.prefix))
            .header("Authorization", format!("Bearer {}", self.api.key))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    async fn post(&self, rest: &str, body: Value) -> Value {
        self.api
            .http
            .post(format!("{}{}/{rest}", self.api.base, self.prefix))
            .header("Authorization", format!("Bearer {}", self.api.key))
            .json(&body)
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json")
    }

    /// Polls (every millisecond) until `field` is `want`.
    async fn until(&self, rest: &str, field: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let v = self.get(rest).await;
            if v[field] == want {
                return v;
            }
            assert!(Instant::now() < deadline, "{rest} never {want}: {v}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// `:connect` → CONNECTED → first exec output.
    async fn connect(&self, env: &str) -> (Duration, String) {
        let t = Instant::now();
        self.post(
            &format!("environments/{env}:connect"),
            json!({"connection": {"nodePoolId": "host-cpu"}}),
        )
        .await;
        let e = self
            .until(&format!("environments/{env}"), "state", "CONNECTED")
            .await;
        let vm = e["vmId"].as_str().expect("vmId").to_owned();
        let out = self.api.stream_exec(&vm, "echo ready").await;
        assert!(out.contains("ready"), "{out}");
        (t.elapsed(), vm)
    }

    async fn disconnect(&self, env: &str) -> Duration {
        let t = Instant::now();
        self.post(&format!("environments/{env}:disconnect"), json!({}))
            .await;
        self.until(&format!("environments/{env}"), "state", "DISCONNECTED")
            .await;
        t.elapsed()
    }
}

#[tokio::main]
async fn main() {
    common::install_crypto();
    let reg = registry::Registry::start();
    let image = reg.reference("bench/dev:v1");
    registry::push(
        &image,
        vec![(
            registry::gzip(&registry::busybox_base().bytes()),
            registry::GZIP,
        )],
        registry::config_json(&["PATH=/bin"], "/", ""),
    )
    .await;
    let server = common::start_server(Some(&format!(
        "{}\n[gateway]\ncpu_nodes = 64\nhome_size_gib = 1\n",
        reg.paddock_config()
    )));
    let keys = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["keys", "--data-dir"])
        .arg(&server.data)
        .args(["--json", "list"])
        .output()
        .expect("paddock keys list");
    let keys: Value = serde_json::from_slice(&keys.stdout).expect("keys json");
    let account = keys[0]["account_id"].as_str().expect("account").to_owned();
    let gw = Gw {
        api: Api {
            http: reqwest::Client::new(),
            base: server.base.clone(),
            key: server.key.clone(),
        },
        prefix: format!("/v1/accounts/{account}"),
    };

    // Baseline: the same image as a plain VM.
    let mut plain = Vec::new();
    for i in 0..=ROUNDS {
        let t = Instant::now();
        let vm = gw
            .api
            .post("/v1/vms?wait=true", json!({"image_variant": image}))
            .await;
        let id = vm["vm_id"].as_str().expect("vm_id").to_owned();
        let out = gw.api.stream_exec(&id, "echo ready").await;
        assert!(out.contains("ready"), "{vm} {out}");
        if i > 0 {
            plain.push(t.elapsed());
        }
        gw.api.delete(&id).await;
    }

    let (mut connect, mut disconnect, mut reconnect) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..=ROUNDS {
        let env = format!("e{i}");
        gw.post(
            "environments",
            json!({"environmentId": env, "environment": {"baseImageRef": image}}),
        )
        .await;
        gw.until(&format!("environments/{env}"), "state", "DISCONNECTED")
            .await;
        let (t, vm) = gw.connect(&env).await;
        let out = gw
            .api
            .stream_exec(
                &vm,
                "head -c 1048576 /dev/urandom > /bin/blob && echo wrote",
            )
            .await;
        assert!(out.contains("wrote"), "{out}");
        let d = gw.disconnect(&env).await;
        let (r, _) = gw.connect(&env).await;
        gw.disconnect(&env).await;
        if i > 0 {
            connect.push(t);
            disconnect.push(d);
            reconnect.push(r);
        }
    }

    let mut jobs = Vec::new();
    for i in 0..=ROUNDS {
        let t = Instant::now();
        let id = format!("j{i}");
        gw.post(
            &format!("batchJobs?batchJobId={id}"),
            json!({"nodePoolId": "host-cpu", "imageRef": image, "shellExecutor": {"command": "true"}}),
        )
        .await;
        gw.until(&format!("batchJobs/{id}"), "state", "COMPLETED")
            .await;
        if i > 0 {
            jobs.push(t.elapsed());
        }
    }

    println!("| measurement | p50 ms | p99 ms | n |");
    println!("|---|---|---|---|");
    row(
        "baseline: VM create from the image → first exec",
        &mut plain,
    );
    row(":connect → CONNECTED → first exec", &mut connect);
    row(
        ":disconnect (1 MiB changed) → DISCONNECTED",
        &mut disconnect,
    );
    row("reconnect from the snapshot → first exec", &mut reconnect);
    row("batch job `true`: create → COMPLETED", &mut jobs);
    println!();
    let base = percentile(&mut plain, 0.5).as_secs_f64() * 1e3;
    let conn = percentile(&mut connect, 0.5).as_secs_f64() * 1e3;
    let re = percentile(&mut reconnect, 0.5).as_secs_f64() * 1e3;
    println!("connect p50 − baseline p50: {:+.2} ms", conn - base);
    println!("reconnect p50 − baseline p50: {:+.2} ms", re - base);
    println!(
        "server peak RSS: {:.1} MiB",
        peak_rss_mib(server.child.id())
    );
}
