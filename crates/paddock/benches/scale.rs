//! Density: how create, memory and the server hold up as live sandboxes
//! pile up, then churn and bulk delete. Not a test; `cargo bench --bench
//! scale -- --count 5000` (root). Creates `--count` 128 MiB VMs (not the
//! warm pool's shape, so each one boots) one after another with
//! networking on, printing every `--step` (500) the create→first exec
//! p50/p99 of that step, host memory per VM, the server's RSS and open
//! files; a delete's p50/p99 one at a time (40 VMs made and deleted after
//! the first step and again at the end); then create→exec→delete cycles
//! per second with 4 clients, and the time to delete every VM (half 8 at
//! a time, half in one bulk call). The `bwrap --unshare-all` floor is
//! measured first, in the same run. `PADDOCK_BENCH_BIN` runs another
//! build's server (a baseline commit) under the same bench.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{arg, percentile, status_mib, Api};
use serde_json::json;

fn meminfo_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// All CPUs' time so far and the part of it idle (or waiting on I/O),
/// in clock ticks, from `/proc/stat`.
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (fields.iter().sum(), idle)
}

/// How busy the host is over a second in which the bench asks nothing
/// of paddock: the share of the CPUs that the idle sandboxes, the
/// server's background work and whatever else runs on the host (its
/// init, kernel threads) take from every other figure in the row.
async fn host_busy_at_rest() -> f64 {
    let (total, idle) = cpu_ticks();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (total_after, idle_after) = cpu_ticks();
    let elapsed = total_after.saturating_sub(total).max(1);
    100.0 * (1.0 - idle_after.saturating_sub(idle) as f64 / elapsed as f64)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Api {
    /// Creates a 128 MiB VM and runs `echo` in it: the time, and its id;
    /// the server's refusal (a host limit) when it makes none.
    async fn try_boot_then_exec(&self) -> Result<(Duration, String), String> {
        let t = Instant::now();
        let vm = self
            .post("/v1/vms?wait=true", json!({"memory_mb": 128}))
            .await;
        let Some(id) = vm["vm_id"].as_str().map(str::to_owned) else {
            return Err(vm.to_string());
        };
        let out = self.stream_exec(&id, "echo ready").await;
        assert!(out.contains("ready"), "{vm} {out}");
        Ok((t.elapsed(), id))
    }

    async fn boot_then_exec(&self) -> (Duration, String) {
        self.try_boot_then_exec().await.expect("a VM")
    }

    /// Creates `n` VMs beside the `live` ones, then deletes them one at a
    /// time, each after the last returned: the p50 and p99 of a delete.
    async fn sequential_deletes(&self, n: usize, live: usize) -> String {
        let mut made = Vec::with_capacity(n);
        for _ in 0..n {
            made.push(self.boot_then_exec().await.1);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut took = Vec::with_capacity(n);
        for id in made {
            let t = Instant::now();
            self.delete(&id).await;
            took.push(t.elapsed());
        }
        format!(
            "one delete at a time, {live} live: p50 {:.1} ms, p99 {:.1} ms (n={n})",
            ms(percentile(&mut took, 0.5)),
            ms(percentile(&mut took, 0.99)),
        )
    }
}

/// How many deletes the one-at-a-time figure times.
const SEQUENTIAL_DELETES: usize = 40;

#[tokio::main]
async fn main() {
    common::install_crypto();
    let count = arg("--count", 5000);
    let step = arg("--step", 500).max(1);
    let bwrap = (0..50)
        .filter_map(|_| {
            let t = Instant::now();
            std::process::Command::new("bwrap")
                .args(["--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev"])
                .args(["--proc", "/proc", "/bin/echo", "hi"])
                .stdout(std::process::Stdio::null())
                .status()
                .ok()
                .filter(|s| s.success())
                .map(|_| t.elapsed())
        })
        .collect::<Vec<_>>();
    let server = common::start_server_with(None, &[("PADDOCK_NETWORK__SUBNET", "10.60.0.0/16")]);
    let pid = server.child.id();
    let api = Arc::new(Api {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        key: server.key.clone(),
    });
    println!("paddock scale benchmark: {count} VMs of 128 MiB, networking on");
    if !bwrap.is_empty() {
        let mut b = bwrap;
        println!(
            "baseline: bwrap --unshare-all /bin/echo p50 {:.2} ms\n",
            ms(percentile(&mut b, 0.5))
        );
    }
    println!("| live VMs | create p50 (ms) | create p99 (ms) | host MiB/VM | server RSS (MiB) | server fds | host busy at rest (%) |");
    println!("|---|---|---|---|---|---|---|");
    let available_before = meminfo_kib("MemAvailable:");
    let mut ids = Vec::with_capacity(count);
    let mut first_step_p50 = None;
    let mut last_step_p50 = Duration::ZERO;
    let mut refused = None;
    let mut deletes_at_start = None;
    while ids.len() < count && refused.is_none() {
        let mut samples = Vec::with_capacity(step);
        for _ in 0..step.min(count - ids.len()) {
            match api.try_boot_then_exec().await {
                Ok((d, id)) => {
                    samples.push(d);
                    ids.push(id);
                }
                Err(why) => {
                    refused = Some(why);
                    break;
                }
            }
        }
        if samples.is_empty() {
            break;
        }
        let p50 = percentile(&mut samples, 0.5);
        first_step_p50.get_or_insert(p50);
        last_step_p50 = p50;
        let used = available_before.saturating_sub(meminfo_kib("MemAvailable:"));
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.1} | {} | {:.1} |",
            ids.len(),
            ms(p50),
            ms(percentile(&mut samples, 0.99)),
            used as f64 / 1024.0 / ids.len() as f64,
            rss_mib(pid),
            open_fds(pid),
            host_busy_at_rest().await,
        );
        if deletes_at_start.is_none() {
            deletes_at_start = Some(api.sequential_deletes(SEQUENTIAL_DELETES, ids.len()).await);
        }
    }
    if let Some(why) = &refused {
        println!("\nrefused at {} live VMs: {why}", ids.len());
        // Room for the churn's four clients.
        for id in ids.split_off(ids.len().saturating_sub(8)) {
            api.delete(&id).await;
        }
    }
    let count = ids.len();
    if let Some(first) = first_step_p50 {
        println!(
            "\ncreate p50, last step over first: {:.2}x",
            last_step_p50.as_secs_f64() / first.as_secs_f64()
        );
    }

    if let Some(start) = deletes_at_start {
        println!("{start}");
        println!(
            "{}",
            api.sequential_deletes(SEQUENTIAL_DELETES, count).await
        );
    }

    // Churn: create → exec → delete, 4 clients, for 10 s.
    let until = Instant::now() + Duration::from_secs(10);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let api = Arc::clone(&api);
        clients.push(tokio::spawn(async move {
            let mut cycles = 0u64;
            while Instant::now() < until {
                let (_, id) = api.boot_then_exec().await;
                api.delete(&id).await;
                cycles += 1;
            }
            cycles
        }));
    }
    let mut cycles = 0;
    for c in clients {
        cycles += c.await.expect("client");
    }
    println!(
        "churn: {:.1} create→exec→delete cycles/s (4 clients, {count} live)",
        cycles as f64 / started.elapsed().as_secs_f64()
    );

    // Deleting them: half one call per VM, 8 at a time (the way a
    // client without a bulk call does it, and the baseline), then the
    // other half in one bulk call.
    let half = ids.len() / 2;
    let rest = ids.split_off(half);
    let one_by_one = ids.len();
    let started = Instant::now();
    let deletes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let queue = Arc::new(std::sync::Mutex::new(ids));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (api, queue, deletes) = (Arc::clone(&api), Arc::clone(&queue), Arc::clone(&deletes));
        workers.push(tokio::spawn(async move {
            loop {
                let Some(id) = queue.lock().expect("queue").pop() else {
                    return;
                };
                let t = Instant::now();
                api.delete(&id).await;
                deletes.lock().expect("deletes").push(t.elapsed());
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let took = started.elapsed();
    let mut d = deletes.lock().expect("deletes").clone();
    println!(
        "delete one call per VM, 8 at a time: {one_by_one} VMs in {:.1} s ({:.1} ms per VM; one delete p50 {:.1} ms, p99 {:.1} ms)",
        took.as_secs_f64(),
        ms(took) / one_by_one.max(1) as f64,
        ms(percentile(&mut d, 0.5)),
        ms(percentile(&mut d, 0.99)),
    );
    let started = Instant::now();
    let done = api
        .post("/v1/vms/bulk-delete", serde_json::json!({ "vm_ids": rest }))
        .await;
    let took = started.elapsed();
    assert_eq!(done["deleted"], rest.len(), "{done}");
    println!(
        "bulk delete, one call (POST /v1/vms/bulk-delete): {} VMs in {:.1} s ({:.1} ms per VM)",
        rest.len(),
        took.as_secs_f64(),
        ms(took) / rest.len().max(1) as f64,
    );
}
