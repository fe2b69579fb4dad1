//! A hostile tenant inside a default sandbox: every escape of the
//! hardening issue is tried against a real server started with a canary
//! secret in its environment, and each must be refused while the sandbox
//! keeps answering. See SECURITY.md for the threat model.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::{json, Value};

const CANARY: &str = "canary-7f3e9a1c-must-never-reach-a-sandbox";

/// A server whose environment holds the canary (as an operator's server
/// would hold cloud credentials or a database URL). It keeps a warm pool,
/// as a default server does, so the probes run in sandboxes booted ahead
/// of their create.
fn canary_server() -> Server {
    Server::start_with(&[
        ("CANARY_SECRET", CANARY),
        ("AWS_SECRET_ACCESS_KEY", CANARY),
        ("PADDOCK_SANDBOX__WARM_POOL", "2"),
        // Every freed loop device is removed, none kept for later boots.
        ("PADDOCK_SANDBOX__SPARE_LOOP_DEVICES", "0"),
    ])
}

/// Every way a process reads the environment or identity of another:
/// run as sandbox root in the default sandbox.
const PROBE: &str = r#"
import ctypes, errno, os, signal
libc = ctypes.CDLL(None, use_errno=True)
def call(name, nr, *args):
    r = libc.syscall(nr, *args)
    e = ctypes.get_errno()
    print(name, "OK" if r >= 0 else errno.errorcode.get(e, str(e)))
call("ptrace_attach", 101, 16, 1, 0, 0)
call("ptrace_seize", 101, 0x4206, 1, 0, 0)
buf = ctypes.create_string_buffer(16)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
local = iovec(ctypes.cast(buf, ctypes.c_void_p), 16)
remote = iovec(0x400000, 16)
call("process_vm_readv", 310, 1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
params = ctypes.create_string_buffer(120)
call("io_uring_setup", 425, 8, params)
call("userfaultfd", 323, 0)
call("perf_event_open", 298, 0, 0, -1, -1, 0)
call("bpf", 321, 0, 0, 0)
call("keyctl", 250, 0, 0)
call("add_key", 248, b"user", b"k", b"v", 1, -1)
call("request_key", 249, b"user", b"k", 0, 0)
call("init_module", 175, 0, 0, b"")
call("finit_module", 313, 0, b"", 0)
call("kexec_load", 246, 0, 0, 0, 0)
call("open_by_handle_at", 304, 0, 0, 0)
call("fsopen", 430, b"tmpfs", 0)
call("open_tree", 428, -100, b"/", 1)
call("mount", 165, b"none", b"/mnt", b"tmpfs", 0, 0)
call("unshare", 272, 0x10000000)
call("personality_bad", 135, 0x0040000)
for f in ["/proc/1/mem", "/proc/1/environ", "/proc/1/maps"]:
    try:
        open(f, "rb").read(16)
        print(f, "READ")
    except OSError as e:
        print(f, errno.errorcode.get(e.errno, e.errno))
for sig in (signal.SIGSTOP, signal.SIGKILL, signal.SIGTERM):
    try:
        os.kill(1, sig)
    except OSError:
        pass
print("signalled")
"#;

async fn exec_ok(c: &common::Client, vm: &str, command: &str) -> String {
    let (out, err, exit) = c.exec(vm, command).await;
    assert_eq!(exit["exit_code"], 0, "{command}: {out}{err}");
    out
}

#[tokio::test]
async fn a_tenant_owns_nothing_but_its_sandbox() {
    let server = canary_server();
    let c = server.client();
    // `disk_mb` is validated like `memory_mb`, and a refusal makes nothing.
    for bad in [json!(1), json!(-1), json!(1u64 << 40), json!("big")] {
        let r = c.post("/v1/vms", json!({ "disk_mb": bad })).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
        assert_eq!(
            r.body["detail"][0]["loc"],
            json!(["body", "disk_mb"]),
            "{}",
            r.body
        );
    }
    assert_eq!(c.get("/v1/vms").await.body, json!([]));
    let vm = c
        .create_vm(json!({"memory_mb": 256, "vcpu_count": 1, "disk_mb": 64}))
        .await;
    let id = vm["vm_id"].as_str().expect("id").to_owned();
    assert_eq!(vm["disk_mb"], 64, "{vm}");

    // 1. Nothing of the server's environment, by any path, and no host
    //    path in what the sandbox sees of its agent and mounts.
    let out = exec_ok(
        &c,
        &id,
        "env; for f in /proc/[0-9]*/environ; do cat $f 2>/dev/null | tr '\\0' '\\n'; done; \
         tr '\\0' ' ' < /proc/1/cmdline; echo; cat /proc/self/mountinfo /proc/net/unix",
    )
    .await;
    assert!(!out.contains(CANARY), "{out}");
    let data = server.data_dir().display().to_string();
    assert!(!out.contains(&data), "a host path is visible: {out}");
    assert!(out.contains("paddock-agent boot - vm_"), "{out}");

    // 2. The agent cannot be traced, read or stopped from inside.
    let r = c
        .send(
            c.req(
                reqwest::Method::PUT,
                &format!("/v1/vms/{id}/files?path=/tmp/probe.py"),
            )
            .body(PROBE),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let out = exec_ok(&c, &id, "python3 /tmp/probe.py").await;
    for line in out.lines().filter(|l| *l != "signalled") {
        assert!(
            line.ends_with(" EPERM") || line.ends_with(" EACCES"),
            "not refused: {line}\n{out}"
        );
    }
    assert!(out.contains("signalled"), "{out}");
    // Still answering, and still running.
    assert_eq!(exec_ok(&c, &id, "echo alive").await, "alive\n");

    // 3. Sandbox root is not host root: its own user namespace, a range
    //    of its own, and what it writes is owned by that range on disk.
    let out = exec_ok(
        &c,
        &id,
        "id -u; cat /proc/self/uid_map; touch /root/mine; stat -c %u /root/mine",
    )
    .await;
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields[0], "0", "{out}");
    assert_eq!(fields[1], "0", "{out}");
    let host_base: u32 = fields[2].parse().expect("host base");
    assert!(host_base >= 65536, "{out}");
    assert_eq!(fields[3], "65536", "{out}");
    assert_eq!(fields[4], "0", "root inside: {out}");
    let out = exec_ok(
        &c,
        &id,
        "ls -ln /usr/bin/env | awk '{print $3}'; grep CapEff /proc/self/status",
    )
    .await;
    assert!(out.starts_with("0\n"), "image files look root-owned: {out}");
    // Though not host root, it may bind low ports in its own network
    // namespace (set at boot through its own /proc, which stays
    // read-only for it), as root of a machine of its own could.
    let out = exec_ok(
        &c,
        &id,
        "cat /proc/sys/net/ipv4/ip_unprivileged_port_start; \
         python3 -c 'import socket; socket.socket().bind((\"0.0.0.0\", 80)); print(\"bound\")'; \
         echo 1024 > /proc/sys/net/ipv4/ip_unprivileged_port_start || echo refused",
    )
    .await;
    assert_eq!(out, "0\nbound\nrefused\n", "{out}");
    // A second sandbox gets another range.
    let other = c.create_vm(json!({})).await;
    let other_id = other["vm_id"].as_str().expect("id").to_owned();
    let map = exec_ok(&c, &other_id, "cat /proc/self/uid_map").await;
    assert!(!map.contains(&host_base.to_string()), "{map}");

    // 4. Disk: writing past the limit fails inside with ENOSPC; the host
    //    and the other sandbox are untouched.
    let (out, err, exit) = c
        .exec(
            &id,
            "dd if=/dev/zero of=/tmp/fill bs=1M count=200 2>&1; sync",
        )
        .await;
    assert!(out.contains("No space left on device"), "{out}{err}{exit}");
    assert_eq!(
        exec_ok(&c, &other_id, "echo fine > /tmp/f && cat /tmp/f").await,
        "fine\n"
    );
    assert_eq!(
        exec_ok(&c, &id, "rm /tmp/fill; echo freed").await,
        "freed\n"
    );

    // 6. It sees its own size.
    let out = exec_ok(
        &c,
        &id,
        "free -m | awk '/Mem:/ {print $2}'; nproc; python3 -c 'import os; print(os.cpu_count())'; \
         grep -c ^processor /proc/cpuinfo; cut -d' ' -f1 /proc/uptime",
    )
    .await;
    let v: Vec<&str> = out.lines().collect();
    assert_eq!(v[0], "256", "free: {out}");
    assert_eq!(v[1], "1", "nproc: {out}");
    assert_eq!(v[2], "1", "os.cpu_count: {out}");
    assert_eq!(v[3], "1", "cpuinfo: {out}");
    let uptime: f64 = v[4].parse().expect("uptime");
    assert!(uptime < 600.0, "the host's uptime: {out}");

    // After all of it, the sandbox still answers.
    assert_eq!(exec_ok(&c, &id, "echo still").await, "still\n");
    assert!(!server.log().contains(CANARY));

    // 7. Its disk's loop device goes with it: the kernel only unbinds a
    //    freed one, and every one left lengthens /proc/diskstats, which
    //    lxcfs reads for each sandbox's view of it.
    //    The disk image is in the sandbox's run dir; the device's record
    //    in its runtime dir, on the server's tmpfs.
    let run = server.data_dir().join("sandboxes").join(&id);
    let live = server.data_dir().join("run").join(&id);
    let image = run.join("disk.img").display().to_string();
    let n: u32 = std::fs::read_to_string(live.join("disk.loop"))
        .expect("the boot helper records its loop device")
        .trim()
        .parse()
        .expect("a device number");
    let backing = format!("/sys/block/loop{n}/loop/backing_file");
    assert!(
        std::fs::read_to_string(&backing).is_ok_and(|b| b.trim() == image),
        "loop{n} holds the disk"
    );
    assert_eq!(c.delete(&format!("/v1/vms/{id}")).await.status, 200);
    // Gone, or (another test's sandbox took the freed number) not ours.
    // The server's trash removes it just after the delete returns
    // (removing a device takes tens of milliseconds, off the delete's
    // path), so this waits a while for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let exists = std::path::Path::new(&format!("/sys/block/loop{n}")).exists();
        let bound = std::fs::read_to_string(&backing);
        let ours = bound.as_ref().is_ok_and(|b| b.trim() == image);
        if !ours && (!exists || bound.is_ok()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "loop{n} still holds the deleted VM's disk ({ours}) or was left unbound"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_agent_that_stops_answering_gives_504_and_deletes_fast() {
    let server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let id = vm["vm_id"].as_str().expect("id").to_owned();
    let pid = common::sandbox_init_pid(&id);
    // What a traced or wedged agent would do: it stops answering.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("stop the agent");

    let started = Instant::now();
    let r = c
        .post(
            &format!("/v1/vms/{id}/exec"),
            json!({"command": "echo hi", "timeout": 30}),
        )
        .await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(
        r.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("did not answer")),
        "{}",
        r.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let got = c.get(&format!("/v1/vms/{id}")).await;
    assert!(
        got.body["status_reason"]
            .as_str()
            .is_some_and(|r| r.contains("did not answer")),
        "{}",
        got.body
    );
    // Other calls fail fast while it is stuck.
    let started = Instant::now();
    let r = c
        .get(&format!("/v1/vms/{id}/files?path=/etc/hostname"))
        .await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // And the VM is freed at once.
    let started = Instant::now();
    assert_eq!(c.delete(&format!("/v1/vms/{id}")).await.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!server.data_dir().join("sandboxes").join(&id).exists());
}

#[tokio::test]
async fn a_running_servers_data_dir_is_locked() {
    let mut server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let id = vm["vm_id"].as_str().expect("id").to_owned();
    for args in [
        vec!["purge", "--data-dir"],
        vec!["rotate-master-key", "--data-dir"],
    ] {
        let out = std::process::Command::new(common::bin())
            .args(&args)
            .arg(server.data_dir())
            .output()
            .expect("run paddock");
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is in use by paddock (pid "), "{err}");
    }
    let second = std::process::Command::new(common::bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(server.data_dir())
        .output()
        .expect("run paddock serve");
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("is in use by"));
    // The live server lost nothing: its sandbox still answers.
    assert_eq!(exec_ok(&c, &id, "echo ok").await, "ok\n");
    // Stopped, it can be purged.
    server.kill();
    let out = std::process::Command::new(common::bin())
        .args(["purge", "--data-dir"])
        .arg(server.data_dir())
        .envs(server.env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run paddock purge");
    assert!(out.status.success(), "{out:?}");
    assert!(!server.data_dir().join("sandboxes").join(&id).exists());
}

#[tokio::test]
async fn a_microvm_guest_sees_nothing_of_the_servers_environment() {
    let server = canary_server();
    let c = server.client();
    let ready = c.get("/readyz").await;
    if ready.body["runtime"]["microvm"]["accelerator"].is_null() {
        eprintln!("skipped: no microVM provider here ({})", ready.body);
        return;
    }
    let r = c
        .post(
            "/v1/vms?wait=true",
            json!({"provider": "microvm", "memory_mb": 384}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["vm_id"].as_str().expect("id").to_owned();
    let out = exec_ok(
        &c,
        &id,
        "env; for f in /proc/[0-9]*/environ; do cat $f 2>/dev/null | tr '\\0' '\\n'; done",
    )
    .await;
    assert!(!out.contains(CANARY), "{out}");
    // The monitor and qemu on the host were started without it too.
    let leaked: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&id))
        })
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| String::from_utf8_lossy(&env).contains(CANARY))
        })
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
    let _: Value = c.delete(&format!("/v1/vms/{id}")).await.body;
}

/// Processes that do all a tenant can to outlive their sandbox (their own
/// session and process group, orphaned to the sandbox's init, deaf to
/// every signal they may ignore, one of them stopped) are gone with it:
/// its delete kills its pid namespace's PID 1, and the reap that follows
/// removes its cgroups only once they are empty.
#[tokio::test]
async fn detached_deaf_processes_do_not_outlive_their_delete() {
    let server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let id = vm["vm_id"].as_str().expect("id").to_owned();
    let before = common::sandbox_processes(&server.data_dir());
    let marker = format!("outlive-{}", std::process::id());
    let script = r#"import os, signal, time
for n in range(3):
    if os.fork() == 0:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1):
            signal.signal(s, signal.SIG_IGN)
        if n == 2:
            os.kill(os.getpid(), signal.SIGSTOP)
        while True:
            time.sleep(60)
time.sleep(0.5)
print("detached")
"#;
    let (out, err, exit) = c
        .exec(
            &id,
            &format!("python3 -c '{script}' {marker} </dev/null >/dev/null 2>&1 & sleep 1; echo detached"),
        )
        .await;
    assert_eq!(out.trim(), "detached", "{err} {exit}");
    let during = common::sandbox_processes(&server.data_dir());
    assert!(
        during >= before + 3,
        "the detached processes are not in the sandbox's cgroups: {before} before, {during} after"
    );

    assert_eq!(c.delete(&format!("/v1/vms/{id}")).await.status, 200);
    assert_eq!(
        common::settled(|| common::sandbox_processes(&server.data_dir())),
        0
    );
    assert_eq!(
        common::settled(|| common::sandbox_cgroups(&server.data_dir())),
        0
    );
    assert_eq!(
        common::settled(|| common::host_processes_mentioning(std::path::Path::new(&marker))),
        0
    );
}
