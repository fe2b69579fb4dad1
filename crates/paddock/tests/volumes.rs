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

/// Loop devices on the host backed by a file under `dir`: a volume's
/// file system still alive, in whatever mount namespace.
fn loop_devices_backed_under(dir: &Path) -> usize {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/sys/block")
        .expect("/sys/block")
        .flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("loop/backing_file")).ok())
        .filter(|backing| backing.trim().starts_with(&dir))
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
    // Its file system is gone with the VM, in the sandbox's namespace too
    // (a teardown that kept that namespace past the delete would leave it
    // mounted there, on its loop device, for the resize below to meet).
    assert_eq!(
        loop_devices_backed_under(&server.data_dir().join("volumes")),
        0
    );

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

/// A multipart form: text fields, then `file`.
fn form(fields: &[(&str, &str)], file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "paddock-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\nContent-Type: application/octet-stream\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(c: &Client, vol: &str, path: &str, overwrite: bool, bytes: &[u8]) -> common::Reply {
    let (ct, body) = form(
        &[
            ("path", path),
            ("overwrite", if overwrite { "true" } else { "false" }),
        ],
        bytes,
    );
    c.send(
        c.req(
            reqwest::Method::POST,
            &format!("/v1/volumes/{vol}/files/upload"),
        )
        .header("content-type", ct)
        .body(body),
    )
    .await
}

/// A volume's files through the API, whether or not a VM has it mounted:
/// what one side writes the other reads, uploads stop at the volume's
/// size, and a tenant's symlinks resolve inside the volume.
#[tokio::test]
async fn volume_files_are_reachable_mounted_or_not_and_never_leave_the_volume() {
    use base64::Engine;
    let server = Server::start();
    let c = server.client();
    let made = c
        .post(
            "/v1/volumes",
            json!({"name": "files", "quota_bytes": 64 << 20}),
        )
        .await;
    assert_eq!(made.status, 200, "{:?}", made.body);
    let vol = made.body["volume_id"].as_str().expect("id").to_owned();

    // Not mounted anywhere.
    let r = upload(&c, &vol, "/docs/a.txt", false, b"hello volume").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["size"], 12);
    assert_eq!(
        upload(&c, &vol, "docs/a.txt", false, b"again").await.status,
        409
    );
    assert_eq!(
        upload(&c, &vol, "docs/a.txt", true, b"hello again")
            .await
            .status,
        200
    );
    let listed = c.get(&format!("/v1/volumes/{vol}/files?prefix=docs")).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let paths: Vec<&str> = listed
        .body
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(paths, ["docs/a.txt"]);

    // Mounted in a VM: each side sees the other's writes; the VM's
    // symlink out of the volume leads nowhere on the host.
    let vm = c
        .create_vm(json!({"volumes": [{"volume_id": vol, "mount_path": "/data"}]}))
        .await;
    let vm_id = vm["vm_id"].as_str().expect("vm");
    let (out, _, _) = c
        .exec(vm_id, "cat /data/docs/a.txt; echo from-vm > /data/vm.txt; ln -s /etc/hostname /data/escape; ln -s ../../../../../../etc /data/up")
        .await;
    assert_eq!(out.trim(), "hello again");
    let got = c
        .post(
            &format!("/v1/volumes/{vol}/files/download"),
            json!({"path": "vm.txt"}),
        )
        .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(got.body["content"].as_str().expect("content"))
        .expect("base64");
    assert_eq!(bytes, b"from-vm\n");
    for escape in ["escape", "up/hostname", "up/passwd"] {
        let r = c
            .post(
                &format!("/v1/volumes/{vol}/files/download"),
                json!({"path": escape}),
            )
            .await;
        assert_eq!(r.status, 404, "{escape}: {:?}", r.body);
    }
    assert_eq!(
        upload(&c, &vol, "up/planted", false, b"x").await.status / 100,
        4
    );
    assert!(!std::path::Path::new("/etc/planted").exists());
    let r = upload(&c, &vol, "from-api.txt", false, b"from-api").await;
    assert_eq!(r.status, 200);
    let (out, _, _) = c.exec(vm_id, "cat /data/from-api.txt").await;
    assert_eq!(out, "from-api");
    // The VM still has its volume after the API's calls.
    let (out, _, _) = c.exec(vm_id, "ls /data | sort | tr '\\n' ' '").await;
    assert_eq!(out.trim(), "docs escape from-api.txt lost+found up vm.txt");

    // Quota: an upload past the volume's size is refused, whole.
    let big = vec![7u8; (65 << 20) as usize];
    let r = upload(&c, &vol, "big.bin", false, &big).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body.to_string().contains("larger than the volume"));
    let del = c
        .delete(&format!("/v1/volumes/{vol}/files?path=docs/a.txt"))
        .await;
    assert_eq!(del.status, 200, "{:?}", del.body);
    let listed = c.get(&format!("/v1/volumes/{vol}/files")).await;
    let names: Vec<&str> = listed
        .body
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert!(
        !names.contains(&"docs/a.txt") && !names.contains(&"big.bin"),
        "{names:?}"
    );

    // Bad paths name the field; another account sees nothing.
    for bad in ["../etc/passwd", "a/./b", ""] {
        let r = c
            .post(
                &format!("/v1/volumes/{vol}/files/download"),
                json!({"path": bad}),
            )
            .await;
        assert_eq!(r.status, 422, "{bad}: {:?}", r.body);
        assert!(r.body.to_string().contains("path"));
    }
    let other = c.with_key(Some(&server.other_account_key()));
    assert_eq!(
        other.get(&format!("/v1/volumes/{vol}/files")).await.status,
        404
    );
    assert_eq!(upload(&other, &vol, "x", false, b"x").await.status, 404);
}
