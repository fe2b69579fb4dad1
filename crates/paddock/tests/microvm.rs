//! The microvm provider, end to end over HTTP: real qemu guests running
//! Debian's kernel (under TCG on hosts without hardware virtualization,
//! so each boot takes seconds: the tests are few and do much each).

mod common;

use std::time::{Duration, Instant};

use common::{Client, Server};
use serde_json::{json, Value};

/// Every test server shares one cache of the uncompressed kernel and base
/// initramfs, so it is made once per run.
fn server() -> Server {
    let cache = std::env::temp_dir().join("paddock-test-microvm-cache");
    Server::start_with(&[(
        "PADDOCK_MICROVM__CACHE_DIR",
        cache.to_str().expect("utf-8 temp dir"),
    )])
}

async fn new_microvm(c: &Client, body: Value) -> String {
    let mut body = body;
    body["provider"] = json!("microvm");
    let vm = c.create_vm(body).await;
    assert_eq!(vm["status"], "active", "{vm}");
    assert_eq!(vm["provider"], "microvm");
    let accelerator = vm["accelerator"].as_str().expect("accelerator");
    assert!(["kvm", "tcg"].contains(&accelerator), "{vm}");
    vm["vm_id"].as_str().expect("vm id").to_owned()
}

/// qemu processes of the VM `vm` on the host (qemu runs as `-name VM`).
fn qemu_processes(vm: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.first()
                    .is_some_and(|a| a.ends_with(b"qemu-system-x86_64"))
                    && args
                        .windows(2)
                        .any(|w| w[0] == b"-name" && w[1] == vm.as_bytes())
            })
        })
        .collect()
}

async fn wait_gone(vm: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !qemu_processes(vm).is_empty() {
        assert!(Instant::now() < deadline, "qemu of {vm} outlived it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_microvm_has_its_own_kernel_limits_files_network_and_snapshots() {
    let server = server();
    let c = server.client();
    let r = c.post("/v1/vms", json!({"provider": "firecracker"})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.to_string().contains("provider"), "{}", r.body);
    let ready = c.get("/readyz").await;
    assert!(
        ready.body["runtime"]["microvm"]["accelerator"].is_string(),
        "{}",
        ready.body
    );

    let vm = new_microvm(&c, json!({"memory_mb": 384, "vcpu_count": 2})).await;
    assert_eq!(qemu_processes(&vm).len(), 1);

    // The guest's kernel is not the host's; its CPUs and memory are its own.
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let (out, err, exit) = c
        .exec(&vm, "uname -r; nproc; grep MemTotal /proc/meminfo")
        .await;
    assert_eq!(exit["exit_code"], 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], host_kernel.trim(), "{out}");
    assert_eq!(lines[1], "2", "{out}");
    let mem_kb: u64 = lines[2]
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse().ok())
        .expect("MemTotal");
    assert!((250_000..=384 * 1024).contains(&mem_kb), "{out}");

    // Files through the API land in the guest and back.
    let put = c
        .send(
            c.req(
                reqwest::Method::PUT,
                &format!("/v1/vms/{vm}/files?path=/root/in.txt"),
            )
            .body("from the API\n"),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let (out, _, _) = c
        .exec(
            &vm,
            "cat /root/in.txt; echo written in the guest > /root/out.txt",
        )
        .await;
    assert_eq!(out, "from the API\n");
    let got = c
        .req(
            reqwest::Method::GET,
            &format!("/v1/vms/{vm}/files?path=/root/out.txt"),
        )
        .send()
        .await
        .expect("download")
        .text()
        .await
        .expect("body");
    assert_eq!(got, "written in the guest\n");

    // The guest is on paddock's bridge under the host-side rules: it has
    // its address, and the host's own services stay closed to it.
    let ip = c.get(&format!("/v1/vms/{vm}")).await.body["ip_address"]
        .as_str()
        .expect("ip")
        .to_owned();
    let (out, _, _) = c.exec(&vm, "ip -4 -o addr show eth0").await;
    assert!(out.contains(&format!("{ip}/32")), "{out}");
    let port = server.base.rsplit(':').next().expect("port");
    let (out, _, _) = c
        .exec(
            &vm,
            &format!(
                "python3 -c 'import socket; s=socket.socket(); s.settimeout(5)\ntry:\n s.connect((\"$(ip route show default | cut -d\" \" -f3)\", {port})); print(\"open\")\nexcept OSError as e: print(\"closed\", e)'"
            ),
        )
        .await;
    assert!(out.starts_with("closed"), "{out}");

    // A snapshot holds what the guest wrote; a container restores it.
    let snap = c
        .post(
            &format!("/v1/vms/{vm}/snapshot"),
            json!({"name": "from-a-microvm"}),
        )
        .await;
    assert_eq!(snap.status, 200, "{}", snap.body);
    let restored = c
        .create_vm(json!({"snapshot_id": snapshot_id(&snap.body)}))
        .await;
    assert_eq!(restored["status"], "active", "{restored}");
    let restored = restored["vm_id"].as_str().expect("id");
    let (out, _, _) = c.exec(restored, "cat /root/out.txt").await;
    assert_eq!(out, "written in the guest\n");

    // A microVM cannot change its memory after boot: a clear refusal.
    let r = c
        .send(
            c.req(reqwest::Method::PATCH, &format!("/v1/vms/{vm}"))
                .json(&json!({"memory_mb": 512})),
        )
        .await;
    assert!(r.status >= 400 && r.status < 500, "{} {}", r.status, r.body);

    assert_eq!(c.delete(&format!("/v1/vms/{vm}")).await.status, 200);
    wait_gone(&vm).await;
    let run_dir = server.data_dir().join("sandboxes").join(&vm);
    assert!(!run_dir.exists(), "{} is left", run_dir.display());
}

#[tokio::test]
async fn a_microvm_outlives_a_server_restart() {
    let mut server = server();
    let c = server.client();
    let vm = new_microvm(&c, json!({})).await;
    let (_, err, exit) = c.exec(&vm, "echo kept > /root/marker").await;
    assert_eq!(exit["exit_code"], 0, "{err}");
    let before = qemu_processes(&vm);
    assert_eq!(before.len(), 1);

    server.restart();
    let c = server.client();
    assert_eq!(qemu_processes(&vm), before, "the same qemu runs the guest");
    let got = c.get(&format!("/v1/vms/{vm}")).await;
    assert_eq!(got.body["status"], "active", "{}", got.body);
    let (out, _, _) = c.exec(&vm, "cat /root/marker").await;
    assert_eq!(out, "kept\n");

    // Whatever the guest writes to its console, the host keeps at most
    // 1 MiB of it (the monitor copies it; it outlived the restart too).
    let (out, err, _) = c
        .exec(
            &vm,
            "head -c 1100000 /dev/zero | tr '\\0' x > /dev/console; echo written",
        )
        .await;
    assert_eq!(out, "written\n", "{err}");
    let log = server
        .data_dir()
        .join("sandboxes")
        .join(&vm)
        .join("console.log");
    let console = std::fs::read_to_string(&log).expect("console log");
    assert!(
        console.contains("paddock-guest: serving"),
        "boot marks kept"
    );
    assert!(console.contains("console output beyond 1 MiB is dropped"));
    assert!(console.len() < (1 << 20) + 200, "{} bytes", console.len());

    assert_eq!(c.delete(&format!("/v1/vms/{vm}")).await.status, 200);
    wait_gone(&vm).await;
}

/// A snapshot's id from its answer.
fn snapshot_id(body: &Value) -> String {
    body["id"]
        .as_str()
        .or_else(|| body["snapshot_id"].as_str())
        .expect("snapshot id")
        .to_owned()
}

/// The end of a microVM's console and monitor logs, for a failure's
/// message.
fn guest_logs(run: &std::path::Path) -> String {
    ["console.log", "vmm.log"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(run.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            format!(
                "{name}:\n{}",
                lines[lines.len().saturating_sub(15)..].join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether no microVM disk is open on the host (a snapshot's view).
fn no_disk_views() -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    !mounts.lines().any(|l| l.contains("/disk-view "))
}

#[tokio::test]
async fn a_microvm_from_an_image_boots_from_block_devices() {
    use common::registry::{busybox_base, config_json, gzip, push, Registry, GZIP};
    let reg = Registry::start();
    push(
        &reg.reference("test/guest:v1"),
        vec![(gzip(&busybox_base().bytes()), GZIP)],
        config_json(&["PATH=/bin", "FROM_IMAGE=1"], "/work", ""),
    )
    .await;
    let cache = std::env::temp_dir().join("paddock-test-microvm-cache");
    let mut server = Server::start_full_env(
        &[(
            "PADDOCK_MICROVM__CACHE_DIR",
            cache.to_str().expect("utf-8 temp dir"),
        )],
        &reg.paddock_config(),
    );
    let c = server.client();
    let vm = new_microvm(&c, json!({"image_variant": reg.reference("test/guest:v1")})).await;
    // Its root is the image's, assembled in the guest over two disks:
    // nothing is shared with the host.
    let (out, err, exit) = c
        .exec(
            &vm,
            "echo $FROM_IMAGE; pwd; grep -c ' / overlay ' /proc/mounts; ls /sys/block | grep -c vd; \
             echo kept > /work/file; cat /work/file",
        )
        .await;
    assert_eq!(exit["exit_code"], 0, "{err}");
    assert_eq!(out, "1\n/work\n1\n2\nkept\n", "{err}");
    let pid = qemu_processes(&vm);
    assert_eq!(pid.len(), 1);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid[0])).expect("cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(!cmdline.contains("vhost-user-fs"), "{cmdline}");
    assert!(cmdline.contains("virtio-blk-device"), "{cmdline}");

    // Suspend with memory: a counter that lives only in a shell's memory
    // goes on from where it was, in the same process.
    let (out, err, _) = c
        .exec(
            &vm,
            "(marker=paddock-memory-marker-$((6*7))-in-clear; \
              i=0; while :; do i=$((i+1)); echo $i > /work/count; sleep 0.1; done) \
             </dev/null >/dev/null 2>&1 & echo $!",
        )
        .await;
    let counter: u32 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid: {out} {err}"));
    // And a listening socket, held by a server process.
    let (out, err, _) = c
        .exec(
            &vm,
            "busybox httpd -f -p 7000 -h /work </dev/null >/dev/null 2>&1 & echo $!",
        )
        .await;
    let listener: u32 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid: {out} {err}"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let instance = paddock_runtime::container::instance_id(&server.data_dir());
    let cgroups = || {
        ["memory/paddock", "cpu/paddock", "pids/paddock", "paddock"]
            .iter()
            .map(|controller| {
                std::path::Path::new("/sys/fs/cgroup")
                    .join(controller)
                    .join(&instance)
                    .join(&vm)
            })
            .filter(|dir| dir.exists())
            .collect::<Vec<_>>()
    };
    assert!(!cgroups().is_empty(), "the running VM's cgroups are found");
    let r = c.post(&format!("/v1/vms/{vm}/suspend"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "suspended", "{}", r.body);
    wait_gone(&vm).await;
    // Nothing of it is left on the host but files: no process, no cgroup.
    assert_eq!(cgroups(), Vec::<std::path::PathBuf>::new());
    let again = c.post(&format!("/v1/vms/{vm}/suspend"), json!({})).await;
    assert_eq!(again.status, 409, "{}", again.body);
    let exec = c
        .post(&format!("/v1/vms/{vm}/exec"), json!({"command": "true"}))
        .await;
    assert_eq!(exec.status, 409, "{}", exec.body);

    let r = c
        .post(&format!("/v1/vms/{vm}/resume?wait=true"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "active", "{}", r.body);
    assert_eq!(r.body["vm_id"], vm.as_str());
    let (before, _, _) = c.exec(&vm, "cat /work/count").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (out, err, exit) = c
        .exec(
            &vm,
            &format!(
                "kill -0 {counter} && echo alive; cat /work/count; cat /work/file; \
                 kill -0 {listener} && busybox wget -qO- http://127.0.0.1:7000/file"
            ),
        )
        .await;
    assert_eq!(exit["exit_code"], 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "alive", "{out}");
    // The same listener still accepts, and serves what was written.
    assert_eq!(lines.get(3), Some(&"kept"), "{out}");
    let (was, now): (u32, u32) = (
        before.trim().parse().expect("count"),
        lines[1].parse().expect("count"),
    );
    assert!(now > was, "the counter went on: {was} then {now}");
    assert_eq!(lines[2], "kept");
    let again = c.post(&format!("/v1/vms/{vm}/resume"), json!({})).await;
    assert_eq!(again.status, 409, "{}", again.body);

    // Its changes live on its own disk, which the host reads in user
    // space while the guest holds it frozen: a snapshot of the running VM
    // has what it wrote, and the guest writes on after it.
    let snap = c
        .post(
            &format!("/v1/vms/{vm}/snapshot"),
            json!({"name": "running-blocks"}),
        )
        .await;
    assert_eq!(
        snap.status,
        200,
        "{}\n{}",
        snap.body,
        guest_logs(&server.data_dir().join("sandboxes").join(&vm))
    );
    let (out, err, _) = c
        .exec(&vm, "echo after > /work/after && cat /work/after")
        .await;
    assert_eq!(out, "after\n", "the disk thawed: {err}");
    let restored = c
        .create_vm(json!({"snapshot_id": snapshot_id(&snap.body)}))
        .await;
    assert_eq!(restored["status"], "active", "{restored}");
    let restored = restored["vm_id"].as_str().expect("id");
    let (out, _, _) = c.exec(restored, "cat /work/file").await;
    assert_eq!(out, "kept\n");
    assert_eq!(c.delete(&format!("/v1/vms/{restored}")).await.status, 200);
    assert!(no_disk_views(), "a disk view is left mounted");

    // A suspended VM survives a server restart and a master key rotation,
    // and resumes after them. Its memory is sealed on disk: what the guest
    // held in memory is not there in clear, and an altered image does not
    // load (the VM stays suspended, with why).
    let r = c.post(&format!("/v1/vms/{vm}/suspend"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A suspended VM is cloned from its filesystem; it stays suspended.
    let clone = c.post(&format!("/v1/vms/{vm}/clone"), json!({})).await;
    assert_eq!(clone.status, 200, "{}", clone.body);
    let clone_id = clone.body["vm_id"].as_str().expect("clone id").to_owned();
    let (out, err, _) = c.exec(&clone_id, "cat /work/file /work/after").await;
    assert_eq!(out, "kept\nafter\n", "{err}");
    assert_eq!(c.delete(&format!("/v1/vms/{clone_id}")).await.status, 200);
    assert_eq!(
        c.get(&format!("/v1/vms/{vm}")).await.body["status"],
        "suspended"
    );
    assert!(qemu_processes(&vm).is_empty());
    assert!(no_disk_views(), "a disk view is left mounted");
    let image = server
        .data_dir()
        .join("sandboxes")
        .join(&vm)
        .join("memory.img");
    let mut sealed = std::fs::read(&image).expect("the saved memory");
    assert!(sealed.starts_with(b"PDKMEM1\n"));
    let marker = b"paddock-memory-marker-42-in-clear";
    assert!(!sealed.windows(marker.len()).any(|w| w == marker));
    server.kill();
    server.rotate_master_key();
    server.restart();
    let c = server.client();
    assert_eq!(
        c.get(&format!("/v1/vms/{vm}")).await.body["status"],
        "suspended"
    );
    let middle = sealed.len() / 2;
    sealed[middle] ^= 0x40;
    std::fs::write(&image, &sealed).expect("alter the image");
    let r = c.post(&format!("/v1/vms/{vm}/resume"), json!({})).await;
    assert_eq!(r.status, 409, "{}", r.body);
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("failed authentication"), "{}", r.body);
    let got = c.get(&format!("/v1/vms/{vm}")).await;
    assert_eq!(got.body["status"], "suspended", "{}", got.body);
    assert!(qemu_processes(&vm).is_empty());
    sealed[middle] ^= 0x40;
    std::fs::write(&image, &sealed).expect("restore the image");
    // Without waiting: the answer comes at once, the VM still suspended,
    // and it runs a moment later.
    let r = c
        .post(&format!("/v1/vms/{vm}/resume?wait=false"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "suspended", "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.get(&format!("/v1/vms/{vm}")).await.body["status"] != "active" {
        assert!(Instant::now() < deadline, "the dispatched resume never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (out, err, _) = c
        .exec(
            &vm,
            &format!("kill -0 {counter} && echo alive; cat /work/file"),
        )
        .await;
    assert_eq!(out, "alive\nkept\n", "{err}");

    // Deleting a suspended VM frees its saved memory and disks.
    let r = c.post(&format!("/v1/vms/{vm}/suspend"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let run = server.data_dir().join("sandboxes").join(&vm);
    let saved = std::fs::metadata(run.join("memory.img")).expect("the saved memory");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(saved.permissions().mode() & 0o777, 0o600);
    let r = c.delete(&format!("/v1/vms/{vm}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "terminated", "{}", r.body);
    assert!(!run.exists(), "{} left behind", run.display());
}

#[tokio::test]
async fn an_expiring_microvm_is_suspended_and_a_call_resumes_it() {
    use common::registry::{busybox_base, config_json, gzip, push, Registry, GZIP};
    let reg = Registry::start();
    push(
        &reg.reference("test/auto:v1"),
        vec![(gzip(&busybox_base().bytes()), GZIP)],
        config_json(&["PATH=/bin"], "/work", ""),
    )
    .await;
    let cache = std::env::temp_dir().join("paddock-test-microvm-cache");
    let server = Server::start_full_env(
        &[(
            "PADDOCK_MICROVM__CACHE_DIR",
            cache.to_str().expect("utf-8 temp dir"),
        )],
        // One VM at a time: a suspended one does not count, and takes its
        // place again only when there is room.
        &format!(
            "{}[quotas.accounts.default]\nmax_vms = 1\n",
            reg.paddock_config()
        ),
    );
    let c = server.client();
    // A variant's microVM shares its root with the host: it cannot.
    let r = c
        .post(
            "/v1/vms",
            json!({"provider": "microvm", "auto_suspend": true}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "auto_suspend"]));

    let vm = new_microvm(
        &c,
        json!({"image_variant": reg.reference("test/auto:v1"), "vm_lifetime_seconds": 4,
               "auto_suspend": true, "auto_resume": true}),
    )
    .await;
    let (out, _, _) = c
        .exec(
            &vm,
            "(while :; do sleep 1; done) </dev/null >/dev/null 2>&1 & echo $!",
        )
        .await;
    let sleeper = out.trim().to_owned();
    // At the end of its lifetime it is suspended, not ended.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = c.get(&format!("/v1/vms/{vm}")).await;
        if got.body["status"] == "suspended" {
            assert!(got.body["expires_at"].is_null(), "{}", got.body);
            break;
        }
        assert_ne!(got.body["status"], "terminated", "{}", got.body);
        assert!(Instant::now() < deadline, "never suspended: {}", got.body);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_gone(&vm).await;
    // Its place is free while it is suspended; taken, it cannot resume.
    let other = c.create_vm(json!({})).await;
    let other = other["vm_id"].as_str().expect("vm id").to_owned();
    let r = c
        .post(&format!("/v1/vms/{vm}/exec"), json!({"command": "true"}))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.to_string().contains("max_vms"), "{}", r.body);
    assert_eq!(
        c.get(&format!("/v1/vms/{vm}")).await.body["status"],
        "suspended"
    );
    let r = c.delete(&format!("/v1/vms/{other}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // An exec resumes it, and its process is there.
    let probe = c
        .post(&format!("/v1/vms/{vm}/exec"), json!({"command": "true"}))
        .await;
    assert_eq!(
        probe.status,
        200,
        "{}\n{}",
        probe.body,
        guest_logs(&server.data_dir().join("sandboxes").join(&vm))
    );
    let (out, err, exit) = c
        .exec(&vm, &format!("kill -0 {sleeper} && echo resumed"))
        .await;
    assert_eq!(exit["exit_code"], 0, "{err}");
    assert_eq!(out, "resumed\n");
    let got = c.get(&format!("/v1/vms/{vm}")).await;
    assert_eq!(got.body["status"], "active", "{}", got.body);
    assert!(
        got.body["expires_at"].is_string(),
        "its lifetime starts again: {}",
        got.body
    );
    assert_eq!(got.body["auto_suspend"], true);
    let r = c.delete(&format!("/v1/vms/{vm}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_gone(&vm).await;
}
