//! `paddock migrate-store`: a stopped SQLite installation moves to
//! PostgreSQL, verified by counts and checksums, and its next start serves
//! the same records from there and adopts the sandboxes still running.
//! Runs when the suite has a PostgreSQL (`PADDOCK_TEST_POSTGRES`).

mod common;

use common::{bin, fresh_postgres_database, Server};
use serde_json::json;

#[tokio::test(flavor = "current_thread")]
async fn a_sqlite_installation_moves_to_postgres() {
    let Ok(admin) = std::env::var("PADDOCK_TEST_POSTGRES") else {
        eprintln!("PADDOCK_TEST_POSTGRES is not set: no PostgreSQL to move to");
        return;
    };
    let mut server = Server::start_on_sqlite("[ssh]\nenabled = false\n");
    let c = server.client();
    let kept = c
        .create_vm(json!({"memory_mb": 128, "metadata": {"k": "v"}}))
        .await;
    let kept = kept["vm_id"].as_str().expect("vm_id").to_owned();
    let gone = c.create_vm(json!({"memory_mb": 128})).await;
    let gone = gone["vm_id"].as_str().expect("vm_id").to_owned();
    c.exec(&kept, "echo before > /root/marker").await;
    assert_eq!(c.delete(&format!("/v1/vms/{gone}")).await.status, 200);
    let other_key = server.other_account_key();
    let before = c.get("/v1/vms").await.body;
    server.terminate();

    let target = fresh_postgres_database(&admin);
    let migrate = |to: &str| {
        std::process::Command::new(bin())
            .args(["migrate-store", "--data-dir"])
            .arg(server.data_dir())
            .args(["--to", to])
            .output()
            .expect("paddock migrate-store")
    };
    let moved = migrate(&target);
    let out = String::from_utf8_lossy(&moved.stdout);
    assert!(
        moved.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    assert!(out.contains("counts and checksums match"), "{out}");
    let vms_line = out
        .lines()
        .find(|l| l.starts_with("vms "))
        .expect("a line for vms");
    assert!(vms_line.contains(" 2 rows"), "{vms_line}");
    // A second move into the same (now full) store is refused.
    let again = migrate(&target);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("must be empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Nor does the server itself ever serve the SQLite again: it moved.
    std::fs::rename(
        server.data_dir().join("paddock.db"),
        server.data_dir().join("paddock.db.moved"),
    )
    .expect("move the old database aside");

    // The next start (no --store) serves from PostgreSQL: the same VMs,
    // the running one adopted with its files, the keys still good.
    server.restart();
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("records open") && l.contains("Postgres")),
        "{log}"
    );
    let c = server.client();
    assert_eq!(c.get("/v1/vms").await.body, before);
    let (out, _, exit) = c.exec(&kept, "cat /root/marker").await;
    assert_eq!((out.as_str(), &exit["exit_code"]), ("before\n", &json!(0)));
    let other = c.with_key(Some(&other_key));
    assert_eq!(other.get("/v1/vms").await.status, 200);
    assert_eq!(other.get(&format!("/v1/vms/{kept}")).await.status, 404);
    // New records go on after the copied ones.
    let next = c.create_vm(json!({"memory_mb": 128})).await;
    let listed = c.get("/v1/vms").await.body;
    assert_eq!(listed[0]["vm_id"], next["vm_id"], "newest first: {listed}");
}
