//! paddock's figures, measured against a real server, with the kernel's
//! floor measured in the same run as the baseline.
//!
//! `cargo bench --bench sandbox` (needs root). Prints p50/p99 of:
//! - create → first exec output, 100 VMs one after another (arriving
//!   one every 100 ms, so the warm pool keeps up; back to back, so it
//!   empties; on a server without a pool) and at concurrency 8;
//! - exec round trip on a running VM (`/execute` and the streaming exec);
//! - host memory per idle VM with 200 running;
//! - baseline: `/bin/echo` through `unshare` with fresh namespaces (and
//!   `bwrap --unshare-all` when installed).

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{row, Api};
use serde_json::json;

fn time_command(program: &str, args: &[&str], n: usize) -> Option<Vec<Duration>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let ok = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
        v.push(t.elapsed());
    }
    Some(v)
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    common::install_crypto();
    let server = common::start_server(None);
    let api = Arc::new(Api {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        key: server.key.clone(),
    });
    // Warm-up: the first VM builds nothing, but pages in binaries.
    for _ in 0..5 {
        let (_, id) = api.create_then_exec().await;
        api.delete(&id).await;
    }

    println!(
        "paddock sandbox benchmark ({} cores)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "| measurement                                          |  p50 (ms) |  p99 (ms) |     n |"
    );
    println!(
        "|------------------------------------------------------|-----------|-----------|-------|"
    );

    let mut base = time_command(
        "unshare",
        &[
            "--fork",
            "--pid",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--mount-proc",
            "/bin/echo",
            "hi",
        ],
        100,
    )
    .expect("unshare runs");
    row(
        "baseline: unshare (pid,mnt,uts,ipc,net) /bin/echo",
        &mut base,
    );
    if let Some(mut b) = time_command(
        "bwrap",
        &[
            "--unshare-all",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "/bin/echo",
            "hi",
        ],
        100,
    ) {
        row("baseline: bwrap --unshare-all /bin/echo", &mut b);
    }

    // Creates that arrive one every 100 ms: the warm pool refills
    // between them, so each takes a sandbox that already runs.
    let mut warm = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (d, id) = api.create_then_exec().await;
        warm.push(d);
        api.delete(&id).await;
    }
    row("create -> first exec, warm pool (1 per 100 ms)", &mut warm);

    // Back to back: the pool empties after its first few and most
    // creates boot their sandbox.
    let mut seq = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..100 {
        let (d, id) = api.create_then_exec().await;
        seq.push(d);
        ids.push(id);
    }
    row("create -> first exec, back to back", &mut seq);
    for id in ids.drain(..) {
        api.delete(&id).await;
    }

    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let api = Arc::clone(&api);
        handles.push(tokio::spawn(async move {
            let mut v = Vec::new();
            for _ in 0..13 {
                v.push(api.create_then_exec().await);
            }
            v
        }));
    }
    let mut conc = Vec::new();
    for h in handles {
        for (d, id) in h.await.expect("worker") {
            conc.push(d);
            ids.push(id);
        }
    }
    let wall = started.elapsed();
    row("create -> first exec, concurrency 8", &mut conc);
    let conc_throughput = conc.len() as f64 / wall.as_secs_f64();
    for id in ids.drain(..) {
        api.delete(&id).await;
    }

    let vm = api.post("/v1/vms?wait=true", json!({})).await;
    let id = vm["vm_id"].as_str().expect("vm_id").to_owned();
    let session = vm["session_id"].as_str().expect("session").to_owned();
    let mut rt = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        let r = api
            .post(
                "/execute",
                json!({"command": "echo hi", "session_id": session}),
            )
            .await;
        rt.push(t.elapsed());
        assert_eq!(r["stdout"], "hi\n");
    }
    row("exec round trip (/execute, sh -c 'echo hi')", &mut rt);
    let mut rt2 = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        let out = api.stream_exec(&id, "echo hi").await;
        rt2.push(t.elapsed());
        assert!(out.contains("hi"));
    }
    row("exec round trip (streaming /v1/vms/{id}/exec)", &mut rt2);
    api.delete(&id).await;

    // Memory: 200 idle VMs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = mem_available_kib();
    for _ in 0..200 {
        let vm = api.post("/v1/vms?wait=true", json!({})).await;
        ids.push(vm["vm_id"].as_str().expect("vm_id").to_owned());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = mem_available_kib();
    let per_vm_host = (before.saturating_sub(after)) as f64 / 200.0 / 1024.0;
    let cgroup_total: u64 = ids
        .iter()
        .filter_map(|id| {
            let instance = paddock_runtime::container::instance_id(&server.data);
            std::fs::read_to_string(format!(
                "/sys/fs/cgroup/memory/paddock/{instance}/{id}/memory.usage_in_bytes"
            ))
            .or_else(|_| {
                std::fs::read_to_string(format!(
                    "/sys/fs/cgroup/paddock/{instance}/{id}/memory.current"
                ))
            })
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        })
        .sum();
    for id in ids.drain(..) {
        api.delete(&id).await;
    }

    // The same server without a pool: every create boots.
    let cold_server = common::start_server_with(None, &[("PADDOCK_SANDBOX__WARM_POOL", "0")]);
    let cold_api = Api {
        http: reqwest::Client::new(),
        base: cold_server.base.clone(),
        key: cold_server.key.clone(),
    };
    let mut cold = Vec::new();
    for i in 0..105 {
        let (d, id) = cold_api.create_then_exec().await;
        if i >= 5 {
            cold.push(d);
        }
        cold_api.delete(&id).await;
    }
    row("create -> first exec, no pool (each one boots)", &mut cold);
    drop(cold_server);

    println!();
    println!("| measurement                                          |     value |");
    println!("|------------------------------------------------------|-----------|");
    println!("| create -> first exec throughput at concurrency 8     | {conc_throughput:>6.1}/s |");
    println!("| host memory per idle VM, 200 running (MemAvailable)  | {per_vm_host:>5.2} MiB |");
    println!(
        "| memory charged to each idle VM's cgroup (mean)       | {:>5.2} MiB |",
        cgroup_total as f64 / 200.0 / 1048576.0
    );
}
