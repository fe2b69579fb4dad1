//! Snapshots, restores and clones against a real server: what a VM
//! changed comes back exactly, clones diverge, a VM that expires
//! snapshots itself, and a snapshot of an image pushes as an image.

mod common;

use std::time::{Duration, Instant};

use common::registry::{busybox_base, config_json, gzip, push, Registry, GZIP};
use common::{Client, Server};
use serde_json::{json, Value};

/// Makes every kind of change a snapshot must carry: new, modified and
/// deleted files (in / and /usr), dirs, a symlink, a hard link, modes,
/// owners and a user xattr.
const CHANGES: &str = r#"set -e
mkdir -p /srv/tree/sub /usr/local/share/snap
printf 'alpha' > /srv/tree/a.txt
head -c 70000 /dev/urandom > /srv/tree/sub/random.bin
ln -s ../a.txt /srv/tree/sub/link
ln /srv/tree/a.txt /srv/tree/hard
chmod 0640 /srv/tree/a.txt
chmod 4755 /srv/tree/sub
chown 1000:100 /srv/tree/sub/random.bin
echo changed >> /etc/profile
rm /etc/hostname
rm -rf /etc/skel
printf 'usr-side' > /usr/local/share/snap/file
python3 -c "import os; os.setxattr('/srv/tree/a.txt', 'user.note', b'kept')"
"#;

/// A manifest of the trees the changes touch: path, type, mode, owner,
/// size, content hash, link target, inode-sharing and the user xattr.
const MANIFEST: &str = r#"python3 - <<'EOF'
import hashlib, os, stat
inodes = {}
for p in ["/etc/profile", "/etc/hostname", "/etc/skel", "/etc/passwd"]:
    print(p, os.path.lexists(p))
for root in ["/srv", "/usr/local/share/snap"]:
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for name in [""] + sorted(dirs + files):
            p = os.path.join(d, name) if name else d
            st = os.lstat(p)
            kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) else "f"
            extra = ""
            if kind == "l":
                extra = os.readlink(p)
            elif kind == "f":
                extra = hashlib.sha256(open(p, "rb").read()).hexdigest()
                if st.st_nlink > 1:
                    extra += " linked-with " + inodes.setdefault(st.st_ino, p)
            try:
                x = os.getxattr(p, "user.note", follow_symlinks=False).decode()
            except OSError:
                x = ""
            size = st.st_size if kind == "f" else 0
            print(p, kind, oct(st.st_mode & 0o7777), st.st_uid, st.st_gid, size, extra, x)
EOF"#;

async fn manifest(c: &Client, vm: &str) -> String {
    let (out, err, exit) = c.exec(vm, MANIFEST).await;
    assert_eq!(exit["exit_code"], 0, "{err}");
    assert!(out.lines().count() > 8, "{out}");
    out
}

async fn snapshot(c: &Client, vm: &str, name: &str) -> Value {
    let r = c
        .post(&format!("/v1/vms/{vm}/snapshot"), json!({"name": name}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "ready", "{}", r.body);
    r.body
}

#[tokio::test]
async fn a_restored_vm_sees_exactly_what_the_snapshot_captured() {
    let server = Server::start();
    let c = server.client();
    let source = c.create_vm(json!({})).await;
    let source = source["vm_id"].as_str().expect("id").to_owned();
    let (_, err, exit) = c.exec(&source, CHANGES).await;
    assert_eq!(exit["exit_code"], 0, "{err}");
    // A process keeps running through the snapshot (frozen, then thawed).
    c.exec(
        &source,
        "nohup sh -c 'while :; do date +%s%N > /tmp/tick; sleep 0.05; done' >/dev/null 2>&1 &",
    )
    .await;
    let before = manifest(&c, &source).await;

    let snap = snapshot(&c, &source, "fidelity").await;
    assert!(snap["size_bytes"].as_u64().expect("size") > 70_000);
    let (t1, _, _) = c.exec(&source, "cat /tmp/tick").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (t2, _, _) = c.exec(&source, "cat /tmp/tick").await;
    assert_ne!(
        t1, t2,
        "the source VM's processes run again after the snapshot"
    );

    let restored = c
        .create_vm(json!({"snapshot_id": snap["snapshot_id"]}))
        .await;
    assert_eq!(restored["status"], "active", "{restored}");
    assert_eq!(restored["snapshot_id"], snap["snapshot_id"]);
    let restored = restored["vm_id"].as_str().expect("id");
    let after = manifest(&c, restored).await;
    let missing: Vec<_> = before.lines().filter(|l| !after.contains(l)).collect();
    let extra: Vec<_> = after.lines().filter(|l| !before.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    assert_eq!(after, before);

    // Names are unique per account; another account sees nothing.
    let again = c
        .post(
            &format!("/v1/vms/{source}/snapshot"),
            json!({"name": "fidelity"}),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    let other = c.with_key(Some(&server.other_account_key()));
    let id = snap["snapshot_id"].as_str().expect("id");
    assert_eq!(other.get(&format!("/v1/snapshots/{id}")).await.status, 404);
    assert_eq!(
        other.delete(&format!("/v1/snapshots/{id}")).await.status,
        404
    );
    let foreign = other.post("/v1/vms", json!({"snapshot_id": id})).await;
    assert_eq!(foreign.status, 404);
    assert_eq!(other.get("/v1/snapshots").await.body, json!([]));

    // In use, it stays; once its VM is gone, it goes.
    assert_eq!(c.delete(&format!("/v1/snapshots/{id}")).await.status, 409);
    assert_eq!(c.delete(&format!("/v1/vms/{restored}")).await.status, 200);
    assert_eq!(c.delete(&format!("/v1/snapshots/{id}")).await.status, 200);
    assert_eq!(c.get(&format!("/v1/snapshots/{id}")).await.status, 404);
}

#[tokio::test]
async fn a_clone_diverges_from_its_source() {
    let server = Server::start();
    let c = server.client();
    let source = c.create_vm(json!({"env": {"ROLE": "origin"}})).await;
    let source = source["vm_id"].as_str().expect("id").to_owned();
    c.exec(&source, "echo shared > /srv/state").await;
    let cloned = c
        .post(
            &format!("/v1/vms/{source}/clone"),
            json!({"snapshot_name": "via-clone"}),
        )
        .await;
    assert_eq!(cloned.status, 200, "{}", cloned.body);
    assert_eq!(cloned.body["status"], "active");
    assert_eq!(cloned.body["snapshot_deleted"], false);
    let clone = cloned.body["vm_id"].as_str().expect("id").to_owned();
    assert_ne!(clone, source);

    c.exec(&clone, "echo clone >> /srv/state; touch /srv/clone-only")
        .await;
    c.exec(&source, "echo source >> /srv/state").await;
    let (in_clone, _, _) = c.exec(&clone, "cat /srv/state; ls /srv; echo $ROLE").await;
    let (in_source, _, _) = c.exec(&source, "cat /srv/state; ls /srv").await;
    assert_eq!(in_clone, "shared\nclone\nclone-only\nstate\norigin\n");
    assert_eq!(in_source, "shared\nsource\nstate\n");
}

#[tokio::test]
async fn a_vm_snapshots_itself_when_its_lifetime_ends() {
    let server = Server::start();
    let c = server.client();
    let vm = c
        .create_vm(json!({"vm_lifetime_seconds": 2, "snapshot_on_terminate": true, "snapshot_name": "at-expiry"}))
        .await;
    assert_eq!(vm["snapshot_on_terminate"], true);
    let id = vm["vm_id"].as_str().expect("id").to_owned();
    c.exec(&id, "echo last-words > /root/note").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let snap = loop {
        let list = c.get("/v1/snapshots").await.body;
        // Listed from the moment it starts (`creating`); wait for its end.
        if let Some(s) = list
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == "at-expiry"))
            .filter(|s| s["status"] != "creating")
        {
            break s.clone();
        }
        assert!(Instant::now() < deadline, "no finished snapshot at expiry");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(snap["status"], "ready", "{snap}");
    assert_eq!(snap["vm_id"], id);
    // The snapshot is made first; the VM then stops and frees its network.
    loop {
        let status = c.get(&format!("/v1/vms/{id}")).await.body["status"].clone();
        if status == "terminated" {
            break;
        }
        assert_eq!(status, "stopping");
        assert!(Instant::now() < deadline, "the VM never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let restored = c.create_vm(json!({"snapshot_id": snap["id"]})).await;
    let (out, _, _) = c
        .exec(restored["vm_id"].as_str().expect("id"), "cat /root/note")
        .await;
    assert_eq!(out, "last-words\n");
}

#[tokio::test]
async fn a_snapshot_of_an_image_vm_pushes_as_an_ordinary_image() {
    let reg = Registry::start();
    push(
        &reg.reference("test/base:v1"),
        vec![(gzip(&busybox_base().bytes()), GZIP)],
        config_json(&["PATH=/bin", "FROM_IMAGE=1"], "/work", ""),
    )
    .await;
    let server = Server::start_with_config(&reg.paddock_config());
    let c = server.client();
    let vm = c
        .create_vm(json!({"image_variant": reg.reference("test/base:v1")}))
        .await;
    let id = vm["vm_id"].as_str().expect("id");
    c.exec(id, "echo from-snapshot > /work/made; rm /bin/ls")
        .await;
    let snap = snapshot(&c, id, "image-based").await;
    let sid = snap["id"].as_str().expect("id");

    let bad = c
        .post(
            &format!("/v1/snapshots/{sid}/push"),
            json!({"target": "not a ref"}),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    let pushed = c
        .post(
            &format!("/v1/snapshots/{sid}/push"),
            json!({"target": reg.reference("test/snap:v1")}),
        )
        .await;
    assert_eq!(pushed.status, 200, "{}", pushed.body);

    // The snapshot's layer is kept here as a plain tar's directory; the
    // registry got it compressed, under the compressed blob's digest, with
    // the config's diff id still the tar's.
    let manifest: Value = reqwest::Client::new()
        .get(format!(
            "http://{}",
            reg.reference("test/snap:v1")
                .replacen('/', "/v2/", 1)
                .replace(":v1", "/manifests/v1")
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("manifest")
        .json()
        .await
        .expect("manifest json");
    let top = manifest["layers"]
        .as_array()
        .and_then(|l| l.last())
        .expect("layers");
    assert_eq!(
        top["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
        "{manifest}"
    );
    let config: Value = serde_json::from_slice(
        &std::fs::read(
            reg.blob_file(
                manifest["config"]["digest"]
                    .as_str()
                    .expect("config digest"),
            ),
        )
        .expect("config blob"),
    )
    .expect("config json");
    let diff_id = config["rootfs"]["diff_ids"]
        .as_array()
        .and_then(|d| d.last())
        .expect("diff ids");
    assert_ne!(
        &top["digest"], diff_id,
        "the blob is compressed: {manifest}"
    );
    let blob = reg.blob_file(top["digest"].as_str().expect("digest"));
    assert!(blob.exists(), "the compressed layer is in the registry");

    // Another server runs it from the registry like any image.
    let other = Server::start_with_config(&reg.paddock_config());
    let oc = other.client();
    let vm = oc
        .create_vm(json!({"image_variant": reg.reference("test/snap:v1")}))
        .await;
    assert_eq!(vm["status"], "active", "{vm}");
    let (out, _, _) = oc
        .exec(
            vm["vm_id"].as_str().expect("id"),
            "cat made; echo $FROM_IMAGE; test -e /bin/ls || echo no-ls",
        )
        .await;
    assert_eq!(out, "from-snapshot\n1\nno-ls\n");

    // POST /v1/snapshots makes one straight from an image, asynchronously.
    let made = c
        .post(
            "/v1/snapshots",
            json!({"oci_image": reg.reference("test/base:v1"), "name": "from-image", "type": "system"}),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    let mid = made.body["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = c.get(&format!("/v1/snapshots/{mid}")).await.body;
        if s["status"] == "ready" {
            break;
        }
        assert_ne!(s["status"], "failed", "{s}");
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let system = c.get("/v1/snapshots?type=system").await.body;
    assert_eq!(system.as_array().map(Vec::len), Some(1), "{system}");
    assert_eq!(c.get("/v1/snapshots?type=bogus").await.status, 422);
}
