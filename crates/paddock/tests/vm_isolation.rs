//! Isolation, tenancy, restart survival and cleanup, against real
//! sandboxes.

mod common;

use std::time::Duration;

use common::{host_processes_mentioning, sandbox_cgroups, sandbox_processes, settled, Server};
use serde_json::json;

#[tokio::test]
async fn sandboxes_cannot_see_the_host_or_each_other() {
    let server = Server::start();
    let c = server.client();
    let marker = server.dir.path().join("host-secret.txt");
    std::fs::write(&marker, "s3cr3t-content").expect("write host file");
    let a = c.create_vm(json!({})).await;
    let b = c.create_vm(json!({})).await;
    let (a, b) = (
        a["vm_id"].as_str().expect("id"),
        b["vm_id"].as_str().expect("id"),
    );

    let (out, _, _) = c
        .exec(
            a,
            &format!(
                "cat {} 2>&1; ls /work 2>&1; cat /etc/shadow 2>&1",
                marker.display()
            ),
        )
        .await;
    assert!(!out.contains("s3cr3t-content"), "{out}");
    assert!(out.contains("No such file"), "{out}");

    let (_, _, _) = c
        .exec(a, "echo mine > /tmp/a-file; sleep 600 >/dev/null 2>&1 &")
        .await;
    let (out, _, _) = c
        .exec(b, "cat /tmp/a-file 2>&1; echo rc=$?; ps -eo args")
        .await;
    assert!(out.contains("rc=1"), "{out}");
    assert!(!out.contains("mine"), "{out}");
    assert!(!out.contains("sleep 600"), "{out}");

    // Loopback and the VM's own veth; no host interfaces.
    let (out, _, _) = c.exec(a, "cat /proc/net/dev").await;
    let ifaces: Vec<_> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, vec!["lo", "eth0"], "{out}");

    // Privileged operations are refused.
    let (_, _, exit) = c.exec(a, "mount -t tmpfs none /mnt").await;
    assert_ne!(exit["exit_code"], 0);
    let (out, _, _) = c.exec(a, "unshare -U true 2>&1; echo rc=$?").await;
    assert!(out.contains("rc=1"), "{out}");
    let (out, _, _) = c.exec(a, "grep CapEff /proc/self/status").await;
    assert!(!out.contains("000001ff"), "{out}");
}

#[tokio::test]
async fn another_accounts_vm_is_not_found() {
    let server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let id = vm["vm_id"].as_str().expect("id");
    let other = c.with_key(Some(&server.other_account_key()));

    assert_eq!(other.get(&format!("/v1/vms/{id}")).await.status, 404);
    assert_eq!(
        other
            .post(&format!("/v1/vms/{id}/exec"), json!({"command": "id"}))
            .await
            .status,
        404
    );
    assert_eq!(
        other
            .get(&format!("/v1/vms/{id}/files?path=/etc/hostname"))
            .await
            .status,
        404
    );
    assert_eq!(other.delete(&format!("/v1/vms/{id}")).await.status, 404);
    assert_eq!(
        other
            .get(&format!(
                "/v1/sessions/status/{}",
                vm["session_id"].as_str().expect("sid")
            ))
            .await
            .status,
        404
    );
    let r = other
        .post(
            "/execute",
            json!({"command": "id", "session_id": vm["session_id"]}),
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(other
        .get("/v1/vms/")
        .await
        .body
        .as_array()
        .expect("array")
        .is_empty());
    // and the VM is untouched
    assert_eq!(
        c.get(&format!("/v1/vms/{id}")).await.body["status"],
        "active"
    );
}

#[tokio::test]
async fn keys_are_required_and_checked() {
    let server = Server::start();
    let c = server.client();
    assert_eq!(c.with_key(None).get("/v1/vms").await.status, 401);
    assert_eq!(
        c.with_key(Some("pdk_wrong")).get("/v1/vms").await.status,
        401
    );
    let bearer = c
        .send(
            c.with_key(None)
                .req(reqwest::Method::GET, "/v1/vms")
                .bearer_auth(&server.key),
        )
        .await;
    assert_eq!(bearer.status, 200);
    let r = c.with_key(None).get("/v1/vms").await;
    assert!(r.body["detail"].is_string());
}

#[tokio::test]
async fn vms_survive_a_server_crash_and_dead_ones_are_marked() {
    let mut server = Server::start();
    let c = server.client();
    let keep = c.create_vm(json!({})).await;
    let dies = c.create_vm(json!({})).await;
    let keep_id = keep["vm_id"].as_str().expect("id");
    let dies_id = dies["vm_id"].as_str().expect("id");
    c.exec(keep_id, "echo persisted > /root/state").await;
    let pty = c
        .post(
            &format!("/v1/vms/{keep_id}/pty/sessions"),
            json!({"command": "sleep 600"}),
        )
        .await;
    assert_eq!(pty.status, 200, "{}", pty.body);

    server.kill();
    // While the server is down: one sandbox dies, and an orphan appears.
    // Its runtime state is on the server's tmpfs, which outlives it.
    let boot = std::fs::read_to_string(
        server
            .data_dir()
            .join("run")
            .join(dies_id)
            .join("boot.json"),
    )
    .expect("boot config");
    assert!(boot.contains("agent.sock"));
    let pid = common::sandbox_init_pid(dies_id);
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    let orphan = server
        .data_dir()
        .join("sandboxes")
        .join("vm_orphan00000000000000");
    std::fs::create_dir_all(orphan.join("upper")).expect("orphan dir");
    let orphan_state = server
        .data_dir()
        .join("run")
        .join("vm_orphan11111111111111");
    std::fs::create_dir_all(orphan_state.join("root")).expect("orphan runtime dir");
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.restart();
    let (out, _, exit) = c.exec(keep_id, "cat /root/state").await;
    assert_eq!(out, "persisted\n");
    assert_eq!(exit["exit_code"], 0);
    let ptys = c.get(&format!("/v1/vms/{keep_id}/pty/sessions")).await;
    assert_eq!(
        ptys.body["sessions"].as_array().expect("sessions").len(),
        1,
        "PTYs live in the sandbox"
    );
    let dead = c.get(&format!("/v1/vms/{dies_id}")).await;
    assert_eq!(dead.body["status"], "failed", "{}", dead.body);
    assert!(!orphan.exists(), "orphaned run dirs are removed at start");
    assert!(!orphan_state.exists(), "and orphaned runtime dirs");
    assert!(!server.data_dir().join("sandboxes").join(dies_id).exists());
    assert!(!server.data_dir().join("run").join(dies_id).exists());
}

#[tokio::test]
async fn fifty_create_delete_cycles_leave_nothing_behind() {
    let server = Server::start();
    let c = server.client();
    for _ in 0..50 {
        let vm = c.create_vm(json!({})).await;
        let id = vm["vm_id"].as_str().expect("id");
        let (out, _, _) = c.exec(id, "echo ok").await;
        assert_eq!(out, "ok\n");
        assert_eq!(c.delete(&format!("/v1/vms/{id}")).await.status, 200);
    }
    let sandboxes = server.data_dir().join("sandboxes");
    assert_eq!(std::fs::read_dir(&sandboxes).expect("dir").count(), 0);
    // Their runtime dirs went too: the server's tmpfs holds only its trash.
    let runtime = server.data_dir().join("run");
    let left: Vec<_> = std::fs::read_dir(&runtime)
        .expect("the runtime tmpfs")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "trash")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(settled(|| sandbox_cgroups(&server.data_dir())), 0);
    assert_eq!(settled(|| host_processes_mentioning(&sandboxes)), 0);
    assert_eq!(settled(|| sandbox_processes(&server.data_dir())), 0);
    // Purging a stopped server's data dir leaves no cgroup of it at all.
    let instance = paddock_runtime::container::instance_id(&server.data_dir());
    let mut server = server;
    server.kill();
    paddock_runtime::container::purge(
        &server.data_dir(),
        std::path::Path::new(paddock_runtime::container::DEFAULT_LOCAL_ROOT),
    )
    .expect("purge");
    for c in ["memory", "pids", "cpu", "freezer"] {
        let dir = std::path::Path::new("/sys/fs/cgroup")
            .join(c)
            .join("paddock")
            .join(&instance);
        assert!(!dir.exists(), "{} remains", dir.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&*sandboxes.to_string_lossy()),
        "no mount of a sandbox on the host"
    );
    assert!(
        !mounts.contains(&*runtime.to_string_lossy()),
        "purge unmounts the runtime tmpfs"
    );
    assert!(!runtime.exists());
}
