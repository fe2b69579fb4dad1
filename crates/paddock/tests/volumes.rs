//! Volumes against a real server: data outlives VMs, `ro` and the size
//! are enforced by the kernel, one writer at a time, checkpoints bring
//! old content back, mounts survive a restart, and nothing is left
//! mounted on the host once no VM uses a volume.

mod common;

use std::path::Path;

use common::{Client, Server};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

/// Host mounts whose mount point lies under `dir`.
/// Host mounts under `dir` (volumes live under `DATA/volumes`; the
/// network namespaces pinned under `DATA/net` are not volume mounts).
fn host_mounts_under(dir: &Path) -> usize {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mounts")
        .expect("mounts")
        .lines()
        .filter(|l| l.split(' ').nth(1).is_some_and(|m| m.starts_with(&dir)))
        .count()
}

async fn create_volume(c: &Client, name: &str, bytes: u64) -> String {
    let r = c
        .post("/v1/volumes", json!({"name": name, "quota_bytes": bytes}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["quota_bytes"], bytes);
    assert_eq!(r.body["status"], "available");
    r.body["id"].as_str().expect("id").to_owned()
}

fn vm_id(vm: &Value) -> String {
    vm["vm_id"].as_str().expect("vm_id").to_owned()
}

async fn mount(c: &Client, vm: &str, body: Value) -> common::Reply {
    c.post(&format!("/v1/vms/{vm}/volumes?wait=true"), body)
        .await
}

#[tokio::test]
async fn data_outlives_vms_with_ro_size_and_one_writer_enforced() {
    let server = Server::start();
    let c = server.client();
    let vol = create_volume(&c, "data", 32 * MIB).await;

    // A VM created with the volume writes to it.
    let writer = vm_id(
        &c.create_vm(json!({"volumes": [{"volume_id": vol, "mount_path": "/data"}]}))
            .await,
    );
    let (out, err, exit) = c
        .exec(
            &writer,
            "echo kept > /data/note && mkdir -p /data/d && cat /data/note",
        )
        .await;
    assert_eq!(
        (out.as_str(), exit["exit_code"].as_i64()),
        ("kept\n", Some(0)),
        "{err}"
    );

    // The size is a hard limit: writing past it fails inside the VM, and
    // the image on the host never grows past the size.
    let (_, err, exit) = c
        .exec(&writer, "dd if=/dev/zero of=/data/fill bs=1M count=64")
        .await;
    assert_ne!(exit["exit_code"], 0);
    assert!(err.contains("No space left on device"), "{err}");
    let image = server
        .data_dir()
        .join("volumes")
        .join(&vol)
        .join("disk.img");
    assert!(std::fs::metadata(&image).expect("image").len() <= 32 * MIB);
    let (_, _, exit) = c.exec(&writer, "rm /data/fill").await;
    assert_eq!(exit["exit_code"], 0);

    // One writer at a time: a second read-write mount is refused.
    let other = vm_id(&c.create_vm(json!({})).await);
    let r = mount(&c, &other, json!({"volume_id": vol, "mount_path": "/w"})).await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = c
        .post(
            "/v1/vms",
            json!({"volumes": [{"volume_id": vol, "mount_path": "/w"}]}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);

    // Readers see the writer's data and cannot write.
    let r = mount(
        &c,
        &other,
        json!({"volume_id": vol, "mount_path": "/ro", "mode": "ro"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["mode"], "ro");
    let (out, err, _) = c
        .exec(&other, "cat /ro/note; touch /ro/x; mkdir /ro/d/e")
        .await;
    assert_eq!(out, "kept\n");
    assert_eq!(err.matches("Read-only file system").count(), 2, "{err}");
    let listed = c.get(&format!("/v1/vms/{other}/volumes")).await;
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.body
    );

    // Deleting a mounted volume is refused.
    let r = c.delete(&format!("/v1/volumes/{vol}")).await;
    assert_eq!(r.status, 409, "{}", r.body);
    let got = c.get(&format!("/v1/volumes/{vol}")).await;
    assert_eq!(got.body["status"], "attached");
    assert_eq!(got.body["mounts"].as_array().map(Vec::len), Some(2));
    assert!(got.body["used_bytes"].as_u64().expect("used") > 0);

    // The writer goes; the next VM reads what it wrote.
    assert_eq!(c.delete(&format!("/v1/vms/{writer}")).await.status, 200);
    let r = c
        .delete(&format!("/v1/vms/{other}/volumes/{vol}?mount_path=/ro"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (out, _, _) = c.exec(&other, "ls /ro | wc -l").await;
    assert_eq!(out.trim(), "0", "the unmounted path is empty again");
    assert_eq!(host_mounts_under(&server.data_dir().join("volumes")), 0);

    let next = vm_id(
        &c.create_vm(json!({"volumes": [{"volume_id": vol, "mount_path": "/again"}]}))
            .await,
    );
    let (out, _, _) = c.exec(&next, "cat /again/note").await;
    assert_eq!(out, "kept\n");
    assert_eq!(c.delete(&format!("/v1/vms/{next}")).await.status, 200);

    // Resized while unmounted; then deleted, with nothing left behind.
    let r = c
        .send(
            c.req(reqwest::Method::PATCH, &format!("/v1/volumes/{vol}"))
                .json(&json!({"quota_bytes": 64 * MIB, "name": "bigger"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["quota_bytes"].as_u64(), r.body["name"].as_str()),
        (Some(64 * MIB), Some("bigger"))
    );
    let grown = vm_id(
        &c.create_vm(json!({"volumes": [{"volume_id": vol, "mount_path": "/g"}]}))
            .await,
    );
    let (out, err, exit) = c
        .exec(
            &grown,
            "cat /g/note && dd if=/dev/zero of=/g/f bs=1M count=40 >/dev/null 2>&1",
        )
        .await;
    assert_eq!(
        (out.as_str(), exit["exit_code"].as_i64()),
        ("kept\n", Some(0)),
        "{err}"
    );
    assert_eq!(c.delete(&format!("/v1/vms/{grown}")).await.status, 200);
    assert_eq!(c.delete(&format!("/v1/volumes/{vol}")).await.status, 200);
    assert!(!server.data_dir().join("volumes").join(&vol).exists());
    assert_eq!(c.get(&format!("/v1/volumes/{vol}")).await.status, 404);
    assert_eq!(host_mounts_under(&server.data_dir().join("volumes")), 0);
}

#[tokio::test]
async fn checkpoints_bring_back_old_content() {
    let server = Server::start();
    let c = server.client();
    let vol = create_volume(&c, "work", 32 * MIB).await;
    let vm = vm_id(
        &c.create_vm(json!({"volumes": [{"volume_id": vol, "mount_path": "/work"}]}))
            .await,
    );
    let (_, _, exit) = c
        .exec(&vm, "echo v1 > /work/f && echo gone-later > /work/g")
        .await;
    assert_eq!(exit["exit_code"], 0);

    // Taken while the VM has the volume mounted read-write.
    let ck = c
        .post(
            &format!("/v1/volumes/{vol}/checkpoints"),
            json!({"name": "first"}),
        )
        .await;
    assert_eq!(ck.status, 200, "{}", ck.body);
    let ck = ck.body["id"].as_str().expect("id").to_owned();
    let (_, _, exit) = c
        .exec(&vm, "echo v2 > /work/f && rm /work/g && echo new > /work/h")
        .await;
    assert_eq!(exit["exit_code"], 0);
    let list = c.get(&format!("/v1/volumes/{vol}/checkpoints")).await;
    assert_eq!(list.body[0]["name"], "first", "{}", list.body);

    // A read-only mount of the checkpoint shows the old content beside
    // the live one.
    let r = mount(
        &c,
        &vm,
        json!({"volume_id": vol, "mount_path": "/then", "mode": "ro", "checkpoint_id": ck}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (out, _, _) = c
        .exec(&vm, "cat /then/f /work/f; ls /then | tr '\\n' ' '")
        .await;
    assert_eq!(out, "v1\nv2\nf g lost+found ");
    let r = c
        .delete(&format!("/v1/volumes/{vol}/checkpoints/{ck}"))
        .await;
    assert_eq!(r.status, 409, "a mounted checkpoint stays: {}", r.body);

    // A read-write mount from the checkpoint restores the volume to it,
    // which needs the volume mounted nowhere.
    let r = c
        .post(
            "/v1/vms",
            json!({"volumes": [{"volume_id": vol, "mount_path": "/r", "checkpoint_id": ck}]}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(c.delete(&format!("/v1/vms/{vm}")).await.status, 200);
    let restored = vm_id(
        &c.create_vm(
            json!({"volumes": [{"volume_id": vol, "mount_path": "/r", "checkpoint_id": ck}]}),
        )
        .await,
    );
    let (out, _, _) = c
        .exec(&restored, "cat /r/f /r/g; ls /r | tr '\\n' ' '")
        .await;
    assert_eq!(out, "v1\ngone-later\nf g lost+found ");
    assert_eq!(c.delete(&format!("/v1/vms/{restored}")).await.status, 200);
    let r = c
        .delete(&format!("/v1/volumes/{vol}/checkpoints/{ck}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        c.get(&format!("/v1/volumes/{vol}/checkpoints")).await.body,
        json!([])
    );
    assert_eq!(host_mounts_under(&server.data_dir().join("volumes")), 0);
}

#[tokio::test]
async fn mounts_survive_a_restart_and_volumes_stay_private() {
    let mut server = Server::start();
    let c = server.client();
    let vol = create_volume(&c, "keep", 16 * MIB).await;
    let vm = vm_id(
        &c.create_vm(json!({"volumes": [{"volume_id": vol, "mount_path": "/k"}]}))
            .await,
    );
    let (_, _, exit) = c.exec(&vm, "echo before > /k/f").await;
    assert_eq!(exit["exit_code"], 0);

    server.kill();
    server.restart();
    let c = server.client();
    let (out, _, exit) = c.exec(&vm, "cat /k/f && echo after >> /k/f").await;
    assert_eq!(
        (out.as_str(), exit["exit_code"].as_i64()),
        ("before\n", Some(0))
    );
    assert_eq!(host_mounts_under(&server.data_dir().join("volumes")), 1);

    // Another account sees none of it and cannot mount it.
    let theirs = c.with_key(Some(&server.other_account_key()));
    assert_eq!(theirs.get(&format!("/v1/volumes/{vol}")).await.status, 404);
    assert_eq!(theirs.get("/v1/volumes").await.body, json!([]));
    assert_eq!(
        theirs.delete(&format!("/v1/volumes/{vol}")).await.status,
        404
    );
    assert_eq!(
        theirs
            .post(&format!("/v1/volumes/{vol}/checkpoints"), json!({}))
            .await
            .status,
        404
    );
    let their_vm = vm_id(&theirs.create_vm(json!({})).await);
    let r = mount(
        &theirs,
        &their_vm,
        json!({"volume_id": vol, "mount_path": "/x", "mode": "ro"}),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = theirs
        .post(
            "/v1/vms",
            json!({"volumes": [{"volume_id": vol, "mount_path": "/x", "mode": "ro"}]}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        theirs.get(&format!("/v1/vms/{vm}/volumes")).await.status,
        404
    );

    // Bad input names the field and creates nothing.
    for (body, loc) in [
        (
            json!({"name": "x", "quota_bytes": 0}),
            json!(["body", "quota_bytes"]),
        ),
        (
            json!({"name": "", "quota_bytes": 16 * MIB}),
            json!(["body", "name"]),
        ),
    ] {
        let r = c.post("/v1/volumes", body).await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(r.body["detail"][0]["loc"], loc);
    }
    let r = c
        .post("/v1/volumes", json!({"name": "x", "quota_bytes": -1}))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    for (mount_request, field) in [
        (
            json!({"volume_id": vol, "mount_path": "/m", "mode": "rx"}),
            "mode",
        ),
        (
            json!({"volume_id": vol, "mount_path": "/proc/x"}),
            "mount_path",
        ),
        (json!({"volume_id": vol, "mount_path": "rel"}), "mount_path"),
        (
            json!({"volume_id": vol, "mount_path": "/a/../b"}),
            "mount_path",
        ),
    ] {
        let r = c.post("/v1/vms", json!({"volumes": [mount_request]})).await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(
            r.body["detail"][0]["loc"],
            json!(["body", "volumes", "0", field])
        );
    }
    let r = mount(
        &c,
        &vm,
        json!({"volume_id": "vol_nope", "mount_path": "/n"}),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = mount(
        &c,
        &vm,
        json!({"volume_id": vol, "mount_path": "/k", "mode": "ro"}),
    )
    .await;
    assert_eq!(r.status, 409, "the path is taken: {}", r.body);
    assert_eq!(
        c.get("/v1/volumes").await.body.as_array().map(Vec::len),
        Some(1)
    );

    // The VM's end releases the host mount.
    assert_eq!(c.delete(&format!("/v1/vms/{vm}")).await.status, 200);
    assert_eq!(host_mounts_under(&server.data_dir().join("volumes")), 0);
    let got = c.get(&format!("/v1/volumes/{vol}")).await;
    assert_eq!(got.body["status"], "available");
}
