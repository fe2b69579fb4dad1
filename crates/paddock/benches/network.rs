//! What networking costs, against real servers, with baselines measured
//! in the same run.
//!
//! `cargo bench --bench network` (needs root). Prints:
//! - create → first exec output with networking (a prepared namespace
//!   from the warm pool, its nftables rules, the resolver) next to the
//!   same on a server with networking off: the difference is what
//!   networking adds (target ≤ 10 ms);
//! - HTTP requests per second and p99 latency through a share (the share
//!   proxy) next to the same load sent straight to the VM's address
//!   (target: the proxy keeps ≥ 80% of direct throughput). The server in
//!   the VM is a small keep-alive asyncio responder, so the backend is not
//!   the bottleneck of either path.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{percentile, row, Api};
use serde_json::json;

const CREATES: usize = 40;
const CONCURRENCY: usize = 32;
const LOAD_SECONDS: u64 = 8;

/// An HTTP/1.1 keep-alive responder: `ok` to every request.
const RESPONDER: &str = r#"
import asyncio
async def handle(r, w):
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
            await w.drain()
    except Exception:
        w.close()
async def main():
    s = await asyncio.start_server(handle, "0.0.0.0", 8080, backlog=1024)
    async with s: await s.serve_forever()
asyncio.run(main())
"#;

/// Sequential create → first exec → delete. With `pause`, the host idles
/// that long between VMs, as between bursts (the warm pool refills).
async fn create_exec_samples(api: &Api, pause: Duration) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(CREATES);
    for _ in 0..CREATES {
        let (t, id) = api.create_then_exec().await;
        samples.push(t);
        api.delete(&id).await;
        tokio::time::sleep(pause).await;
    }
    samples
}

/// Sends GETs from `CONCURRENCY` workers for `LOAD_SECONDS`; requests per
/// second and every latency.
async fn load(client: reqwest::Client, url: String, host: Option<String>) -> (f64, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url, host, stop) =
            (client.clone(), url.clone(), host.clone(), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut req = client.get(&url);
                if let Some(h) = &host {
                    req = req.header("Host", h);
                }
                let r = req.send().await.expect("request");
                assert!(r.status().is_success(), "{}", r.status());
                r.bytes().await.expect("body");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(LOAD_SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let rps = all.len() as f64 / started.elapsed().as_secs_f64();
    (rps, all)
}

/// The same load from `wrk` (C, far lighter than an in-process client,
/// so the machine's cores go to the paths measured): requests/s, p50 and
/// p99 in ms. `None` when wrk is not installed.
fn wrk(url: &str, host: Option<&str>) -> Option<(f64, f64, f64)> {
    let mut cmd = std::process::Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{CONCURRENCY}"),
        &format!("-d{LOAD_SECONDS}s"),
        "--latency",
    ]);
    if let Some(h) = host {
        cmd.args(["-H", &format!("Host: {h}")]);
    }
    let out = cmd.arg(url).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ms = |v: &str| -> Option<f64> {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n / 1e3,
            "ms" => n,
            "s" => n * 1e3,
            _ => return None,
        })
    };
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
    };
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((rps, ms(&field("50%")?)?, ms(&field("99%")?)?))
}

/// One wrk comparison: the direct baseline, the proxied figures, and the
/// share of throughput the proxy keeps.
fn print_wrk_pair(title: &str, direct: Option<(f64, f64, f64)>, shared: Option<(f64, f64, f64)>) {
    let (Some(d), Some(p)) = (direct, shared) else {
        println!("\n({title}: wrk is not installed)");
        return;
    };
    println!("\n| path ({title}) | requests/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    for (name, (rps, p50, p99)) in [
        ("baseline: straight to the VM's address", d),
        ("through the share proxy", p),
    ] {
        println!("| {name} | {rps:.0} | {p50:.2} | {p99:.2} |");
    }
    println!(
        "\nthe proxy keeps {:.0}% of direct throughput (target ≥ 80%)",
        p.0 / d.0 * 100.0
    );
}

#[tokio::main]
async fn main() {
    common::install_crypto();
    let with_net = common::start_server(None);
    let without_net = common::start_server_with(None, &[("PADDOCK_NETWORK__ENABLED", "false")]);
    let api = |s: &common::Server| Api {
        http: reqwest::Client::new(),
        base: s.base.clone(),
        key: s.key.clone(),
    };
    let (net_api, bare_api) = (api(&with_net), api(&without_net));
    // Warm both servers and the page cache.
    create_exec_samples(&net_api, Duration::ZERO).await;
    create_exec_samples(&bare_api, Duration::ZERO).await;

    println!("| measurement | p50 ms | p99 ms | n |");
    println!("|---|---|---|---|");
    for (label, pause) in [
        ("back to back", Duration::ZERO),
        ("250 ms apart", Duration::from_millis(250)),
    ] {
        let mut bare = create_exec_samples(&bare_api, pause).await;
        row(
            &format!("baseline: create → first exec, no networking, {label}"),
            &mut bare,
        );
        let mut net = create_exec_samples(&net_api, pause).await;
        row(
            &format!("create → first exec, networking, {label}"),
            &mut net,
        );
        let added =
            percentile(&mut net, 0.5).as_secs_f64() - percentile(&mut bare, 0.5).as_secs_f64();
        println!(
            "|  networking adds at p50, {label} (target ≤ 10 ms) | {:.2} | | |",
            added * 1e3
        );
    }
    println!();

    // A VM serving HTTP, reached directly and through a public share.
    let vm = net_api
        .post(
            "/v1/vms?wait=true",
            json!({"share": {"port": 8080, "is_public": true}}),
        )
        .await;
    let id = vm["vm_id"].as_str().expect("vm_id").to_owned();
    let address = vm["ip_address"].as_str().expect("ip").to_owned();
    let share_host = vm["share"]["url"]
        .as_str()
        .and_then(|u| u.split("://").nth(1))
        .and_then(|r| r.split(['/', ':']).next())
        .expect("share host")
        .to_owned();
    net_api
        .stream_exec(
            &id,
            &format!("cat > /tmp/r.py <<'PY'\n{RESPONDER}\nPY\n(nohup python3 /tmp/r.py >/dev/null 2>&1 &); sleep 1; echo started"),
        )
        .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .expect("client");
    let direct_url = format!("http://{address}:8080/");
    let share_url = format!("http://127.0.0.1:{}/", with_net.share_port);
    // Warm both paths.
    load(client.clone(), direct_url.clone(), None).await;
    let (direct_rps, mut direct) = load(client.clone(), direct_url, None).await;
    let share_host_again = share_host.clone();
    let (share_rps, mut shared) = load(client.clone(), share_url, Some(share_host)).await;
    println!(
        "| path ({CONCURRENCY} concurrent, {LOAD_SECONDS} s) | requests/s | p50 ms | p99 ms |"
    );
    println!("|---|---|---|---|");
    for (name, rps, lat) in [
        (
            "baseline: straight to the VM's address",
            direct_rps,
            &mut direct,
        ),
        ("through the share proxy", share_rps, &mut shared),
    ] {
        println!(
            "| {name} | {rps:.0} | {:.2} | {:.2} |",
            percentile(lat, 0.5).as_secs_f64() * 1e3,
            percentile(lat, 0.99).as_secs_f64() * 1e3
        );
    }
    println!(
        "\nthe proxy keeps {:.0}% of direct throughput (target ≥ 80%)",
        share_rps / direct_rps * 100.0
    );
    let direct_wrk = wrk(&format!("http://{address}:8080/"), None);
    let share_wrk = wrk(
        &format!("http://127.0.0.1:{}/", with_net.share_port),
        Some(&share_host_again),
    );
    print_wrk_pair(
        &format!("wrk, {CONCURRENCY} connections, {LOAD_SECONDS} s, no-op responder"),
        direct_wrk,
        share_wrk,
    );
    // A typical app server: Python's threading http.server, 16 KiB file.
    net_api
        .stream_exec(
            &id,
            "mkdir -p /srv && head -c 16384 /dev/urandom > /srv/f && cd /srv && (nohup python3 -m http.server 8081 >/dev/null 2>&1 &); sleep 1; echo started",
        )
        .await;
    let typical = net_api
        .post(
            &format!("/v1/vms/{id}/shares"),
            json!({"port": 8081, "is_public": true}),
        )
        .await;
    let typical_host = typical["url"]
        .as_str()
        .and_then(|u| u.split("://").nth(1))
        .and_then(|r| r.split(['/', ':']).next())
        .expect("share host")
        .to_owned();
    let d = wrk(&format!("http://{address}:8081/f"), None);
    let p = wrk(
        &format!("http://127.0.0.1:{}/f", with_net.share_port),
        Some(&typical_host),
    );
    print_wrk_pair("wrk, Python http.server, 16 KiB file", d, p);
    net_api.delete(&id).await;
}
