//! Two nodes over one PostgreSQL: what the shared store and the hop to
//! another node cost. Not a test; `cargo bench --bench cluster` (root,
//! with Debian's postgresql installed: the bench starts a throwaway
//! cluster through `scripts/postgres.sh`). Prints, in one run:
//! - exec (`echo`) p50/p99 in a VM through its own node, through the
//!   other node (the agent tunnelled through its node), and on a
//!   single-process server on SQLite as the baseline;
//! - create→first exec on one node over PostgreSQL, and through an API
//!   replica (which places it on a node and reaches the first exec through
//!   that node's tunnel), next to the SQLite baseline;
//! - create→exec→delete cycles per second with 4 clients on one node, and
//!   with 2 clients on each of two nodes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{arg, row, start_server_prepared, start_server_with, Api, Server};
use serde_json::json;

fn api(server: &Server) -> Api {
    Api {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        key: server.key.clone(),
    }
}

/// `n` runs of `echo` in `vm` through `api`.
async fn execs(api: &Api, vm: &str, n: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let out = api.stream_exec(vm, "echo ready").await;
        assert!(out.contains("ready"), "{out}");
        samples.push(t.elapsed());
    }
    samples
}

async fn creates(api: &Api, n: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let (took, id) = api.create_to_first_exec(json!({"memory_mb": 128})).await;
        samples.push(took);
        api.delete(&id).await;
    }
    samples
}

/// Cycles per second of `clients`, each running create→exec→delete for
/// `window`.
async fn churn(clients: Vec<Api>, window: Duration) -> f64 {
    let started = Instant::now();
    let tasks = clients.into_iter().map(|api| async move {
        let mut done = 0u32;
        while started.elapsed() < window {
            let (_, id) = api.create_to_first_exec(json!({"memory_mb": 128})).await;
            api.delete(&id).await;
            done += 1;
        }
        done
    });
    let total: u32 = futures::future::join_all(tasks).await.into_iter().sum();
    f64::from(total) / started.elapsed().as_secs_f64()
}

struct Postgres {
    admin: String,
    dir: String,
}

impl Postgres {
    fn start() -> Self {
        let out = std::process::Command::new("scripts/postgres.sh")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .arg("start")
            .output()
            .expect("scripts/postgres.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let (admin, dir) = line.split_once(' ').expect("URL and dir");
        Self {
            admin: admin.to_owned(),
            dir: dir.to_owned(),
        }
    }

    fn database(&self, name: &str) -> String {
        let ok = std::process::Command::new("psql")
            .args([
                "-X",
                "-q",
                &self.admin,
                "-c",
                &format!("CREATE DATABASE {name}"),
            ])
            .status()
            .expect("psql");
        assert!(ok.success());
        let (server, _) = self.admin.rsplit_once('/').expect("admin URL");
        format!("{server}/{name}")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("scripts/postgres.sh")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .args(["stop", &self.dir])
            .status();
    }
}

#[tokio::main]
async fn main() {
    common::install_crypto();
    let n = arg("--count", 200);
    let window = Duration::from_secs(arg("--seconds", 10) as u64);
    const CONFIG: &str = "[ssh]\nenabled = false\n[sandbox]\nwarm_pool = 0\n";

    println!(
        "## cluster: {n} execs, {} creates per row; churn over {} s",
        n / 4,
        window.as_secs()
    );
    println!("| what | p50 ms | p99 ms | n |");
    println!("|---|---:|---:|---:|");

    // The baseline: one process, SQLite.
    {
        let single = start_server_with(Some(CONFIG), &[]);
        let s = api(&single);
        let (_, vm) = s.create_to_first_exec(json!({"memory_mb": 128})).await;
        row("exec, one process (SQLite)", &mut execs(&s, &vm, n).await);
        row(
            "create→first exec, one process (SQLite)",
            &mut creates(&s, n / 4).await,
        );
    }

    let pg = Postgres::start();
    let store = pg.database("bench_cluster");
    let a = start_server_with(Some(CONFIG), &[("PADDOCK_STORE", &store)]);
    let b = start_server_prepared(Some(CONFIG), &[("PADDOCK_STORE", &store)], |data: &Path| {
        std::fs::create_dir_all(data).expect("data dir");
        for key in ["master.key", "admin.key"] {
            std::fs::copy(a.data.join(key), data.join(key)).expect(key);
        }
    });
    let replica_config = format!("{CONFIG}[cluster]\nrole = \"api\"\n");
    let r = start_server_prepared(
        Some(&replica_config),
        &[("PADDOCK_STORE", &store)],
        |data: &Path| {
            std::fs::create_dir_all(data).expect("data dir");
            for key in ["master.key", "admin.key"] {
                std::fs::copy(a.data.join(key), data.join(key)).expect(key);
            }
        },
    );
    let (via_a, via_b) = (api(&a), api(&b));
    let (_, on_b) = via_b.create_to_first_exec(json!({"memory_mb": 128})).await;
    row(
        "exec, through its own node (PostgreSQL)",
        &mut execs(&via_b, &on_b, n).await,
    );
    row(
        "exec, through the other node (tunnel)",
        &mut execs(&via_a, &on_b, n).await,
    );
    row(
        "create→first exec, one node (PostgreSQL)",
        &mut creates(&via_a, n / 4).await,
    );
    row(
        "create→first exec, through an API replica (placed on a node)",
        &mut creates(&api(&r), n / 4).await,
    );
    via_b.delete(&on_b).await;

    let one = churn((0..4).map(|_| api(&a)).collect(), window).await;
    let two = churn(
        (0..4)
            .map(|i| if i % 2 == 0 { api(&a) } else { api(&b) })
            .collect(),
        window,
    )
    .await;
    println!();
    println!("| churn (create→exec→delete, 4 clients) | cycles/s |");
    println!("|---|---:|");
    println!("| one node | {one:.1} |");
    println!("| two nodes (2 clients each) | {two:.1} |");
}
