//! The API under hostile and bursty load. Not a test; `cargo bench --bench
//! http_load` (root). Two figures, each beside its own baseline from the
//! same run:
//!
//! 1. `/healthz` latency (p50, p99) with no other client, then while
//!    `--slow` (1000) clients hold connections open by sending a request
//!    head one byte every 500 ms (they are cut at the head timeout and
//!    reconnect).
//! 2. The server's RSS before, at the peak of, and 10 s after `--execs`
//!    (1000) concurrent streaming execs on one VM, each printing 64 KiB
//!    from one process (the shell's printf: a sandbox runs at most 1024).

mod common;

use std::time::{Duration, Instant};

use common::{arg, percentile, start_server, status_mib, Api};
use serde_json::json;
use tokio::io::AsyncWriteExt;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `n` sequential `/healthz` calls on one kept-alive connection.
async fn healthz_samples(http: &reqwest::Client, base: &str, n: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz");
        assert!(r.status().is_success());
        let _ = r.bytes().await;
        samples.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    samples
}

/// A client that dribbles a request head forever, reconnecting when cut.
async fn slow_client(addr: String, stop: tokio::sync::watch::Receiver<bool>) {
    let head =
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    while !*stop.borrow() {
        let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        for b in head.iter().cycle() {
            if *stop.borrow() || s.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

#[tokio::main]
async fn main() {
    common::install_crypto();
    raise_fd_limit();
    let slow = arg("--slow", 1000);
    let execs = arg("--execs", 1000);
    let server = start_server(None);
    let pid = server.child.id();
    let addr = server.base.trim_start_matches("http://").to_owned();
    let http = reqwest::Client::new();

    println!("# /healthz with {slow} slow clients (a head byte every 500 ms)");
    let mut quiet = healthz_samples(&http, &server.base, 300).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let clients: Vec<_> = (0..slow)
        .map(|_| tokio::spawn(slow_client(addr.clone(), stop_rx.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut loaded = healthz_samples(&http, &server.base, 300).await;
    let _ = stop_tx.send(true);
    for c in clients {
        c.abort();
    }
    println!("| clients | p50 ms | p99 ms |");
    println!("|---|---|---|");
    println!(
        "| none (baseline) | {:.2} | {:.2} |",
        ms(percentile(&mut quiet, 0.5)),
        ms(percentile(&mut quiet, 0.99))
    );
    println!(
        "| {slow} slow | {:.2} | {:.2} |",
        ms(percentile(&mut loaded, 0.5)),
        ms(percentile(&mut loaded, 0.99))
    );

    println!("\n# server RSS around {execs} concurrent execs (64 KiB of output each)");
    let api = Api {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client"),
        base: server.base.clone(),
        key: server.key.clone(),
    };
    let vm = api.post("/v1/vms?wait=true", json!({})).await;
    let id = vm["vm_id"].as_str().expect("vm_id").to_owned();
    api.stream_exec(&id, "echo warm").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = status_mib(pid, "VmRSS:");
    let t = Instant::now();
    let runs: Vec<_> = (0..execs)
        .map(|_| {
            let (http, base, key, id) = (
                api.http.clone(),
                api.base.clone(),
                api.key.clone(),
                id.clone(),
            );
            tokio::spawn(async move {
                let r = http
                    .post(format!("{base}/v1/vms/{id}/exec"))
                    .header("X-API-Key", key)
                    .json(&json!({"command": "printf '%065536d' 0"}))
                    .send()
                    .await;
                match r {
                    Ok(r) => r.bytes().await.map(|b| b.len()).unwrap_or(0),
                    Err(_) => 0,
                }
            })
        })
        .collect();
    let mut delivered = 0usize;
    let mut complete = 0usize;
    for r in runs {
        let n = r.await.unwrap_or(0);
        delivered += n;
        complete += usize::from(n >= 65_536);
    }
    let burst = t.elapsed();
    let peak = status_mib(pid, "VmHWM:");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = status_mib(pid, "VmRSS:");
    println!(
        "{complete} of {execs} execs delivered all their output ({:.0} MiB) in {:.1} s",
        delivered as f64 / 1048576.0,
        burst.as_secs_f64()
    );
    println!("| RSS before (baseline) | peak | 10 s after | after / before |");
    println!("|---|---|---|---|");
    println!(
        "| {before:.0} MiB | {peak:.0} MiB | {after:.0} MiB | {:.2}× |",
        after / before.max(1.0)
    );
}
