//! The `paddock vm` and `paddock keys` command lines against a real server.

mod common;

use std::process::Command;

use common::{bin, Server};

fn paddock(server: &Server, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env("PADDOCK_SERVER", &server.base)
        .env("PADDOCK_DATA_DIR", server.data_dir())
        .env_remove("PADDOCK_API_KEY")
        .output()
        .expect("run paddock")
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn vm_commands_round_trip() {
    let server = Server::start();
    // The key comes from DATA_DIR/admin.key when none is given.
    let created: serde_json::Value = serde_json::from_str(&ok(&paddock(
        &server,
        &[
            "vm",
            "create",
            "--json",
            "--memory-mb",
            "128",
            "--env",
            "WHO=cli",
        ],
    )))
    .expect("json");
    let id = created[0]["vm_id"].as_str().expect("vm_id").to_owned();
    assert_eq!(created[0]["memory_mb"], 128);

    let table = ok(&paddock(&server, &["vm", "list"]));
    assert!(table.contains(&id) && table.contains("active"), "{table}");

    let out = paddock(
        &server,
        &["vm", "exec", &id, "--", "sh", "-c", "echo $WHO; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cli\n");

    let local = server.dir.path().join("up.txt");
    std::fs::write(&local, "copied both ways").expect("write");
    ok(&paddock(
        &server,
        &[
            "vm",
            "cp",
            local.to_str().expect("utf8"),
            &format!("{id}:/root/in.txt"),
        ],
    ));
    let back = server.dir.path().join("down.txt");
    ok(&paddock(
        &server,
        &[
            "vm",
            "cp",
            &format!("{id}:/root/in.txt"),
            back.to_str().expect("utf8"),
        ],
    ));
    assert_eq!(
        std::fs::read_to_string(&back).expect("read"),
        "copied both ways"
    );

    let got = ok(&paddock(&server, &["vm", "get", &id, "--json"]));
    assert!(got.contains("\"active\""), "{got}");
    ok(&paddock(&server, &["vm", "delete", &id]));
    let missing = paddock(&server, &["vm", "get", "vm_nosuchvm"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
}

#[tokio::test]
async fn keys_create_list_revoke() {
    let server = Server::start();
    let dir = server.data_dir();
    let dir = dir.to_str().expect("utf8");
    let created: serde_json::Value = serde_json::from_str(&ok(&paddock(
        &server,
        &[
            "keys",
            "--data-dir",
            dir,
            "--json",
            "create",
            "--name",
            "ci",
        ],
    )))
    .expect("json");
    let secret = created["key"].as_str().expect("key").to_owned();
    let c = server.client().with_key(Some(&secret));
    assert_eq!(c.get("/v1/vms").await.status, 200);

    // Global options may follow the subcommand too.
    let other: serde_json::Value = serde_json::from_str(&ok(&paddock(
        &server,
        &[
            "keys",
            "create",
            "--new-account",
            "other",
            "--data-dir",
            dir,
            "--json",
        ],
    )))
    .expect("json");
    assert!(other["key"].as_str().is_some(), "{other}");

    let listed = ok(&paddock(&server, &["keys", "list", "--data-dir", dir]));
    assert!(
        listed.contains("ci") && !listed.contains(&secret),
        "{listed}"
    );

    ok(&paddock(
        &server,
        &[
            "keys",
            "--data-dir",
            dir,
            "revoke",
            created["id"].as_str().expect("id"),
        ],
    ));
    assert_eq!(c.get("/v1/vms").await.status, 401);
}
