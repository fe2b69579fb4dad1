//! Image figures against a real registry on loopback, with the usual
//! tools measured in the same run as the baseline.
//!
//! `cargo bench --bench images` (root; Debian's docker-registry,
//! busybox-static, and for the baseline skopeo and umoci). Prints:
//! - pull + unpack of a ~128 MiB two-layer image by paddock, next to
//!   `skopeo copy` + `umoci unpack` of the same image;
//! - the server's peak memory before and after that pull;
//! - create -> first exec output from an image already pulled.

mod common;

#[path = "../tests/common/registry.rs"]
mod registry;
// registry.rs names the token service for registries that use one.
#[path = "../tests/common/token.rs"]
mod token;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

/// `registry` (shared with the tests) finds it here.
pub use common::install_crypto;

/// Peak and current resident memory of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p99(v: &mut [Duration]) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * 0.99).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    common::install_crypto();
    let reg = registry::Registry::start();
    // 128 MiB of poorly compressible bytes in a gzip layer, over busybox.
    let mut data = vec![0u8; 128 * 1024 * 1024];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let big = registry::Tar::new()
        .file("data/blob.bin", 0o644, &data)
        .bytes();
    drop(data);
    let base = registry::busybox_base().bytes();
    let reference = reg.reference("bench/big:v1");
    let config = registry::config_with_diff_ids(&["PATH=/bin"], &[&base, &big]);
    registry::push(
        &reference,
        vec![
            (registry::gzip(&base), registry::GZIP),
            (registry::gzip(&big), registry::GZIP),
        ],
        config,
    )
    .await;
    drop(big);

    println!(
        "paddock image benchmark ({} cores)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("| measurement                                             |    p50 (ms) |    p99 (ms) |  n |");
    println!("|---------------------------------------------------------|-------------|-------------|----|");

    let http = reqwest::Client::new();
    let mut pulls = Vec::new();
    let mut peaks = Vec::new();
    for _ in 0..3 {
        let server = common::start_server(Some(&reg.paddock_config()));
        let (before, _) = memory_mib(server.child.id());
        let t = Instant::now();
        let r: serde_json::Value = http
            .post(format!("{}/v1/images?wait=true", server.base))
            .header("X-API-Key", &server.key)
            .json(&json!({"reference": reference}))
            .send()
            .await
            .expect("pull")
            .json()
            .await
            .expect("json");
        pulls.push(t.elapsed());
        assert_eq!(r["status"], "done", "{r}");
        let (after, _) = memory_mib(server.child.id());
        peaks.push((before, after));
    }
    let (mut p1, mut p2) = (pulls.clone(), pulls.clone());
    println!(
        "| paddock: pull + verify + unpack (~130 MiB, 2 layers)    | {:>11.1} | {:>11.1} | {:>2} |",
        ms(median(&mut p1)),
        ms(p99(&mut p2)),
        pulls.len()
    );

    let have_tools = Command::new("skopeo").arg("--version").output().is_ok()
        && Command::new("umoci").arg("--version").output().is_ok();
    if have_tools {
        let mut base = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let layout = dir.path().join("layout");
            let t = Instant::now();
            let run = |cmd: &mut Command| {
                let out = cmd.output().expect("run");
                assert!(
                    out.status.success(),
                    "{cmd:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            run(Command::new("skopeo").args([
                "--insecure-policy",
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{reference}"),
                &format!("oci:{}:v1", layout.display()),
            ]));
            run(Command::new("umoci").args([
                "unpack",
                "--image",
                &format!("{}:v1", layout.display()),
                &dir.path().join("bundle").display().to_string(),
            ]));
            base.push(t.elapsed());
        }
        let (mut b1, mut b2) = (base.clone(), base.clone());
        println!("| baseline: skopeo copy + umoci unpack (same image)       | {:>11.1} | {:>11.1} | {:>2} |", ms(median(&mut b1)), ms(p99(&mut b2)), base.len());
    } else {
        println!("| baseline: skopeo copy + umoci unpack                    |  (skopeo or umoci not installed)  |");
    }

    let server = common::start_server(Some(&reg.paddock_config()));
    let small = reg.reference("bench/small:v1");
    registry::push(
        &small,
        vec![(
            registry::gzip(&registry::busybox_base().bytes()),
            registry::GZIP,
        )],
        registry::config_json(&["PATH=/bin"], "", ""),
    )
    .await;
    http.post(format!("{}/v1/images?wait=true", server.base))
        .header("X-API-Key", &server.key)
        .json(&json!({"reference": small}))
        .send()
        .await
        .expect("pull");
    let mut create = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let vm: serde_json::Value = http
            .post(format!("{}/v1/vms?wait=true", server.base))
            .header("X-API-Key", &server.key)
            .json(&json!({"image_variant": small}))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        let id = vm["vm_id"].as_str().expect("vm_id").to_owned();
        let out = http
            .post(format!("{}/v1/vms/{id}/exec", server.base))
            .header("X-API-Key", &server.key)
            .json(&json!({"command": "echo ready"}))
            .send()
            .await
            .expect("exec")
            .text()
            .await
            .expect("text");
        create.push(t.elapsed());
        assert!(out.contains("ready"), "{out}");
        http.delete(format!("{}/v1/vms/{id}", server.base))
            .header("X-API-Key", &server.key)
            .send()
            .await
            .expect("delete");
    }
    let (mut c1, mut c2) = (create.clone(), create.clone());
    println!(
        "| create -> first exec output, image already pulled       | {:>11.2} | {:>11.2} | {:>2} |",
        ms(median(&mut c1)),
        ms(p99(&mut c2)),
        create.len()
    );

    let dockerfile = format!(
        "FROM {small}\nENV A=1\nRUN echo built > /built && mkdir -p /app\nCOPY <<EOF /app/x.sh\necho hi\nEOF\nRUN cat /built /app/x.sh > /app/both\n"
    );
    let build = || {
        let (http, base, key, dockerfile) = (
            http.clone(),
            server.base.clone(),
            server.key.clone(),
            dockerfile.clone(),
        );
        async move {
            let t = Instant::now();
            let log = http
                .post(format!("{base}/v1/images/build"))
                .header("X-API-Key", &key)
                .json(&json!({"dockerfile": dockerfile, "tag": "bench/built:v1"}))
                .send()
                .await
                .expect("build")
                .text()
                .await
                .expect("log");
            let d = t.elapsed();
            assert!(log.contains("\"type\":\"done\""), "{log}");
            d
        }
    };
    let first = build().await;
    let mut cached: Vec<Duration> = Vec::new();
    for _ in 0..5 {
        cached.push(build().await);
    }
    let (mut r1, mut r2) = (cached.clone(), cached.clone());
    println!(
        "| build: 2 RUN + 1 COPY, first build                      | {:>11.1} |             |  1 |",
        ms(first)
    );
    println!(
        "| build: same Dockerfile again (every layer cached)       | {:>11.1} | {:>11.1} | {:>2} |",
        ms(median(&mut r1)),
        ms(p99(&mut r2)),
        cached.len()
    );
    println!();
    for (i, (before, after)) in peaks.iter().enumerate() {
        println!("server peak RSS, pull {}: {before:.1} MiB before, {after:.1} MiB after (the image is ~130 MiB)", i + 1);
    }
}
