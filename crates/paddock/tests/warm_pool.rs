//! The warm pool: sandboxes of the default shape booted ahead of demand.
//! A create that fits takes one (its env staged), one that does not
//! boots its own, and no pooled sandbox outlives the server that made it:
//! a clean stop stops them, a crash leaves them to the next start.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::json;

fn pooled_server() -> Server {
    Server::start_with(&[("PADDOCK_SANDBOX__WARM_POOL", "2")])
}

/// The sandboxes on disk (run dirs), by VM id.
fn run_dirs(data: &Path) -> BTreeSet<String> {
    std::fs::read_dir(data.join("sandboxes"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `data` holds exactly `n` sandboxes whose ids are not in
/// `besides`; those ids.
fn wait_for_pool(data: &Path, n: usize, besides: &BTreeSet<String>) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pooled: BTreeSet<String> = run_dirs(data).difference(besides).cloned().collect();
        if pooled.len() == n {
            return pooled;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} pooled sandboxes, found {pooled:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_default_create_takes_a_prepared_sandbox_and_others_boot_their_own() {
    let server = pooled_server();
    let c = server.client();
    let data = server.data_dir();
    let pooled = wait_for_pool(&data, 2, &BTreeSet::new());

    let vm = c
        .create_vm(json!({"env": {"GREETING": "from the pool"}}))
        .await;
    let id = vm["vm_id"].as_str().expect("vm_id").to_owned();
    assert!(pooled.contains(&id), "{id} is not one of {pooled:?}");
    assert_eq!(vm["status"], "active", "{vm}");
    let (out, _, _) = c.exec(&id, "echo $GREETING; id -u; nproc").await;
    assert_eq!(out, "from the pool\n0\n1\n");
    // The VM is an ordinary one: it lists, and deletes.
    let listed = c.get("/v1/vms").await;
    assert!(listed.body.to_string().contains(&id), "{}", listed.body);

    // A VM of another size boots a sandbox of its own.
    let mut live = BTreeSet::from([id.clone()]);
    let refilled = wait_for_pool(&data, 2, &live);
    let big = c.create_vm(json!({"memory_mb": 768})).await;
    let big_id = big["vm_id"].as_str().expect("vm_id").to_owned();
    assert!(!refilled.contains(&big_id), "{big_id} came from the pool");
    let (out, _, _) = c.exec(&big_id, "echo booted").await;
    assert_eq!(out, "booted\n");
    live.insert(big_id.clone());
    assert_eq!(wait_for_pool(&data, 2, &live), refilled);

    for vm in [&id, &big_id] {
        let r = c.delete(&format!("/v1/vms/{vm}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(wait_for_pool(&data, 2, &BTreeSet::new()), refilled);
}

#[tokio::test]
async fn pooled_sandboxes_end_with_their_server() {
    let mut server = pooled_server();
    let data = server.data_dir();
    wait_for_pool(&data, 2, &BTreeSet::new());

    // A clean stop stops what no VM took, and waits until the trash has
    // reaped it: no process, no cgroup, nothing left in the trash.
    server.terminate();
    assert!(
        run_dirs(&data).is_empty(),
        "{:?}\n{}",
        run_dirs(&data),
        server.log()
    );
    assert_eq!(common::sandbox_processes(&data), 0);
    assert_eq!(common::sandbox_cgroups(&data), 0);
    let trash = std::fs::read_dir(data.join("trash"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(trash, 0, "the trash was left to the next start");

    // After a crash, the next start frees the old pool and makes a new one.
    server.restart();
    let before_crash = wait_for_pool(&data, 2, &BTreeSet::new());
    server.kill();
    server.restart();
    let after = wait_for_pool(&data, 2, &before_crash);
    assert_eq!(run_dirs(&data), after);
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let id = vm["vm_id"].as_str().expect("vm_id");
    assert!(after.contains(id), "{id} is not one of {after:?}");
    let (out, _, _) = c.exec(id, "echo ok").await;
    assert_eq!(out, "ok\n");
}
