//! The VM API's lifecycle, limits and errors, driven over HTTP against a
//! real server and real sandboxes.

mod common;

use std::time::{Duration, Instant};

use common::{host_processes_mentioning, sandbox_cgroups, settled, Server};
use serde_json::json;

#[tokio::test]
async fn create_get_list_patch_delete() {
    let server = Server::start();
    let c = server.client();
    let vm = c
        .create_vm(json!({"memory_mb": 256, "vcpu_count": 2, "metadata": {"team": "a"}, "env": {"GREETING": "hi"}}))
        .await;
    let id = vm["vm_id"].as_str().expect("vm_id");
    assert!(vm["session_id"].as_str().is_some_and(|s| s.len() == 36));
    assert_eq!(vm["env_status"], "none");
    assert_eq!(vm["memory_mb"], 256);

    let got = c.get(&format!("/v1/vms/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["metadata"]["team"], "a");
    // env values are never returned, only their names
    assert!(!got.body.to_string().contains("\"hi\""));

    let (out, _, exit) = c
        .exec(
            id,
            "echo $GREETING; nproc; cat /sys/fs/cgroup/memory.max 2>/dev/null || true",
        )
        .await;
    assert!(out.starts_with("hi\n"), "{out}");
    assert_eq!(exit["exit_code"], 0);

    let list = c.get("/v1/vms").await;
    assert!(list
        .body
        .as_array()
        .expect("array")
        .iter()
        .any(|v| v["vm_id"] == id));

    let patched = c
        .send(c.req(reqwest::Method::PATCH, &format!("/v1/vms/{id}")).json(&json!({"metadata": {"team": "b"}, "memory_mb": 300, "vm_lifetime_seconds": 600})))
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["metadata"]["team"], "b");
    assert_eq!(patched.body["memory_mb"], 300);
    assert!(patched.body["expires_at"].is_string());

    // A refused patch changes nothing: not the record, not the cgroup.
    let refused = c
        .send(
            c.req(reqwest::Method::PATCH, &format!("/v1/vms/{id}"))
                .json(&json!({"memory_mb": 400, "vm_lifetime_seconds": 999_999_999})),
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(
        refused.body["detail"][0]["loc"],
        json!(["body", "vm_lifetime_seconds"])
    );
    assert_eq!(c.get(&format!("/v1/vms/{id}")).await.body["memory_mb"], 300);
    let instance = paddock_runtime::container::instance_id(&server.data_dir());
    let limit = ["memory/paddock", "paddock"]
        .iter()
        .map(|rel| {
            std::path::Path::new("/sys/fs/cgroup")
                .join(rel)
                .join(&instance)
                .join(id)
        })
        .find_map(|d| {
            std::fs::read_to_string(d.join("memory.limit_in_bytes"))
                .or_else(|_| std::fs::read_to_string(d.join("memory.max")))
                .ok()
        })
        .expect("the VM's memory cgroup");
    assert_eq!(limit.trim(), (300u64 << 20).to_string());

    // A container cannot be suspended with its memory: a 409 saying why,
    // and it runs on.
    let suspend = c.post(&format!("/v1/vms/{id}/suspend"), json!({})).await;
    assert_eq!(suspend.status, 409, "{}", suspend.body);
    let why = suspend.body["detail"].as_str().unwrap_or_default();
    assert!(
        why.contains("namespaces") && why.contains("microVM"),
        "{why}"
    );
    assert_eq!(
        c.get(&format!("/v1/vms/{id}")).await.body["status"],
        "active"
    );

    let deleted = c.delete(&format!("/v1/vms/{id}")).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.body["status"], "terminated");
    let again = c.delete(&format!("/v1/vms/{id}")).await;
    assert_eq!(again.status, 200, "delete is idempotent");
    assert_eq!(again.body["status"], "terminated");

    let active = c.get("/v1/vms").await;
    assert!(!active
        .body
        .as_array()
        .expect("array")
        .iter()
        .any(|v| v["vm_id"] == id));
    let all = c.get("/v1/vms/").await;
    assert!(all
        .body
        .as_array()
        .expect("array")
        .iter()
        .any(|v| v["vm_id"] == id));
    let exec_after = c
        .post(&format!("/v1/vms/{id}/exec"), json!({"command": "true"}))
        .await;
    assert_eq!(exec_after.status, 409);
}

#[tokio::test]
async fn create_without_wait_returns_creating() {
    let server = Server::start();
    let c = server.client();
    let r = c.post("/v1/vms?wait=false", json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "creating");
    let id = r.body["vm_id"].as_str().expect("vm_id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = c.get(&format!("/v1/vms/{id}")).await.body["status"].clone();
        if s == "active" {
            break;
        }
        assert!(Instant::now() < deadline, "never became active: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn list_filters_and_paginates() {
    let server = Server::start();
    let c = server.client();
    let mut ids = Vec::new();
    for i in 0..3 {
        let vm = c
            .create_vm(json!({"session_id": format!("s{}", i % 2)}))
            .await;
        ids.push(vm["vm_id"].as_str().expect("id").to_owned());
    }
    let page = c.get("/v1/vms?limit=2").await;
    assert_eq!(page.body.as_array().expect("array").len(), 2);
    let cursor = page
        .headers
        .get("x-next-cursor")
        .expect("a next page")
        .to_str()
        .expect("ascii")
        .to_owned();
    let next = c.get(&format!("/v1/vms?limit=2&cursor={cursor}")).await;
    let rest: Vec<_> = next
        .body
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v["vm_id"].clone())
        .collect();
    assert_eq!(rest, vec![json!(ids[0])]);
    assert!(next.headers.get("x-next-cursor").is_none());

    let s0 = c.get("/v1/vms?session_id=s0").await;
    assert_eq!(s0.body.as_array().expect("array").len(), 2);
    let terminated = c.get("/v1/vms?status=terminated").await;
    assert_eq!(terminated.body.as_array().expect("array").len(), 0);
    let bad = c.get("/v1/vms?limit=0").await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.body["detail"][0]["loc"], json!(["query", "limit"]));
}

#[tokio::test]
async fn lifetime_expiry_terminates_the_vm() {
    let server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({"vm_lifetime_seconds": 1})).await;
    let id = vm["vm_id"].as_str().expect("id");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = c.get(&format!("/v1/vms/{id}")).await;
        if got.body["status"] == "terminated" {
            assert_eq!(got.body["status_reason"], "lifetime expired");
            break;
        }
        assert!(Instant::now() < deadline, "not terminated: {}", got.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(settled(|| sandbox_cgroups(&server.data_dir())), 0);
}

#[tokio::test]
async fn lifetime_expiry_survives_a_restart() {
    let mut server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({"vm_lifetime_seconds": 2})).await;
    let id = vm["vm_id"].as_str().expect("id").to_owned();
    server.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = c.get(&format!("/v1/vms/{id}")).await;
        if got.body["status"] == "terminated" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not terminated after restart: {}",
            got.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        settled(|| host_processes_mentioning(&server.data_dir().join("sandboxes").join(&id))),
        0
    );
}

#[tokio::test]
async fn memory_limit_kills_the_hog_not_the_vm() {
    let server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({"memory_mb": 64})).await;
    let id = vm["vm_id"].as_str().expect("id");
    let (_, _, exit) = c
        .exec(
            id,
            "python3 -c 'b = bytearray(256 * 1024 * 1024); print(len(b))'",
        )
        .await;
    assert_eq!(exit["exit_code"], 137, "{exit}");
    assert_eq!(exit["oom_killed"], true, "{exit}");
    let (out, _, exit) = c.exec(id, "echo still-here").await;
    assert_eq!(out, "still-here\n");
    assert_eq!(exit["exit_code"], 0);
}

#[tokio::test]
async fn fork_bomb_is_contained() {
    let server = Server::start_with(&[("PADDOCK_LIMITS__PIDS_MAX", "64")]);
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let id = vm["vm_id"].as_str().expect("id");
    let started = Instant::now();
    let (_, _, exit) = c
        .exec_body(
            id,
            // The bomb goes off in a child shell (one fork, while there
            // are pids to spare); the busy loop needs no fork, so the
            // command runs into its timeout however fast the bomb
            // exhausts the pids limit, and whatever the bomb's shell does.
            json!({"command": "sh -c 'bomb() { bomb | bomb & }; bomb'; while :; do :; done", "timeout_seconds": 3}),
        )
        .await;
    assert_eq!(exit["timed_out"], true, "{exit}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let health = c.get("/healthz").await;
    assert_eq!(health.status, 200);
    // The VM recovers once the bomb's processes are gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c
            .post(
                &format!("/v1/vms/{id}/exec"),
                json!({"command": "echo alive"}),
            )
            .await;
        if r.status == 200 && r.body.to_string().contains("alive") {
            break;
        }
        assert!(Instant::now() < deadline, "VM did not recover: {}", r.body);
        c.post(
            &format!("/v1/vms/{id}/exec"),
            json!({"command": ["/bin/kill", "-9", "-1"]}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn exec_streams_stdin_exit_codes_and_timeouts() {
    let server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let id = vm["vm_id"].as_str().expect("id");

    let (out, err, exit) = c.exec(id, "echo out; echo err >&2; exit 7").await;
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    assert_eq!(exit["exit_code"], 7);

    let (out, _, _) = c
        .exec_body(id, json!({"command": "tr a-z A-Z", "stdin": "shout"}))
        .await;
    assert_eq!(out, "SHOUT");

    let (out, _, _) = c
        .exec_body(
            id,
            json!({"command": ["printf", "%s|", "a b", "c"], "cwd": "/tmp", "env": {"X": "1"}}),
        )
        .await;
    assert_eq!(out, "a b|c|");

    let started = Instant::now();
    let (_, _, exit) = c
        .exec_body(id, json!({"command": "sleep 30", "timeout_seconds": 1}))
        .await;
    assert_eq!(exit["timed_out"], true);
    assert_eq!(exit["exit_code"], 137);
    assert!(started.elapsed() < Duration::from_secs(10));

    let (_, err, exit) = c
        .exec_body(id, json!({"command": ["/no/such/binary"]}))
        .await;
    assert_eq!(exit["exit_code"], 127);
    assert!(err.contains("No such file"), "{err}");

    let r = c
        .post(
            "/execute",
            json!({"command": "print(6*7)", "language": "python", "session_id": vm["session_id"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["stdout"], "42\n");
    assert!(r.body["execution_time"].as_f64().is_some());
    assert!(r.body["cpu_time"].as_f64().is_some());
}

#[tokio::test]
async fn execs_release_their_connections_and_a_dropped_stream_kills_its_command() {
    let server = Server::start();
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let id = vm["vm_id"].as_str().expect("id");
    c.exec(id, "true").await;
    let before = server.open_fds();
    for _ in 0..40 {
        c.exec_body(id, json!({"command": "cat", "stdin": "x"}))
            .await;
        let r = c
            .post(
                "/execute",
                json!({"command": "true", "session_id": vm["session_id"]}),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let after = server.open_fds();
    assert!(
        after <= before + 4,
        "the server holds {before} fds before 80 execs and {after} after"
    );

    // A streaming exec whose caller goes away is killed in the sandbox
    // (noticed at its next output: HTTP tells the server only on a write).
    let resp = c
        .req(reqwest::Method::POST, &format!("/v1/vms/{id}/exec"))
        .json(&json!({"command": "echo started; while true; do echo tick-tock; sleep 0.2; done"}))
        .send()
        .await
        .expect("exec");
    let mut stream = resp.bytes_stream();
    let first = futures::StreamExt::next(&mut stream)
        .await
        .expect("a chunk")
        .expect("bytes");
    assert!(String::from_utf8_lossy(&first).contains("started"));
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (out, _, _) = c.exec(id, "ps -eo args").await;
        if !out.contains("tick-tock") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned command still runs: {out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn bulk_delete_ends_what_it_names_and_nothing_else() {
    let server = Server::start();
    let c = server.client();
    let mut batch = Vec::new();
    for _ in 0..3 {
        let vm = c
            .create_vm(json!({"metadata": {"batch": "a", "owner": "ci"}}))
            .await;
        batch.push(vm["vm_id"].as_str().expect("id").to_owned());
    }
    let kept = c.create_vm(json!({"metadata": {"batch": "b"}})).await;
    let kept = kept["vm_id"].as_str().expect("id").to_owned();
    let other = c.with_key(Some(&server.other_account_key()));
    let foreign = other.create_vm(json!({"metadata": {"batch": "a"}})).await;
    let foreign = foreign["vm_id"].as_str().expect("id").to_owned();

    // Nothing to select by is refused, naming the field; an id the caller
    // does not have is not found, and nothing is ended.
    let r = c.post("/v1/vms/bulk-delete", json!({})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "vm_ids"]));
    let r = c
        .post(
            "/v1/vms/bulk-delete",
            json!({"vm_ids": [batch[0], foreign]}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        c.get(&format!("/v1/vms/{}", batch[0])).await.body["status"],
        "active"
    );

    // By metadata: the caller's three, not the other account's.
    let ips: Vec<String> = {
        let mut ips = Vec::new();
        for id in &batch {
            let vm = c.get(&format!("/v1/vms/{id}")).await;
            ips.push(vm.body["ip_address"].as_str().expect("ip").to_owned());
        }
        ips
    };
    let r = c
        .post("/v1/vms/bulk-delete", json!({"metadata": {"batch": "a"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["deleted"], 3, "{}", r.body);
    assert_eq!(r.body["failed"], json!([]));
    for (id, ip) in batch.iter().zip(&ips) {
        let vm = c.get(&format!("/v1/vms/{id}")).await;
        assert_eq!(vm.body["status"], "terminated");
        // Its namespace and its link are gone when the call returns.
        let port = format!(
            "vp{:08x}",
            u32::from(ip.parse::<std::net::Ipv4Addr>().expect("ip"))
        );
        assert!(
            !std::path::Path::new("/sys/class/net").join(&port).exists(),
            "{port}"
        );
        let netns = server.data_dir().join("net/netns").join(ip);
        assert!(!netns.exists(), "{} left behind", netns.display());
    }
    assert_eq!(
        c.get(&format!("/v1/vms/{kept}")).await.body["status"],
        "active"
    );
    assert_eq!(
        other.get(&format!("/v1/vms/{foreign}")).await.body["status"],
        "active"
    );
    // Again: they ended already, nothing to do.
    let r = c
        .post("/v1/vms/bulk-delete", json!({"metadata": {"batch": "a"}}))
        .await;
    assert_eq!(r.body["deleted"], 0, "{}", r.body);

    // By id, and the address of an ended VM serves a new one.
    let r = c
        .post("/v1/vms/bulk-delete", json!({"vm_ids": [kept]}))
        .await;
    assert_eq!(r.body["vm_ids"], json!([kept]), "{}", r.body);
    let fresh = c.create_vm(json!({})).await;
    assert_eq!(fresh["status"], "active", "{fresh}");
    let fresh_id = fresh["vm_id"].as_str().expect("id");
    let (out, _, _) = c.exec(fresh_id, "echo up").await;
    assert_eq!(out, "up\n");
    // By session.
    let r = c
        .post(
            "/v1/vms/bulk-delete",
            json!({"session_id": fresh["session_id"]}),
        )
        .await;
    assert_eq!(r.body["vm_ids"], json!([fresh_id]), "{}", r.body);
}
