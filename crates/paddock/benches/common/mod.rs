//! The real server every benchmark measures: release `paddock serve` on a
//! free loopback port with a temporary data dir (and an optional config),
//! killed and purged of its sandboxes when dropped, and the HTTP calls and
//! figures the benches share (each uses part of them).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Server {
    _dir: tempfile::TempDir,
    pub data: PathBuf,
    pub base: String,
    pub key: String,
    pub child: Child,
    /// The share proxy's port.
    pub share_port: u16,
    env: Vec<(String, String)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The CLI purges sandboxes, mounts and this server's network.
        let _ = Command::new(paddock_bin())
            .args(["purge", "--data-dir"])
            .arg(&self.data)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The server binary: this build's, or `PADDOCK_BENCH_BIN` (another
/// build, to measure a baseline commit with the same bench in one run).
pub fn paddock_bin() -> PathBuf {
    std::env::var_os("PADDOCK_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_paddock")))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// reqwest needs the process's TLS crypto provider installed first.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn start_server(config_toml: Option<&str>) -> Server {
    start_server_with(config_toml, &[])
}

/// A server with extra environment (config overrides). Each gets its own
/// bridge, subnet and proxy ports, so two can run in one bench.
pub fn start_server_with(config_toml: Option<&str>, extra_env: &[(&str, &str)]) -> Server {
    start_server_prepared(config_toml, extra_env, |_| {})
}

/// [`start_server_with`], once `prepare` has filled the data dir (another
/// node's keys).
pub fn start_server_prepared(
    config_toml: Option<&str>,
    extra_env: &[(&str, &str)],
    prepare: impl FnOnce(&std::path::Path),
) -> Server {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64;
    let share_port = free_port();
    let mut env: Vec<(String, String)> = vec![
        ("PADDOCK_NETWORK__BRIDGE".into(), format!("pbench{n}")),
        ("PADDOCK_NETWORK__SUBNET".into(), format!("10.62.{n}.0/24")),
        (
            "PADDOCK_SHARES__LISTEN".into(),
            format!("127.0.0.1:{share_port}"),
        ),
        (
            "PADDOCK_SHARES__TLS_LISTEN".into(),
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "PADDOCK_SSH__LISTEN".into(),
            format!("127.0.0.1:{}", free_port()),
        ),
    ];
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let dir = tempfile::Builder::new()
        .prefix("pdkbench")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let data = dir.path().join("data");
    prepare(&data);
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut cmd = Command::new(paddock_bin());
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(&data);
    if let Some(toml) = config_toml {
        let config = dir.path().join("paddock.toml");
        std::fs::write(&config, toml).expect("config");
        cmd.arg("--config").arg(config);
    }
    let child = cmd
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start paddock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let key = std::fs::read_to_string(data.join("admin.key"))
        .expect("admin.key")
        .trim()
        .to_owned();
    Server {
        _dir: dir,
        data,
        base: format!("http://127.0.0.1:{port}"),
        key,
        child,
        share_port,
        env,
    }
}

pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx.min(samples.len() - 1)]
}

pub fn row(name: &str, samples: &mut [Duration]) {
    let p50 = percentile(samples, 0.50);
    let p99 = percentile(samples, 0.99);
    println!(
        "| {name:<52} | {:>9.2} | {:>9.2} | {:>5} |",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        samples.len()
    );
}

/// The VM API, as the benches call it.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub key: String,
}

impl Api {
    /// `POST /v1/vms?wait=true` with `body`, then `echo ready` in the VM:
    /// the time to that first output, and the VM's id.
    pub async fn create_to_first_exec(&self, body: Value) -> (Duration, String) {
        let t = Instant::now();
        let vm = self.post("/v1/vms?wait=true", body).await;
        let id = vm["vm_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{vm}"))
            .to_owned();
        let out = self.stream_exec(&id, "echo ready").await;
        assert!(out.contains("ready"), "{vm} {out}");
        (t.elapsed(), id)
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}{}", self.base, path))
            .header("X-API-Key", &self.key)
            .json(&body)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json")
    }

    pub async fn stream_exec(&self, vm: &str, cmd: &str) -> String {
        self.http
            .post(format!("{}/v1/vms/{vm}/exec", self.base))
            .header("X-API-Key", &self.key)
            .json(&json!({"command": cmd}))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("text")
    }

    pub async fn delete(&self, vm: &str) {
        self.http
            .delete(format!("{}/v1/vms/{vm}", self.base))
            .header("X-API-Key", &self.key)
            .send()
            .await
            .expect("delete");
    }

    /// Create a VM and run `echo` in it; the time until its output arrived.
    pub async fn create_then_exec(&self) -> (Duration, String) {
        let t = Instant::now();
        let vm = self.post("/v1/vms?wait=true", json!({})).await;
        let id = vm["vm_id"].as_str().expect("vm_id").to_owned();
        let out = self.stream_exec(&id, "echo ready").await;
        let elapsed = t.elapsed();
        assert!(out.contains("ready"), "{out}");
        (elapsed, id)
    }
}

/// A process's peak resident memory (`VmHWM`), in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// A memory field of a process's `/proc/PID/status` (`VmRSS:`), in MiB.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// The number after `name` on the bench's command line, else `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
