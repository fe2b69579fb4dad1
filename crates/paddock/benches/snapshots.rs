//! Snapshot and restore cost against a real server, with a plain create
//! measured in the same run as the baseline.
//!
//! `cargo bench --bench snapshots` (needs root). For VMs that changed
//! 1 MiB, 100 MiB and 1 GiB (random bytes, so compression cannot hide the
//! size), prints:
//! - snapshot time (`POST /v1/vms/{id}/snapshot`: freeze, copy the
//!   changes into a layer while hashing them, store the image), p50 of 3,
//!   and that p50 per GiB changed against the 0.5 s/GiB target;
//! - restore time: create from the snapshot → first exec output, p50/p99,
//!   beside plain create → first exec output. Restoring stacks the stored
//!   layer under a fresh overlay and copies nothing, so the target is a
//!   p50 within 5 ms of the plain create whatever the size.
//!
//! The server runs without a warm pool: a restore boots its sandbox (its
//! root is the snapshot's), so the baseline is a create that boots too.
//! A create that takes a pooled sandbox is `--bench sandbox`'s figure.

mod common;

use std::time::{Duration, Instant};

use common::{percentile, row, Api};
use serde_json::json;

const RESTORES: usize = 30;
/// Snapshots taken per size (each of a fresh VM with fresh bytes).
const SNAPSHOTS: usize = 3;

impl Api {
    async fn delete_snapshot(&self, id: &str) {
        self.http
            .delete(format!("{}/v1/snapshots/{id}", self.base))
            .header("X-API-Key", &self.key)
            .send()
            .await
            .expect("delete snapshot");
    }

    /// Create a VM from `body` and run `echo` in it; the time until its
    /// output arrived.
    async fn create_from(&self, body: serde_json::Value) -> (Duration, String) {
        let t = Instant::now();
        let vm = self.post("/v1/vms?wait=true", body).await;
        let id = vm["vm_id"].as_str().expect("vm_id").to_owned();
        let out = self.stream_exec(&id, "echo ready").await;
        let elapsed = t.elapsed();
        assert!(out.contains("ready"), "{vm} {out}");
        (elapsed, id)
    }

    async fn restore_samples(&self, body: serde_json::Value) -> Vec<Duration> {
        let mut samples = Vec::with_capacity(RESTORES);
        for _ in 0..RESTORES {
            let (t, id) = self.create_from(body.clone()).await;
            samples.push(t);
            self.delete(&id).await;
        }
        samples
    }
}

#[tokio::main]
async fn main() {
    common::install_crypto();
    let server = common::start_server_with(None, &[("PADDOCK_SANDBOX__WARM_POOL", "0")]);
    let api = Api {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        key: server.key.clone(),
    };
    // Warm the server and the page cache.
    api.restore_samples(json!({})).await;

    println!("| measurement | p50 ms | p99 ms | n |");
    println!("|---|---|---|---|");
    let mut plain = api.restore_samples(json!({})).await;
    row("baseline: plain create (booted) → first exec", &mut plain);
    let plain_p50 = percentile(&mut plain, 0.5);

    let mut deltas = Vec::new();
    let mut per_gib = Vec::new();
    for (label, mib) in [("1 MiB", 1u64), ("100 MiB", 100), ("1 GiB", 1024)] {
        let mut snapshot_time = Vec::with_capacity(SNAPSHOTS);
        let mut sid = String::new();
        for i in 0..SNAPSHOTS {
            // Fresh random bytes each time: a snapshot of the same changes
            // would find its layer already stored.
            let (_, vm) = api.create_from(json!({})).await;
            let out = api
                .stream_exec(
                    &vm,
                    &format!(
                        "head -c {}M /dev/urandom > /var/tmp/blob && sync && echo wrote",
                        mib
                    ),
                )
                .await;
            assert!(out.contains("wrote"), "{out}");
            let t = Instant::now();
            let snap = api
                .post(&format!("/v1/vms/{vm}/snapshot?wait=true"), json!({}))
                .await;
            snapshot_time.push(t.elapsed());
            assert_eq!(snap["status"], "ready", "{snap}");
            let id = snap["snapshot_id"]
                .as_str()
                .expect("snapshot_id")
                .to_owned();
            api.delete(&vm).await;
            if i + 1 < SNAPSHOTS {
                api.delete_snapshot(&id).await;
            } else {
                sid = id;
            }
        }
        let p50 = percentile(&mut snapshot_time, 0.5);
        // A MiB's snapshot is the fixed cost (freeze, records), not a rate.
        if mib >= 100 {
            per_gib.push((label, p50.as_secs_f64() * 1024.0 / mib as f64));
        }
        row(
            &format!("snapshot of a VM that changed {label}"),
            &mut snapshot_time,
        );
        let mut restore = api.restore_samples(json!({"snapshot_id": sid})).await;
        row(&format!("restore ({label}) → first exec"), &mut restore);
        let p50 = percentile(&mut restore, 0.5);
        deltas.push((
            label,
            p50.as_secs_f64() * 1e3 - plain_p50.as_secs_f64() * 1e3,
        ));
        api.delete_snapshot(&sid).await;
    }
    println!();
    for (label, secs) in per_gib {
        let verdict = if secs <= 0.5 { "within" } else { "OVER" };
        println!(
            "snapshot p50 per GiB changed ({label}): {secs:.2} s ({verdict} the 0.5 s target)"
        );
    }
    println!();
    for (label, delta) in deltas {
        let verdict = if delta <= 5.0 { "within" } else { "OVER" };
        println!("restore p50 − plain p50 ({label}): {delta:+.2} ms ({verdict} the 5 ms target)");
    }
}
