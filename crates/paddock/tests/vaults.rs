//! Vaults against a real server: secrets reach a VM's commands and
//! nowhere else (not responses, the data dir, logs or snapshots), foreign
//! or unknown vaults keep a VM from starting, and the master key rotates.

mod common;

use std::path::Path;

use common::Server;
use serde_json::json;

const SECRET: &str = "pdk-secret-7f3a9c21e4";
const ROTATED: &str = "pdk-rotated-55d1be08aa";

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() && file_contains(&p, needle.as_bytes()) {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// Whether the file at `p` holds `needle` anywhere in its data. Sparse
/// files (sandboxes' disk images, 10 GiB each with a few MiB written)
/// are read extent by extent, holes skipped: every written byte is read.
fn file_contains(p: &Path, needle: &[u8]) -> bool {
    use nix::unistd::{lseek, Whence};
    use std::os::unix::fs::FileExt;
    let Ok(file) = std::fs::File::open(p) else {
        return false;
    };
    let len = file.metadata().map(|m| m.len() as i64).unwrap_or(0);
    let mut offset = 0i64;
    let mut buf = vec![0u8; 1 << 20];
    while offset < len {
        let Ok(data) = lseek(&file, offset, Whence::SeekData) else {
            return false; // no data past offset
        };
        let hole = lseek(&file, data, Whence::SeekHole).unwrap_or(len);
        // Read the extent in chunks that overlap by the needle's length.
        let mut at = data;
        while at < hole {
            let want = buf.len().min((hole - at) as usize + needle.len());
            let Ok(n) = file.read_at(&mut buf[..want], at as u64) else {
                return false;
            };
            if n == 0 {
                break;
            }
            if buf[..n].windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            at += (n.saturating_sub(needle.len()).max(1)) as i64;
        }
        offset = hole.max(offset + 1);
    }
    false
}

#[tokio::test]
async fn secrets_reach_the_vm_and_nothing_else() {
    let mut server = Server::start();
    let c = server.client();
    let vault = c
        .post("/v1/vaults", json!({"name": "prod", "description": "keys"}))
        .await;
    assert_eq!(vault.status, 200, "{}", vault.body);
    let vid = vault.body["id"].as_str().expect("id").to_owned();
    let cred = c
        .post(
            &format!("/v1/vaults/{vid}/credentials"),
            json!({"name": "API_TOKEN", "value": SECRET}),
        )
        .await;
    assert_eq!(cred.status, 200, "{}", cred.body);
    assert!(!cred.body.to_string().contains(SECRET));
    let cid = cred.body["id"].as_str().expect("id").to_owned();
    let dup = c
        .post(
            &format!("/v1/vaults/{vid}/credentials"),
            json!({"name": "API_TOKEN", "value": "x"}),
        )
        .await;
    assert_eq!(dup.status, 409);
    let bad = c
        .post(
            &format!("/v1/vaults/{vid}/credentials"),
            json!({"name": "1-bad", "value": "x"}),
        )
        .await;
    assert_eq!(bad.body["detail"][0]["loc"], json!(["body", "name"]));

    let vm = c
        .create_vm(json!({"vault_ids": [vid], "snapshot_on_terminate": true, "snapshot_name": "with-secret"}))
        .await;
    assert_eq!(vm["status"], "active", "{vm}");
    assert_eq!(vm["env_status"], "ready");
    let id = vm["vm_id"].as_str().expect("id").to_owned();
    let (out, _, _) = c
        .exec(&id, "echo $API_TOKEN; env > /root/env-dump-in-sandbox-memory-only; rm /root/env-dump-in-sandbox-memory-only")
        .await;
    assert_eq!(out, format!("{SECRET}\n"));

    // Listings and reads never carry it.
    for path in [
        format!("/v1/vaults/{vid}"),
        format!("/v1/vaults/{vid}/credentials"),
        format!("/v1/vaults/{vid}/discover"),
        format!("/v1/vms/{id}"),
        "/v1/vaults".to_owned(),
    ] {
        let r = c.get(&path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(!r.body.to_string().contains(SECRET), "{path}: {}", r.body);
    }
    assert_eq!(
        c.get(&format!("/v1/vaults/{vid}/discover")).await.body["credentials"],
        json!(["API_TOKEN"])
    );

    // Rotation: new VMs get the new value.
    let rotated = c
        .post(
            &format!("/v1/vaults/{vid}/credentials/{cid}/rotate"),
            json!({"value": ROTATED}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert!(rotated.body["rotated_at"].is_string());
    let vm2 = c.create_vm(json!({"vault_ids": [vid]})).await;
    let (out, _, _) = c
        .exec(vm2["vm_id"].as_str().expect("id"), "echo $API_TOKEN")
        .await;
    assert_eq!(out, format!("{ROTATED}\n"));

    // The VM ends with a snapshot: its filesystem, never its environment.
    assert_eq!(c.delete(&format!("/v1/vms/{id}")).await.status, 200);
    let snaps = c.get("/v1/snapshots").await.body;
    assert!(snaps.to_string().contains("with-secret"), "{snaps}");

    // Nothing under the data dir (database, WAL, blobs, layers, sandbox
    // run dirs) nor the log holds either value in plain text.
    let data = server.data_dir();
    for needle in [SECRET, ROTATED] {
        assert_eq!(files_containing(&data, needle), Vec::<String>::new());
        assert!(!server.log().contains(needle));
    }

    // The master key rotates; values sealed under the old key still open.
    server.kill();
    let rotate = server.rotate_master_key();
    assert!(String::from_utf8_lossy(&rotate.stderr).contains("re-sealed 1 secrets"));
    assert!(!data.join("master.key.previous").exists());
    server.restart();
    let c = server.client();
    let vm3 = c.create_vm(json!({"vault_ids": [vid]})).await;
    assert_eq!(vm3["env_status"], "ready", "{vm3}");
    let (out, _, _) = c
        .exec(vm3["vm_id"].as_str().expect("id"), "echo $API_TOKEN")
        .await;
    assert_eq!(out, format!("{ROTATED}\n"));
}

#[tokio::test]
async fn unknown_or_foreign_vaults_keep_a_vm_from_starting() {
    let server = Server::start();
    let c = server.client();
    let other = c.with_key(Some(&server.other_account_key()));
    let theirs = other.post("/v1/vaults", json!({"name": "theirs"})).await;
    let theirs = theirs.body["id"].as_str().expect("id").to_owned();
    other
        .post(
            &format!("/v1/vaults/{theirs}/credentials"),
            json!({"name": "THEIR_KEY", "value": "not-yours"}),
        )
        .await;
    let mine = c.post("/v1/vaults", json!({"name": "mine"})).await;
    let mine = mine.body["id"].as_str().expect("id").to_owned();

    // Another account's vault is not found, everywhere.
    assert_eq!(c.get(&format!("/v1/vaults/{theirs}")).await.status, 404);
    assert_eq!(
        c.get(&format!("/v1/vaults/{theirs}/credentials"))
            .await
            .status,
        404
    );
    assert_eq!(c.delete(&format!("/v1/vaults/{theirs}")).await.status, 404);

    for (ids, named) in [
        (json!([mine, theirs]), theirs.clone()),
        (
            json!(["vault_doesnotexist"]),
            "vault_doesnotexist".to_owned(),
        ),
    ] {
        let vm = c.post("/v1/vms", json!({ "vault_ids": ids })).await;
        assert_eq!(vm.status, 200, "{}", vm.body);
        assert_eq!(vm.body["status"], "failed");
        assert_eq!(vm.body["env_status"], "error");
        let error = vm.body["env_error"].as_str().expect("env_error");
        assert!(error.contains(&named), "{error}");
        assert!(!vm.body.to_string().contains("not-yours"));
    }

    // Vault CRUD: rename, delete, then gone.
    let renamed = c
        .send(
            c.req(reqwest::Method::PATCH, &format!("/v1/vaults/{mine}"))
                .json(&json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(renamed.body["name"], "renamed");
    assert_eq!(c.delete(&format!("/v1/vaults/{mine}")).await.status, 200);
    assert_eq!(c.get(&format!("/v1/vaults/{mine}")).await.status, 404);
}

#[tokio::test]
async fn staged_env_reaches_later_commands_and_is_never_stored() {
    let server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let id = vm["vm_id"].as_str().expect("id").to_owned();
    let staged = c
        .post(
            &format!("/v1/vms/{id}/stage-env"),
            json!({"entries": [{"env_name": "STAGED_KEY", "value": SECRET}]}),
        )
        .await;
    assert_eq!(staged.status, 200, "{}", staged.body);
    assert!(!staged.body.to_string().contains(SECRET));
    let (out, _, _) = c.exec(&id, "echo $STAGED_KEY").await;
    assert_eq!(out, format!("{SECRET}\n"));
    let bad = c
        .post(
            &format!("/v1/vms/{id}/stage-env"),
            json!({"entries": [{"env_name": "BAD NAME", "value": "x"}]}),
        )
        .await;
    assert_eq!(bad.status, 422);
    assert_eq!(
        files_containing(&server.data_dir(), SECRET),
        Vec::<String>::new()
    );
    let other = c.with_key(Some(&server.other_account_key()));
    let foreign = other
        .post(
            &format!("/v1/vms/{id}/stage-env"),
            json!({"entries": [{"env_name": "X", "value": "y"}]}),
        )
        .await;
    assert_eq!(foreign.status, 404);
}

#[tokio::test]
async fn execute_vault_ids_reach_that_command_only() {
    let server = Server::start();
    let c = server.client();
    let vault = c.post("/v1/vaults", json!({"name": "per-command"})).await;
    let vid = vault.body["id"].as_str().expect("id").to_owned();
    let cred = c
        .post(
            &format!("/v1/vaults/{vid}/credentials"),
            json!({"name": "ONE_SHOT", "value": SECRET}),
        )
        .await;
    assert_eq!(cred.status, 200, "{}", cred.body);
    let vm = c.create_vm(json!({})).await;
    let session = vm["session_id"].as_str().expect("session").to_owned();

    let run = |vault_ids: serde_json::Value| {
        c.post(
            "/execute",
            json!({"command": "echo \"[$ONE_SHOT]\"", "session_id": session, "vault_ids": vault_ids}),
        )
    };
    let r = run(json!([vid])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["stdout"], format!("[{SECRET}]\n"));
    // The next command without it does not see it.
    let r = run(json!(null)).await;
    assert_eq!(r.body["stdout"], "[]\n");

    // Another account's vault, an unknown one and a malformed id.
    let theirs = c.with_key(Some(&server.other_account_key()));
    let their_vault = theirs.post("/v1/vaults", json!({"name": "theirs"})).await;
    let their_id = their_vault.body["id"].as_str().expect("id").to_owned();
    let r = run(json!([their_id])).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = run(json!(["vault_doesnotexist000000"])).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = run(json!([vid, "nope"])).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(
        r.body["detail"][0]["loc"],
        json!(["body", "vault_ids", "1"])
    );
    assert!(!server.log().contains(SECRET));
}

#[tokio::test]
async fn a_running_vms_vaults_are_replaced_by_patch() {
    let server = Server::start();
    let c = server.client();
    let vault = |name: &'static str, var: &'static str, value: &'static str| {
        let c = &c;
        async move {
            let v = c.post("/v1/vaults", json!({ "name": name })).await;
            let id = v.body["id"].as_str().expect("id").to_owned();
            let cred = c
                .post(
                    &format!("/v1/vaults/{id}/credentials"),
                    json!({"name": var, "value": value}),
                )
                .await;
            assert_eq!(cred.status, 200, "{}", cred.body);
            id
        }
    };
    let first = vault("first", "FIRST_KEY", SECRET).await;
    let second = vault("second", "SECOND_KEY", ROTATED).await;
    let vm = c.create_vm(json!({ "vault_ids": [first] })).await;
    let id = vm["vm_id"].as_str().expect("vm id").to_owned();
    let seen = || async { c.exec(&id, "echo \"[$FIRST_KEY][$SECOND_KEY]\"").await.0 };
    assert_eq!(seen().await, format!("[{SECRET}][]\n"));

    // The second vault in place of the first: the first's variable goes.
    let r = c
        .patch(&format!("/v1/vms/{id}"), json!({ "vault_ids": [second] }))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["vault_ids"], json!([second]), "{}", r.body);
    assert_eq!(seen().await, format!("[][{ROTATED}]\n"));

    // A refused patch changes nothing: another account's vault, an
    // unknown one, a malformed id.
    let theirs = c.with_key(Some(&server.other_account_key()));
    let their_vault = theirs.post("/v1/vaults", json!({"name": "theirs"})).await;
    let their_id = their_vault.body["id"].as_str().expect("id").to_owned();
    for (ids, status) in [
        (json!([first, their_id]), 404),
        (json!(["vault_doesnotexist000000"]), 404),
        (json!([first, "nope"]), 422),
    ] {
        let r = c
            .patch(&format!("/v1/vms/{id}"), json!({ "vault_ids": ids }))
            .await;
        assert_eq!(r.status, status, "{ids}: {}", r.body);
    }
    assert_eq!(seen().await, format!("[][{ROTATED}]\n"));
    assert_eq!(
        c.get(&format!("/v1/vms/{id}")).await.body["vault_ids"],
        json!([second])
    );

    // Null changes nothing; [] takes every vault off.
    let r = c
        .patch(&format!("/v1/vms/{id}"), json!({ "vault_ids": null }))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(seen().await, format!("[][{ROTATED}]\n"));
    let r = c
        .patch(&format!("/v1/vms/{id}"), json!({ "vault_ids": [] }))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(seen().await, "[][]\n");

    // A vault deleted while a VM uses it: taking it off still removes its
    // variables (the VM's record keeps their names, never their values).
    let third = vault("third", "THIRD_KEY", SECRET).await;
    let vm = c.create_vm(json!({ "vault_ids": [third] })).await;
    let id = vm["vm_id"].as_str().expect("vm id").to_owned();
    assert_eq!(
        c.exec(&id, "echo \"[$THIRD_KEY]\"").await.0,
        format!("[{SECRET}]\n")
    );
    let r = c.delete(&format!("/v1/vaults/{third}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c
        .patch(&format!("/v1/vms/{id}"), json!({ "vault_ids": [] }))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(c.exec(&id, "echo \"[$THIRD_KEY]\"").await.0, "[]\n");
    assert!(!server.log().contains(SECRET));
    assert!(!server.log().contains(ROTATED));
}
