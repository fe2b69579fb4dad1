//! VM networking against a small internet built from network namespaces
//! (see `common::internet`): egress policies by default, CIDR and domain,
//! live changes, what no VM may ever reach, and the rules across a
//! restart. No packet leaves the machine.

mod common;

use std::time::Duration;

use common::internet::{Internet, GREETING};
use common::{Client, Server};
use serde_json::{json, Value};

fn server_for(net: &Internet) -> Server {
    Server::start_with(&[(
        "PADDOCK_NETWORK__DNS_UPSTREAM",
        &format!("[\"{}\"]", net.dns()),
    )])
}

/// Connects from inside the VM: `open`, `refused` (a reset or an ICMP
/// refusal) or `timeout`, with the seconds it took.
async fn connect(c: &Client, vm: &str, host: &str, port: u16) -> (String, f64) {
    let script = format!(
        r#"python3 -c '
import socket, time
t = time.time()
try:
    socket.create_connection(("{host}", {port}), timeout=8).close(); r = "open"
except socket.timeout: r = "timeout"
except OSError as e: r = "refused" if e.errno in (111, 113, 101, 13) else "error%d" % e.errno
print(r, time.time() - t)'"#
    );
    let (out, err, _) = c.exec(vm, &script).await;
    let mut parts = out.split_whitespace();
    let verdict = parts
        .next()
        .unwrap_or_else(|| panic!("no output: {err}"))
        .to_owned();
    let secs = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::MAX);
    (verdict, secs)
}

async fn fetch(c: &Client, vm: &str, url: &str) -> String {
    let (out, err, _) = c
        .exec(
            vm,
            &format!(
                "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"{url}\", timeout=8).read().decode())' 2>&1 || true"
            ),
        )
        .await;
    format!("{out}{err}")
}

async fn resolve(c: &Client, vm: &str, name: &str) -> String {
    let (out, _, _) = c
        .exec(vm, &format!("getent hosts {name} || echo unresolved"))
        .await;
    out.trim().to_owned()
}

/// The port the server's API listens on.
fn api_port(server: &Server) -> u16 {
    server
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

async fn new_vm(c: &Client, policy: Option<Value>) -> String {
    let body = match policy {
        Some(p) => json!({ "egress_policy": p }),
        None => json!({}),
    };
    let vm = c.create_vm(body).await;
    assert_eq!(vm["status"], "active", "{vm}");
    vm["vm_id"].as_str().expect("vm id").to_owned()
}

#[tokio::test]
async fn allow_all_reaches_outside_and_deny_refuses_fast_and_live() {
    let net = Internet::start();
    let server = server_for(&net);
    let c = server.client();
    let vm = new_vm(&c, None).await;
    let ip = net.web.to_string();

    // The server's default policy allows everything not always blocked.
    assert!(fetch(&c, &vm, &format!("http://{ip}/"))
        .await
        .contains(GREETING));
    let by_name = fetch(&c, &vm, "http://web.allowed.test/").await;
    assert!(by_name.contains(GREETING), "{by_name}");

    // Deny everything, on the running VM: refused at once, not hanging.
    let r = c
        .req(reqwest::Method::PATCH, &format!("/v1/vms/{vm}"))
        .json(&json!({"egress_policy": {"default": "deny"}}));
    let r = c.send(r).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["egress_policy"]["default"], "deny");
    let (verdict, secs) = connect(&c, &vm, &ip, 80).await;
    assert_eq!(verdict, "refused");
    assert!(secs < 2.0, "a refusal took {secs} s");
    assert_eq!(resolve(&c, &vm, "web.allowed.test").await, "unresolved");

    // And back, through the SDK's route.
    let r = c
        .post(&format!("/v1/egress/vm/{vm}"), json!({"default": "allow"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(connect(&c, &vm, &ip, 80).await.0, "open");
    let r = c.get(&format!("/v1/egress/vm/{vm}")).await;
    assert_eq!(r.body["default"], "allow");
}

#[tokio::test]
async fn cidr_and_domain_allow_lists() {
    let net = Internet::start();
    let server = server_for(&net);
    let c = server.client();
    let (web, other) = (net.web.to_string(), net.other.to_string());

    let by_cidr = new_vm(&c, Some(json!({"allowed_cidrs": [format!("{web}/32")]}))).await;
    assert_eq!(connect(&c, &by_cidr, &web, 80).await.0, "open");
    let (verdict, secs) = connect(&c, &by_cidr, &other, 80).await;
    assert_eq!(verdict, "refused");
    assert!(secs < 2.0, "a refusal took {secs} s");
    // Denied ranges win over allowed ones.
    let r = c
        .post(
            &format!("/v1/egress/vm/{by_cidr}"),
            json!({"allowed_cidrs": ["198.18.0.0/15"], "denied_cidrs": [web]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(connect(&c, &by_cidr, &web, 80).await.0, "refused");
    assert_eq!(connect(&c, &by_cidr, &other, 80).await.0, "open");

    let by_name = new_vm(&c, Some(json!({"allowed_domains": ["*.allowed.test"]}))).await;
    // Before any lookup, the address is as closed as any other.
    assert_eq!(connect(&c, &by_name, &web, 80).await.0, "refused");
    // Other names do not resolve at all.
    assert_eq!(resolve(&c, &by_name, "other.test").await, "unresolved");
    assert!(resolve(&c, &by_name, "web.allowed.test")
        .await
        .starts_with(&web));
    let page = fetch(&c, &by_name, "http://web.allowed.test/").await;
    assert!(page.contains(GREETING), "{page}\n{}", server.log());
    // A raw address nobody looked up stays refused.
    assert_eq!(connect(&c, &by_name, &other, 80).await.0, "refused");
}

#[tokio::test]
async fn no_policy_reaches_the_host_metadata_or_other_vms() {
    let net = Internet::start();
    let server = server_for(&net);
    let c = server.client();
    let a = new_vm(&c, Some(json!({"default": "allow"}))).await;
    let b = new_vm(
        &c,
        Some(json!({"default": "allow", "allowed_cidrs": ["10.0.0.0/8"]})),
    )
    .await;
    let b_ip = c.get(&format!("/v1/vms/{b}")).await.body["ip_address"]
        .as_str()
        .expect("ip")
        .to_owned();
    c.exec(&b, "nohup python3 -m http.server 8000 >/dev/null 2>&1 &")
        .await;
    let gateway = {
        let (out, _, _) = c.exec(&a, "ip route show default").await;
        out.split_whitespace().nth(2).expect("gateway").to_owned()
    };
    let api_port = api_port(&server);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The host's services, through its bridge address or its others.
    assert_eq!(connect(&c, &a, &gateway, api_port).await.0, "refused");
    assert_eq!(
        connect(&c, &a, &net.host.to_string(), api_port).await.0,
        "refused"
    );
    // The metadata range, even when a policy names it.
    assert_eq!(connect(&c, &a, "169.254.169.254", 80).await.0, "refused");
    let (verdict, _) = connect(&c, &b, "169.254.169.254", 80).await;
    assert_eq!(verdict, "refused");
    // Another VM, even when its range is allowed.
    let (verdict, _) = connect(&c, &a, &b_ip, 8000).await;
    assert_ne!(verdict, "open");
    // The server in B is up: B reaches itself.
    assert_eq!(connect(&c, &b, "127.0.0.1", 8000).await.0, "open");
    // DNS is the one host service a VM may use.
    assert!(resolve(&c, &a, "web.allowed.test")
        .await
        .starts_with(&net.web.to_string()));
}

#[tokio::test]
async fn rules_survive_a_restart_and_leave_nothing_behind() {
    let net = Internet::start();
    let mut server = server_for(&net);
    let c = server.client();
    let web = net.web.to_string();
    let open = new_vm(&c, Some(json!({"allowed_cidrs": [web.clone()]}))).await;
    let closed = new_vm(&c, Some(json!({"default": "deny"}))).await;
    let ip = c.get(&format!("/v1/vms/{closed}")).await.body["ip_address"]
        .as_str()
        .expect("ip")
        .to_owned();
    let port = format!(
        "vp{:08x}",
        u32::from(ip.parse::<std::net::Ipv4Addr>().expect("ip"))
    );

    server.restart();
    let c = server.client();
    assert_eq!(connect(&c, &open, &web, 80).await.0, "open");
    assert_eq!(connect(&c, &closed, &web, 80).await.0, "refused");

    assert!(std::path::Path::new("/sys/class/net").join(&port).exists());
    let r = c.delete(&format!("/v1/vms/{closed}")).await;
    assert_eq!(r.status, 200);
    assert!(!std::path::Path::new("/sys/class/net").join(&port).exists());
    let netns = server.data_dir().join("net/netns").join(&ip);
    assert!(!netns.exists(), "{} left behind", netns.display());
}

#[tokio::test]
async fn bad_policies_are_refused_with_the_field() {
    let server = Server::start();
    let c = server.client();
    for (policy, loc) in [
        (
            json!({"allowed_cidrs": ["10.0.0.0/8", "nope"]}),
            json!(["body", "egress_policy", "allowed_cidrs", "1"]),
        ),
        (
            json!({"allowed_domains": ["*"]}),
            json!(["body", "egress_policy", "allowed_domains", "0"]),
        ),
        (
            json!({"default": "maybe"}),
            json!(["body", "egress_policy", "default"]),
        ),
        (
            json!({"alow_http": true}),
            json!(["body", "egress_policy", "alow_http"]),
        ),
        (
            json!({"allowed_cidrs": ["::/0"]}),
            json!(["body", "egress_policy", "allowed_cidrs", "0"]),
        ),
        (json!("deny"), json!(["body", "egress_policy"])),
    ] {
        let r = c.post("/v1/vms", json!({"egress_policy": policy})).await;
        assert_eq!(r.status, 422, "{policy}: {}", r.body);
        assert_eq!(r.body["detail"][0]["loc"], loc, "{}", r.body);
    }
    let listed = c.get("/v1/vms").await;
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(0),
        "{}",
        listed.body
    );

    let vm = new_vm(&c, None).await;
    let r = c
        .post(&format!("/v1/egress/vm/{vm}"), json!({"allow_http": "yes"}))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["detail"][0]["loc"], json!(["body", "allow_http"]));
    // Another account's VM does not exist for this one.
    let other = c.with_key(Some(&server.other_account_key()));
    assert_eq!(other.get(&format!("/v1/egress/vm/{vm}")).await.status, 404);
    assert_eq!(
        other
            .post(&format!("/v1/egress/vm/{vm}"), json!({}))
            .await
            .status,
        404
    );
    assert_eq!(
        c.get("/v1/egress/vm/vm_doesnotexist000000").await.status,
        404
    );
}

/// A host whose VM network is full refuses the next create with 503 and
/// the reason, instead of answering 200 with a failed VM.
#[tokio::test]
async fn a_full_network_refuses_creates_with_503() {
    // A /29: five addresses for VMs and prepared namespaces.
    let subnet = format!("10.250.{}.0/29", std::process::id() % 256);
    let server = Server::start_with(&[("PADDOCK_NETWORK__SUBNET", subnet.as_str())]);
    let c = server.client();
    let mut made = Vec::new();
    let refused = loop {
        let r = c
            .post("/v1/vms?wait=true", serde_json::json!({"memory_mb": 128}))
            .await;
        if r.status != 200 {
            break r;
        }
        assert_eq!(r.body["status"], "active", "{}", r.body);
        made.push(r.body["vm_id"].as_str().expect("vm_id").to_owned());
        assert!(made.len() <= 5, "more VMs than addresses: {made:?}");
    };
    assert_eq!(made.len(), 5, "{}", refused.body);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.body.to_string().contains("no VM network left"),
        "{}",
        refused.body
    );
    // Nothing was made for the refused create; a delete makes room.
    let listed = c.get("/v1/vms").await;
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(5),
        "{}",
        listed.body
    );
    let r = c.delete(&format!("/v1/vms/{}", made[0])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c
        .post("/v1/vms?wait=true", serde_json::json!({"memory_mb": 128}))
        .await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("active")),
        "{}",
        r.body
    );
}

/// Past one bridge's ports the subnet goes on in segments, each a bridge
/// of its own with its own gateway and resolver; policy, DNS and the
/// walls between VMs hold across them, a restart brings every segment
/// back, and `paddock purge` removes every bridge. Segments of 8
/// addresses (5 VMs) stand in for the default 1,024.
#[tokio::test]
async fn vms_past_one_bridge_go_on_in_segments_with_the_same_rules() {
    let net = Internet::start();
    let mut server = Server::start_with(&[
        (
            "PADDOCK_NETWORK__DNS_UPSTREAM",
            &format!("[\"{}\"]", net.dns()),
        ),
        ("PADDOCK_NETWORK__ADDRESSES_PER_BRIDGE", "8"),
    ]);
    let c = server.client();
    let web = net.web.to_string();
    let mut vms = Vec::new();
    for _ in 0..12 {
        vms.push(new_vm(&c, None).await);
    }
    let ip_of = |body: &Value| -> std::net::Ipv4Addr {
        body["ip_address"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("ip")
    };
    let mut by_segment = std::collections::BTreeMap::<u32, Vec<String>>::new();
    for vm in &vms {
        let ip = ip_of(&c.get(&format!("/v1/vms/{vm}")).await.body);
        by_segment
            .entry(u32::from(ip) & !7)
            .or_default()
            .push(vm.clone());
    }
    assert!(by_segment.len() >= 3, "{by_segment:?}");
    let last = by_segment
        .values()
        .last()
        .and_then(|v| v.first())
        .expect("a VM in the last segment")
        .clone();
    let first = vms[0].clone();
    let last_ip = ip_of(&c.get(&format!("/v1/vms/{last}")).await.body);

    // Its gateway is its segment's, and it resolves and reaches out.
    let (route, _, _) = c.exec(&last, "ip route show default").await;
    let gateway: std::net::Ipv4Addr = route
        .split_whitespace()
        .nth(2)
        .and_then(|g| g.parse().ok())
        .expect("gateway");
    assert_eq!(u32::from(gateway), (u32::from(last_ip) & !7) + 1);
    assert!(resolve(&c, &last, "web.allowed.test")
        .await
        .starts_with(&web));
    assert!(fetch(&c, &last, "http://web.allowed.test/")
        .await
        .contains(GREETING));

    // No VM reaches another, in its segment or across; nor the host
    // through another segment's gateway.
    c.exec(&last, "nohup python3 -m http.server 8000 >/dev/null 2>&1 &")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(connect(&c, &last, "127.0.0.1", 8000).await.0, "open");
    assert_ne!(
        connect(&c, &first, &last_ip.to_string(), 8000).await.0,
        "open"
    );
    let api_port = api_port(&server);
    assert_eq!(
        connect(&c, &first, &gateway.to_string(), api_port).await.0,
        "refused"
    );

    // A policy on a later segment is enforced like on the first.
    let r = c
        .post(&format!("/v1/egress/vm/{last}"), json!({"default": "deny"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(connect(&c, &last, &web, 80).await.0, "refused");

    // A restart brings the later segments' resolvers and rules back.
    server.restart();
    let c = server.client();
    assert_eq!(connect(&c, &last, &web, 80).await.0, "refused");
    let other = by_segment
        .values()
        .nth(1)
        .and_then(|v| v.first())
        .expect("vm");
    assert!(resolve(&c, other, "web.allowed.test")
        .await
        .starts_with(&web));
    assert_eq!(connect(&c, other, &web, 80).await.0, "open");

    // Purging the stopped server removes every segment's bridge.
    let bridges: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("links")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            u32::from_str_radix(n.strip_prefix("pb").unwrap_or("x"), 16)
                .is_ok_and(|g| by_segment.contains_key(&(g & !7)))
        })
        .collect();
    assert_eq!(bridges.len(), by_segment.len() - 1, "{bridges:?}");
    server.kill();
    let purged = std::process::Command::new(common::bin())
        .args(["purge", "--data-dir"])
        .arg(server.data_dir())
        .envs(server.env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("paddock purge");
    assert!(purged.status.success(), "{purged:?}");
    for b in bridges {
        assert!(
            !std::path::Path::new("/sys/class/net").join(&b).exists(),
            "{b} left behind"
        );
    }
}

/// A tape records the connections its VM makes, seen on the VM's veth:
/// where they went (the name the VM looked up), the bytes each way and,
/// with `record_egress_content`, what they carried; a connection the
/// policy refused is recorded as never established.
#[tokio::test]
async fn a_tape_records_the_vms_connections() {
    use base64::Engine;
    let net = Internet::start();
    let server = server_for(&net);
    let c = server.client();
    let vm = c.create_vm(json!({})).await;
    let (vm_id, session) = (
        vm["vm_id"].as_str().expect("vm id"),
        vm["session_id"].as_str().expect("session"),
    );
    let r = c
        .post(
            &format!("/v1/sessions/{session}/tape/start"),
            json!({"record_egress_content": true, "record_fs": false}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let tape = r.body["id"].as_str().expect("tape id").to_owned();

    assert!(fetch(&c, vm_id, "http://web.allowed.test/")
        .await
        .contains(GREETING));
    let r = c
        .patch(
            &format!("/v1/vms/{vm_id}"),
            json!({"egress_policy": {"default": "deny"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        connect(&c, vm_id, &net.other.to_string(), 80).await.0,
        "refused"
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let flows = loop {
        let r = c.get(&format!("/v1/tapes/{tape}/events?kind=egress")).await;
        let flows = r.body.as_array().cloned().unwrap_or_default();
        if flows.len() >= 2 || std::time::Instant::now() > deadline {
            break flows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let web = flows
        .iter()
        .map(|f| &f["payload"])
        .find(|p| p["ip"] == net.web.to_string())
        .unwrap_or_else(|| panic!("no flow to the web server: {flows:?}"));
    assert_eq!(web["host"], "web.allowed.test", "{web}");
    assert_eq!(
        (web["port"].as_u64(), web["protocol"].as_str()),
        (Some(80), Some("tcp"))
    );
    assert_eq!(web["established"], true);
    assert!(web["bytes_out"].as_u64() > Some(20) && web["bytes_in"].as_u64() > Some(20));
    let sent = base64::engine::general_purpose::STANDARD
        .decode(web["content_out_b64"].as_str().expect("content"))
        .expect("base64");
    assert!(
        sent.starts_with(b"GET / HTTP/1.1"),
        "{}",
        String::from_utf8_lossy(&sent)
    );
    let got = base64::engine::general_purpose::STANDARD
        .decode(web["content_in_b64"].as_str().expect("content"))
        .expect("base64");
    assert!(String::from_utf8_lossy(&got).contains(GREETING));
    let refused = flows
        .iter()
        .map(|f| &f["payload"])
        .find(|p| p["ip"] == net.other.to_string())
        .unwrap_or_else(|| panic!("no refused flow: {flows:?}"));
    assert_eq!(refused["established"], false);
    assert_eq!(refused["bytes_in"], 0);
}
