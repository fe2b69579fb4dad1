//! Two paddock processes over one PostgreSQL store, as the nodes of one
//! installation: what one writes the other reads, each keeps to its own
//! sandboxes, and writers racing through different processes still get
//! one winner. Runs when the suite has a PostgreSQL (`PADDOCK_TEST_POSTGRES`,
//! set by `scripts/test.sh`); without one there is nothing to share.

mod common;

use common::Server;
use serde_json::{json, Value};

const CONFIG: &str = "[ssh]\nenabled = false\n";

fn pair() -> Option<(Server, Server)> {
    pair_with("")
}

/// Two nodes whose config is [`CONFIG`] and `more`.
fn pair_with(more: &str) -> Option<(Server, Server)> {
    let config = format!("{CONFIG}{more}");
    let Some(first) = Server::start_on_postgres(&config) else {
        eprintln!("PADDOCK_TEST_POSTGRES is not set: no store to share");
        return None;
    };
    let second = Server::start_sharing(&first, Some(&config)).expect("a PostgreSQL store");
    Some((first, second))
}

/// Nodes A and B and an API replica (`role = "api"`, no sandboxes).
fn two_nodes_and_a_replica() -> Option<(Server, Server, Server)> {
    let (a, b) = pair()?;
    let replica_config = format!("{CONFIG}[cluster]\nrole = \"api\"\n");
    let r = Server::start_sharing(&a, Some(&replica_config)).expect("a PostgreSQL store");
    Some((a, b, r))
}

#[tokio::test(flavor = "current_thread")]
async fn two_nodes_share_records_and_keep_to_their_own_sandboxes() {
    let Some((a, b)) = pair() else { return };
    let (ca, cb) = (a.client(), b.client());

    // A VM made through one node is listed by the other, and a restart of
    // the other (which reconciles its sandboxes with the store) leaves it
    // running: it is not that node's to reconcile.
    let vm = ca
        .create_vm(json!({"memory_mb": 128, "vcpu_count": 1}))
        .await;
    let id = vm["vm_id"].as_str().expect("vm_id").to_owned();
    let listed = cb.get("/v1/vms").await;
    let ids: Vec<&str> = listed
        .body
        .as_array()
        .map(|vms| vms.iter().filter_map(|v| v["vm_id"].as_str()).collect())
        .unwrap_or_default();
    assert!(ids.contains(&id.as_str()), "{}", listed.body);

    let mut b = b;
    b.restart();
    let got = ca.get(&format!("/v1/vms/{id}")).await;
    assert_eq!(got.body["status"], "active", "{}", got.body);
    let (out, _, exit) = ca.exec(&id, "echo still-here").await;
    assert_eq!(
        (out.as_str(), &exit["exit_code"]),
        ("still-here\n", &json!(0))
    );

    // The nodes' tunnel is not a tenant's: an API key does not open it.
    for key in [Some(a.key.as_str()), None] {
        let c = a.client().with_key(None);
        let mut rb = c
            .req(
                reqwest::Method::GET,
                &format!("/internal/v1/vms/{id}/agent"),
            )
            .header("Connection", "upgrade")
            .header("Upgrade", "paddock-agent");
        if let Some(key) = key {
            rb = rb.bearer_auth(key);
        }
        assert_eq!(c.send(rb).await.status, 401);
        let mut rb = c.req(
            reqwest::Method::GET,
            &format!("/internal/v1/blobs/sha256:{}", "0".repeat(64)),
        );
        if let Some(key) = key {
            rb = rb.bearer_auth(key);
        }
        assert_eq!(c.send(rb).await.status, 401);
        let mut rb = c
            .req(reqwest::Method::POST, "/internal/v1/calls")
            .json(&json!({"call": "delete", "account": "acct_x", "vm": id}));
        if let Some(key) = key {
            rb = rb.bearer_auth(key);
        }
        assert_eq!(c.send(rb).await.status, 401);
    }
    // Nor does a node's id with a key where its MAC belongs.
    let b_node = std::fs::read_to_string(b.data_dir().join("node.id")).expect("node.id");
    let c = a.client().with_key(None);
    let forged = c
        .req(reqwest::Method::POST, "/internal/v1/calls")
        .bearer_auth(format!("{}.{}", b_node.trim(), a.key))
        .json(&json!({"call": "delete", "account": "acct_x", "vm": id}));
    assert_eq!(c.send(forged).await.status, 401);
    assert_eq!(
        cb.get(&format!("/v1/vms/{id}")).await.body["status"],
        "active"
    );

    // Files and a terminal of a VM another node runs, through this one.
    through_another_node(&b, &b.client(), &id).await;

    // A key made on one node authenticates on the other.
    let key = a.other_account_key();
    let other = b.client().with_key(Some(&key));
    assert_eq!(other.get("/v1/vms").await.status, 200);
    // ... as another account, which does not see the first one's VM.
    assert_eq!(other.get(&format!("/v1/vms/{id}")).await.status, 404);
}

/// `PUT` with `If-Match` through both processes at once: the revision
/// check and the write are one step across processes (a lock in the
/// store), so exactly one writer wins.
#[tokio::test(flavor = "current_thread")]
async fn racing_writers_on_two_nodes_get_one_winner() {
    let Some((a, b)) = pair() else { return };
    let token = a.create_key(&["--dev-token"]);
    let clients = [a.client().with_key(None), b.client().with_key(None)];
    let body = |labels: Value| {
        json!({
            "provider": "container",
            "image": {"docker": null, "dockerfile": null},
            "resources": {"cpu": 1, "memory": "256Mi", "disk": null},
            "network": {"mode": "allow_all", "allow": []},
            "lifecycle": {"preserve": false, "stop_on_terminal": false, "auto_stop": null},
            "labels": labels,
            "volumes": [],
            "env": {}
        })
    };
    let mut first = body(json!({}));
    first["id"] = json!("race");
    let created = clients[0]
        .send(
            clients[0]
                .req(reqwest::Method::POST, "/api/v1/environments")
                .bearer_auth(&token)
                .json(&first),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let revision = created.body["revision"]
        .as_str()
        .expect("revision")
        .to_owned();

    for round in 0..3 {
        let writers = (0..8).map(|i| {
            let c = &clients[i % 2];
            c.send(
                c.req(reqwest::Method::PUT, "/api/v1/environments/race")
                    .bearer_auth(&token)
                    .header("If-Match", format!("\"{revision}\""))
                    .json(&body(json!({"writer": format!("{round}-{i}")}))),
            )
        });
        let replies = futures::future::join_all(writers).await;
        let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
        let winners: Vec<_> = replies.iter().filter(|r| r.status == 200).collect();
        if round == 0 {
            assert_eq!(winners.len(), 1, "{statuses:?}");
        } else {
            // The revision every writer names is stale by now.
            assert!(winners.is_empty(), "{statuses:?}");
        }
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 409),
            "{statuses:?}"
        );
        // Both nodes read the winner's write.
        if let Some(w) = winners.first() {
            for c in &clients {
                let now = c
                    .send(
                        c.req(reqwest::Method::GET, "/api/v1/environments/race")
                            .bearer_auth(&token),
                    )
                    .await;
                assert_eq!(now.body["labels"], w.body["labels"], "{}", now.body);
            }
        }
    }
}

/// A node killed outright: once its lease runs out, its VMs are `lost`
/// as any node tells them; the other node's VMs are untouched; a lost VM
/// can be deleted meanwhile. Back, the node adopts what still runs and
/// frees what was deleted while it was gone.
#[tokio::test(flavor = "current_thread")]
async fn a_silent_nodes_vms_are_lost_until_it_returns() {
    const FAST: &str =
        "[ssh]\nenabled = false\n[cluster]\nheartbeat_seconds = 1\nlease_seconds = 3\n";
    let Some(a) = Server::start_on_postgres(FAST) else {
        eprintln!("PADDOCK_TEST_POSTGRES is not set: no store to share");
        return;
    };
    let mut b = Server::start_sharing(&a, Some(FAST)).expect("a PostgreSQL store");
    let (ca, cb) = (a.client(), b.client());
    let on_a = ca.create_vm(json!({"memory_mb": 128})).await["vm_id"]
        .as_str()
        .expect("vm_id")
        .to_owned();
    let kept = cb.create_vm(json!({"memory_mb": 128})).await["vm_id"]
        .as_str()
        .expect("vm_id")
        .to_owned();
    let dropped = cb.create_vm(json!({"memory_mb": 128})).await["vm_id"]
        .as_str()
        .expect("vm_id")
        .to_owned();
    cb.exec(&kept, "echo kept > /root/marker").await;

    // Another node's sandbox answers through this one (its agent tunnelled
    // through its node).
    let (out, _, _) = ca.exec(&kept, "cat /root/marker").await;
    assert_eq!(out, "kept\n");

    b.kill();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let s = ca.get(&format!("/v1/vms/{kept}")).await.body;
        if s["status"] == "lost" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never lost: {s}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(
        ca.get(&format!("/v1/vms/{on_a}")).await.body["status"],
        "active"
    );
    let (out, _, _) = ca.exec(&on_a, "echo alive").await;
    assert_eq!(out, "alive\n");
    let gone = ca.delete(&format!("/v1/vms/{dropped}")).await;
    assert_eq!(
        (gone.status, gone.body["status"].as_str()),
        (200, Some("terminated")),
        "{}",
        gone.body
    );

    // Its sandbox runs on, out of reach, until its node is back.
    let dropped_dir = b.data_dir().join("sandboxes").join(&dropped);
    assert!(common::host_processes_mentioning(&dropped_dir) > 0);

    b.restart();
    let cb = b.client();
    assert_eq!(
        cb.get(&format!("/v1/vms/{kept}")).await.body["status"],
        "active"
    );
    let (out, _, _) = cb.exec(&kept, "cat /root/marker").await;
    assert_eq!(out, "kept\n");
    assert_eq!(
        common::host_processes_mentioning(&dropped_dir),
        0,
        "the sandbox deleted while its node was gone still runs"
    );
}

/// Upload, download, a PTY over its WebSocket: each through `via`'s node
/// to VM `id`, which runs on another.
async fn through_another_node(via: &Server, c: &common::Client, id: &str) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let data: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let put = c
        .send(
            c.req(
                reqwest::Method::PUT,
                &format!("/v1/vms/{id}/files?path=/root/up.bin"),
            )
            .body(data.clone()),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let got = c
        .req(
            reqwest::Method::GET,
            &format!("/v1/vms/{id}/files?path=/root/up.bin"),
        )
        .send()
        .await
        .expect("download");
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.expect("body").to_vec(), data);

    let pty = c
        .post(&format!("/v1/vms/{id}/pty/sessions"), json!({"id": "far"}))
        .await;
    assert_eq!(pty.status, 200, "{}", pty.body);
    let url = format!(
        "{}/v1/vms/{id}/pty/far/connect?api_key={}",
        via.base.replacen("http", "ws", 1),
        via.key
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket");
    ws.send(Message::Binary(b"echo far-$((6*7))\n".to_vec().into()))
        .await
        .expect("send");
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut seen = String::new();
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Binary(b) = msg {
                seen.push_str(&String::from_utf8_lossy(&b));
                if seen.contains("far-42") {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true));
}

/// Creates through any process spread over the nodes (the one with the
/// most memory left takes the next VM); an API replica (`role = "api"`)
/// runs none itself, and every VM answers through every process.
#[tokio::test(flavor = "current_thread")]
async fn creates_spread_over_the_nodes_through_any_replica() {
    let Some((a, b, r)) = two_nodes_and_a_replica() else {
        return;
    };
    let mut vms = Vec::new();
    for through in [&r, &a, &r, &b, &r, &r] {
        let vm = through.client().create_vm(json!({"memory_mb": 128})).await;
        vms.push(vm["vm_id"].as_str().expect("vm_id").to_owned());
    }
    let nodes = a.query_store("SELECT node_id FROM vms ORDER BY seq");
    let placed: Vec<&str> = nodes.lines().collect();
    assert_eq!(placed.len(), 6, "{nodes}");
    let a_node = std::fs::read_to_string(a.data_dir().join("node.id")).expect("node.id");
    let b_node = std::fs::read_to_string(b.data_dir().join("node.id")).expect("node.id");
    let on_a = placed.iter().filter(|n| **n == a_node.trim()).count();
    let on_b = placed.iter().filter(|n| **n == b_node.trim()).count();
    // The replica made none; the two nodes share them evenly.
    assert_eq!((on_a, on_b), (3, 3), "{nodes}");
    for (i, vm) in vms.iter().enumerate() {
        for through in [&a, &b, &r] {
            let (out, _, _) = through.client().exec(vm, &format!("echo {i}")).await;
            assert_eq!(out, format!("{i}\n"));
        }
    }
    // Changes go to the VM's node, whichever process gets them: a patch,
    // then a delete through the replica end every sandbox where it ran.
    for vm in &vms {
        let c = r.client();
        let patched = c
            .send(
                c.req(reqwest::Method::PATCH, &format!("/v1/vms/{vm}"))
                    .json(&json!({"metadata": {"moved": "no"}})),
            )
            .await;
        assert_eq!(patched.status, 200, "{}", patched.body);
        assert_eq!(patched.body["metadata"]["moved"], "no");
        let gone = c.delete(&format!("/v1/vms/{vm}")).await;
        assert_eq!(
            (gone.status, gone.body["status"].as_str()),
            (200, Some("terminated")),
            "{}",
            gone.body
        );
        for node in [&a, &b] {
            let dir = node.data_dir().join("sandboxes").join(vm);
            assert_eq!(
                common::settled(|| common::host_processes_mentioning(&dir)),
                0,
                "{vm} runs on"
            );
        }
    }
}

/// A snapshot taken on one node starts a VM on the other: the layer it
/// lacks is fetched from the node that took it, by digest.
#[tokio::test(flavor = "current_thread")]
async fn a_snapshot_taken_on_one_node_starts_on_another() {
    let Some((a, b)) = pair() else { return };
    let ca = a.client();
    let source = ca.create_vm(json!({"memory_mb": 128})).await;
    let source = source["vm_id"].as_str().expect("vm_id").to_owned();
    ca.exec(&source, "echo from-a > /root/kept").await;
    let snap = ca
        .post(
            &format!("/v1/vms/{source}/snapshot"),
            json!({"name": "moves"}),
        )
        .await;
    assert_eq!(
        (snap.status, snap.body["status"].as_str()),
        (200, Some("ready")),
        "{}",
        snap.body
    );
    let snap = snap.body["snapshot_id"]
        .as_str()
        .or(snap.body["id"].as_str())
        .expect("snapshot id")
        .to_owned();
    // Through B, which holds fewer VMs: placed on B, which never saw the
    // snapshot's layer.
    let restored = b
        .client()
        .create_vm(json!({"memory_mb": 128, "snapshot_id": snap}))
        .await;
    let restored = restored["vm_id"].as_str().expect("vm_id").to_owned();
    let b_node = std::fs::read_to_string(b.data_dir().join("node.id")).expect("node.id");
    let placed = a.query_store(&format!("SELECT node_id FROM vms WHERE id = '{restored}'"));
    assert_eq!(placed.trim(), b_node.trim());
    let (out, _, _) = b.client().exec(&restored, "cat /root/kept").await;
    assert_eq!(out, "from-a\n");
    assert!(
        b.log().contains("layer fetched from another node"),
        "{}",
        b.log()
    );
}

/// The node of VM `id` as the store records it.
fn node_of(store: &Server, id: &str) -> String {
    store
        .query_store(&format!("SELECT node_id FROM vms WHERE id = '{id}'"))
        .trim()
        .to_owned()
}

fn node_id(node: &Server) -> String {
    std::fs::read_to_string(node.data_dir().join("node.id"))
        .expect("node.id")
        .trim()
        .to_owned()
}

/// E2B's sandboxes and definitions' launches made through an API replica
/// are placed on the nodes like the VM API's, and their lifecycle calls
/// through the replica (E2B's timeout, snapshot and kill; a launched
/// sandbox's stop, start and delete) are made by the VM's node.
#[tokio::test(flavor = "current_thread")]
async fn every_surface_places_and_changes_vms_through_a_replica() {
    let Some((a, b, r)) = two_nodes_and_a_replica() else {
        return;
    };
    let nodes = [node_id(&a), node_id(&b)];
    let c = r.client();
    let e2b = |method: reqwest::Method, path: &str| {
        // The client sends the key as `X-API-Key`, which E2B's SDK names
        // `X-API-KEY` (the same header).
        c.req(method, &format!("/e2b{path}"))
    };

    // E2B: two sandboxes through the replica, one on each node.
    let mut sandboxes = Vec::new();
    for _ in 0..2 {
        let made = c
            .send(
                e2b(reqwest::Method::POST, "/sandboxes")
                    .json(&json!({"templateID": "base", "timeout": 120})),
            )
            .await;
        assert_eq!(made.status, 201, "{}", made.body);
        let id = made.body["sandboxID"]
            .as_str()
            .expect("sandboxID")
            .to_owned();
        sandboxes.push(id);
    }
    let placed: Vec<String> = sandboxes.iter().map(|id| node_of(&a, id)).collect();
    assert!(
        placed.contains(&nodes[0]) && placed.contains(&nodes[1]),
        "{placed:?} over {nodes:?}"
    );
    // Another account's key finds nothing through the replica.
    let stranger = r.other_account_key();
    let theirs = c
        .send(
            r.client()
                .with_key(None)
                .req(
                    reqwest::Method::POST,
                    &format!("/e2b/sandboxes/{}/timeout", sandboxes[0]),
                )
                .header("X-API-KEY", &stranger)
                .json(&json!({"timeout": 60})),
        )
        .await;
    assert_eq!(theirs.status, 404, "{}", theirs.body);

    for (i, id) in sandboxes.iter().enumerate() {
        let (out, _, _) = c.exec(id, &format!("echo e2b-{i}")).await;
        assert_eq!(out, format!("e2b-{i}\n"));
        let timeout = c
            .send(
                e2b(reqwest::Method::POST, &format!("/sandboxes/{id}/timeout"))
                    .json(&json!({"timeout": 600})),
            )
            .await;
        assert_eq!(timeout.status, 204, "{}", timeout.body);
        let snap = c
            .send(
                e2b(reqwest::Method::POST, &format!("/sandboxes/{id}/snapshots")).json(&json!({})),
            )
            .await;
        assert_eq!(snap.status, 201, "{}", snap.body);
        let killed = c
            .send(e2b(reqwest::Method::DELETE, &format!("/sandboxes/{id}")))
            .await;
        assert_eq!(killed.status, 204, "{}", killed.body);
        for node in [&a, &b] {
            let dir = node.data_dir().join("sandboxes").join(id);
            assert_eq!(
                common::settled(|| common::host_processes_mentioning(&dir)),
                0,
                "{id} runs on"
            );
        }
    }
    // Definitions: a launch through the replica runs on a node; stop,
    // start and delete through the replica are made there.
    let token = r.create_key(&["--dev-token"]);
    let defs = r.client().with_key(None);
    let call = |method: reqwest::Method, path: &str| {
        defs.req(method, &format!("/api/v1{path}"))
            .bearer_auth(&token)
    };
    let defined = defs
        .send(call(reqwest::Method::POST, "/environments").json(&json!({
            "id": "far",
            "provider": "container",
            "image": {"docker": null, "dockerfile": null},
            "resources": {"cpu": 1, "memory": "256Mi", "disk": null},
            "network": {"mode": "allow_all", "allow": []},
            "lifecycle": {"preserve": true, "stop_on_terminal": false, "auto_stop": null},
            "labels": {},
            "volumes": [],
            "env": {}
        })))
        .await;
    assert_eq!(defined.status, 201, "{}", defined.body);
    let launched = defs
        .send(call(reqwest::Method::POST, "/environments/far/sandboxes").json(&json!({})))
        .await;
    assert_eq!(launched.status, 201, "{}", launched.body);
    let sb = launched.body["id"].as_str().expect("id").to_owned();
    assert!(
        nodes.contains(&node_of(&a, &sb)),
        "{sb} on {}",
        node_of(&a, &sb)
    );
    let exec = |sb: String| {
        let run = call(reqwest::Method::POST, &format!("/sandboxes/{sb}/exec"))
            .json(&json!({"command": "cat /root/kept 2>/dev/null; echo far > /root/kept"}));
        async { defs.send(run).await }
    };
    assert_eq!(exec(sb.clone()).await.status, 200);
    let stopped = defs
        .send(call(
            reqwest::Method::POST,
            &format!("/sandboxes/{sb}/stop"),
        ))
        .await;
    assert_eq!(
        (stopped.status, stopped.body["state"].as_str()),
        (200, Some("stopped")),
        "{}",
        stopped.body
    );
    let started = defs
        .send(call(
            reqwest::Method::POST,
            &format!("/sandboxes/{sb}/start"),
        ))
        .await;
    assert_eq!(started.status, 200, "{}", started.body);
    // Preserved across the stop, on the node that keeps its files.
    let again = exec(sb.clone()).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(again.body.to_string().contains("far"), "{}", again.body);
    let gone = defs
        .send(call(reqwest::Method::DELETE, &format!("/sandboxes/{sb}")))
        .await;
    assert!(matches!(gone.status, 200 | 204), "{}", gone.body);
    for node in [&a, &b] {
        let dir = node.data_dir().join("sandboxes").join(&sb);
        assert_eq!(
            common::settled(|| common::host_processes_mentioning(&dir)),
            0,
            "{sb} runs on"
        );
    }
}

/// One client of the load in [`a_replica_killed_under_load_loses_nothing`]:
/// creates a VM and runs a command in it, through `replicas` in turn,
/// going on through the next when one does not answer.
async fn load_client(replicas: Vec<String>, key: String, rounds: usize) -> (Vec<String>, usize) {
    let http = reqwest::Client::new();
    let (mut made, mut lost_in_flight) = (Vec::new(), 0);
    for round in 0..rounds {
        for attempt in 0..replicas.len() {
            let base = &replicas[(round + attempt) % replicas.len()];
            let created = http
                .post(format!("{base}/v1/vms?wait=true"))
                .header("X-API-Key", &key)
                .json(&json!({"memory_mb": 128}))
                .send()
                .await;
            let body: Value = match created {
                Ok(r) if r.status() == 200 => r.json().await.expect("a VM"),
                Ok(r) => panic!(
                    "create answered {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ),
                // Never reached a server: the client moves on.
                Err(e) if e.is_connect() => continue,
                // Reached the replica as it died: in flight.
                Err(_) => {
                    lost_in_flight += 1;
                    continue;
                }
            };
            assert_eq!(body["status"], "active", "{body}");
            made.push(body["vm_id"].as_str().expect("vm_id").to_owned());
            break;
        }
    }
    (made, lost_in_flight)
}

/// kill -9 of an API replica while clients create VMs through it and a
/// node: the clients go on through the node, only requests in flight at
/// the kill fail, and every VM a client was told about runs and answers;
/// no VM is left half made.
#[tokio::test(flavor = "current_thread")]
async fn a_replica_killed_under_load_loses_nothing() {
    let Some((a, b, mut r)) = two_nodes_and_a_replica() else {
        return;
    };
    // Installs the client's TLS provider, which reqwest wants first.
    drop(a.client());
    const CLIENTS: usize = 4;
    const ROUNDS: usize = 6;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(load_client(
                vec![r.base.clone(), a.base.clone()],
                a.key.clone(),
                ROUNDS,
            ))
        })
        .collect();
    // Once the load is under way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let made = || {
        a.query_store("SELECT count(*) FROM vms")
            .trim()
            .parse::<usize>()
            .expect("a count")
    };
    while made() < CLIENTS {
        assert!(std::time::Instant::now() < deadline, "no load");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    r.kill();
    let at_kill = made();
    assert!(at_kill < CLIENTS * ROUNDS, "the load ended before the kill");
    let mut told = Vec::new();
    let mut in_flight = 0;
    for client in clients {
        let (made, lost) = client.await.expect("a client");
        told.extend(made);
        in_flight += lost;
    }
    assert_eq!(
        told.len(),
        CLIENTS * ROUNDS,
        "every round made its VM through someone"
    );
    assert!(
        in_flight <= CLIENTS,
        "{in_flight} requests failed, more than were in flight"
    );
    // Every VM a client was told about runs and answers, through either node.
    let ca = a.client();
    for (i, vm) in told.iter().enumerate() {
        let via = if i % 2 == 0 { &a } else { &b };
        let (out, _, _) = via.client().exec(vm, &format!("echo {i}")).await;
        assert_eq!(out, format!("{i}\n"), "{vm}");
    }
    // A create in flight at the kill was made by its node or not at all:
    // nothing is left creating, and none of it failed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let states = a.query_store("SELECT status FROM vms WHERE status <> 'running'");
        if states.trim().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left half made: {states}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let listed = ca.get("/v1/vms?limit=100").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
}

/// A share of a VM one node runs answers through the other node's share
/// proxy: that node's port tunnel makes the connection to the VM.
#[tokio::test(flavor = "current_thread")]
async fn a_share_answers_through_any_nodes_proxy() {
    let Some((a, b)) = pair() else { return };
    let made = a
        .client()
        .create_vm(json!({"memory_mb": 128, "share": {"port": 8000, "is_public": true}}))
        .await;
    let vm = made["vm_id"].as_str().expect("vm_id").to_owned();
    let url = made["share"]["url"]
        .as_str()
        .expect("a share URL")
        .to_owned();
    let runs_on = a.query_store(&format!("SELECT node_id FROM vms WHERE id = '{vm}'"));
    let a_node = std::fs::read_to_string(a.data_dir().join("node.id")).expect("node.id");
    // The proxy of the node that does not run it.
    let (owner, other) = if runs_on.trim() == a_node.trim() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split([':', '/']).next())
        .expect("host")
        .to_owned();
    let http = reqwest::Client::builder()
        .resolve(&host, ([127, 0, 0, 1], other.share_port).into())
        .build()
        .expect("client");
    let path = url
        .split_once(&host)
        .map(|(_, rest)| rest.split_once('/').map_or("/", |(_, p)| p).to_owned())
        .unwrap_or_default();
    let at = |base: &str| {
        format!(
            "http://{host}:{}/{}",
            other.share_port,
            base.trim_start_matches('/')
        )
    };
    let target = at(&path);

    // Nothing listens yet: a clear 502 through the other node too.
    let r = http.get(&target).send().await.expect("request");
    assert_eq!(r.status(), 502);
    owner
        .client()
        .exec(
            &vm,
            "mkdir -p /srv && echo 'hello across nodes' > /srv/index.html && cd /srv && \
             (nohup python3 -m http.server 8000 > /tmp/http.log 2>&1 &) && \
             for i in $(seq 50); do python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8000))' 2>/dev/null && break; sleep 0.1; done",
        )
        .await;
    for _ in 0..3 {
        let r = http.get(&target).send().await.expect("request");
        let status = r.status();
        assert_eq!(
            status,
            200,
            "{url} as {target}: {}",
            r.text().await.unwrap_or_default()
        );
        assert_eq!(r.text().await.expect("body"), "hello across nodes\n");
    }
}

/// A call that reaches a VM's node through another process is audited
/// once, by the process that checked the caller's key, with the address
/// the caller called from: the VM API's creates and deletes a replica
/// sends to a node whole, and E2B's, which the replica makes through the
/// node's internal endpoint. No process records a call of its own with
/// no caller (the forward, the internal call).
#[tokio::test(flavor = "current_thread")]
async fn calls_through_a_replica_are_audited_once_from_the_callers_address() {
    let Some((_a, _b, r)) = two_nodes_and_a_replica() else {
        return;
    };
    // The client calls from an address of its own: the replica's forwards
    // come from 127.0.0.1, and must not pass for it.
    let client_address = "127.0.0.9";
    let replica = r.client();
    let c = common::Client {
        http: reqwest::Client::builder()
            .local_address(client_address.parse::<std::net::IpAddr>().ok())
            .build()
            .expect("a client"),
        ..replica
    };
    let made = c.post("/v1/vms?wait=true", json!({})).await;
    assert_eq!(made.status, 200, "{}", made.body);
    let vm = made.body["vm_id"].as_str().expect("vm_id").to_owned();
    let gone = c.delete(&format!("/v1/vms/{vm}")).await;
    assert!(gone.status < 300, "{}", gone.body);
    let sandbox = c
        .send(
            c.req(reqwest::Method::POST, "/e2b/sandboxes")
                .json(&json!({"templateID": "base", "timeout": 120})),
        )
        .await;
    assert_eq!(sandbox.status, 201, "{}", sandbox.body);
    let sandbox = sandbox.body["sandboxID"].as_str().expect("sandboxID");
    let killed = c
        .send(c.req(
            reqwest::Method::DELETE,
            &format!("/e2b/sandboxes/{sandbox}"),
        ))
        .await;
    assert_eq!(killed.status, 204, "{}", killed.body);

    let events = c.get("/v1/audit/events?limit=200").await;
    assert_eq!(events.status, 200, "{}", events.body);
    let events = events.body["items"].as_array().expect("items").clone();
    let of = |needle: &str| -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = events
            .iter()
            .filter(|e| {
                e["event_payload"]["path"]
                    .as_str()
                    .unwrap_or("")
                    .contains(needle)
            })
            .map(|e| {
                (
                    e["event_type"].as_str().unwrap_or("").to_owned(),
                    e["source_address"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        found.sort();
        found
    };
    let from_client = |t: &str| (t.to_owned(), client_address.to_owned());
    assert_eq!(of(&vm), [from_client("vms.delete")], "{events:?}");
    assert!(
        of("/v1/vms").contains(&from_client("vms.create")),
        "{events:?}"
    );
    assert_eq!(
        of(sandbox),
        [from_client("e2b.sandboxes.delete")],
        "{events:?}"
    );
    // Every event of this account came from the client's address: no
    // `auth.new_address` for the replica's, no record under it.
    let elsewhere: Vec<&Value> = events
        .iter()
        .filter(|e| e["source_address"] != client_address)
        .collect();
    assert!(elsewhere.is_empty(), "{elsewhere:?}");
    // And no process wrote a record with no caller.
    let orphans = r
        .query_store("SELECT event_type || ' ' || path FROM audit_events WHERE account_id IS NULL");
    assert_eq!(orphans.trim(), "", "records with no caller");
}

/// An account's request rate holds for the installation, not per
/// process: two nodes take from one bucket (a sixteenth of it at a time),
/// so a burst sent to both is cut where the rate and burst say, and the
/// refusals carry the wait.
#[tokio::test(flavor = "current_thread")]
async fn the_request_rate_is_the_installations() {
    let Some((a, b)) = pair_with("[quotas]\nrequests_per_second = 1\nburst = 63\n") else {
        return;
    };
    let clients = [a.client(), b.client()];
    let mut admitted = 0;
    let mut waits = Vec::new();
    for i in 0..100 {
        let answer = clients[i % 2].get("/v1/vms").await;
        match answer.status {
            200 => admitted += 1,
            429 => waits.push(
                answer
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .expect("a Retry-After in seconds"),
            ),
            other => panic!("{other}: {}", answer.body),
        }
    }
    // A bucket of 64 (1 a second and a burst of 63), a token or two more
    // while the calls ran, less what each node took and has not spent
    // (under 4); a bucket per node would admit all 100.
    assert!((58..=66).contains(&admitted), "admitted {admitted} of 100");
    assert!(waits.iter().all(|w| *w <= 1), "{waits:?}");
}

/// An account's capacity quota holds for the installation: creates sent
/// to two nodes at once are checked one at a time against it, whichever
/// node makes each, so no more VMs than `max_vms` are made.
#[tokio::test(flavor = "current_thread")]
async fn racing_creates_on_two_nodes_fit_the_quota() {
    let Some((a, b)) = pair_with("[quotas]\nmax_vms = 2\n") else {
        return;
    };
    let clients = [a.client(), b.client()];
    let creates = (0..16).map(|i| {
        let c = &clients[i % 2];
        async move { c.post("/v1/vms?wait=true", json!({})).await }
    });
    let answers = futures::future::join_all(creates).await;
    let made = answers.iter().filter(|r| r.status == 200).count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|r| r.status != 200)
        .map(|r| &r.body)
        .collect();
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(made, 2, "{statuses:?} {refused:?}");
    assert!(
        answers
            .iter()
            .all(|r| r.status == 200 || (r.status == 403 && r.body.to_string().contains("max_vms"))),
        "{refused:?}"
    );
    let listed = clients[0].get("/v1/vms").await;
    let live = listed.body.as_array().map_or(0, Vec::len);
    assert_eq!(live, 2, "{}", listed.body);
}
