//! What a vault service costs a request: HTTPS calls from inside a VM to
//! an API bound to a vault credential (through paddock's resolver and
//! TLS-terminating proxy on the gateway, which adds the credential and
//! connects to the API itself), next to the same calls to the same server
//! by a name the vault does not bind (straight through the host's NAT),
//! in the same VM and run. Each call is a new connection and TLS
//! handshake, as an SDK without a pool makes; then the same over one
//! kept-alive connection.
//!
//! `cargo bench --bench vault_proxy` (root; python3, knot and openssl's
//! Debian packages as the tests use). The API is Python's HTTPS server
//! in a network namespace of the bench's own, named by its DNS server.

mod common;
#[path = "../tests/common/internet.rs"]
#[allow(dead_code)]
mod internet;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{percentile, row, Api};
use serde_json::{json, Value};

const CALLS: usize = 200;
const BOUND: &str = "web.allowed.test";
const DIRECT: &str = "other.test";

/// An HTTPS server on port 443 of `bind` answering `ok`, keep-alive.
const UPSTREAM: &str = r#"
import http.server, ssl, sys, os
cert, key, bind, ready = sys.argv[1:5]
class Ok(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: with Nagle on, the body waits for
    # the client's delayed ACK (40 ms), which would hide everything else.
    disable_nagle_algorithm = True
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer((bind, 443), Ok)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
c.load_cert_chain(cert, key)
s.socket = c.wrap_socket(s.socket, server_side=True)
open(ready, "w").close()
s.serve_forever()
"#;

/// Times CALLS GETs of https://HOST/ from inside the VM, each on a new
/// connection (`fresh`) or all on one; prints the latencies in ms as JSON.
const CLIENT: &str = r#"
import http.client, json, ssl, sys, time
host, calls, fresh, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile or None)
out = []
conn = None
for _ in range(calls):
    t = time.perf_counter()
    if conn is None or fresh:
        conn = http.client.HTTPSConnection(host, 443, context=ctx, timeout=10)
    conn.request("GET", "/", headers={"Authorization": "Bearer placeholder"})
    r = conn.getresponse(); r.read()
    assert r.status == 200, r.status
    if fresh:
        conn.close()
    out.append((time.perf_counter() - t) * 1000)
print(json.dumps(out))
"#;

fn openssl(args: &[&str], dir: &std::path::Path) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl {args:?}");
}

async fn exec_stdout(api: &Api, vm: &str, command: &str) -> String {
    let text = api.stream_exec(vm, command).await;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "stdout")
        .filter_map(|v| v["data"].as_str().map(str::to_owned))
        .collect()
}

async fn samples(api: &Api, vm: &str, host: &str, fresh: bool, cafile: &str) -> Vec<Duration> {
    use base64::Engine;
    let script = base64::engine::general_purpose::STANDARD.encode(CLIENT);
    let out = exec_stdout(
        api,
        vm,
        &format!(
            "python3 -c \"$(echo {script} | base64 -d)\" {host} {CALLS} {} '{cafile}'",
            u8::from(fresh)
        ),
    )
    .await;
    let ms: Vec<f64> = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out}"));
    ms.into_iter()
        .map(|m| Duration::from_secs_f64(m / 1000.0))
        .collect()
}

#[tokio::main]
async fn main() {
    common::install_crypto();
    let net = internet::Internet::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=bench CA",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
        d,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=bench",
        ],
        d,
    );
    std::fs::write(
        d.join("ext.cnf"),
        format!("subjectAltName=DNS:{BOUND},DNS:{DIRECT}\n"),
    )
    .expect("ext");
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
        d,
    );
    let ready = d.join("ready");
    let mut upstream = Command::new("ip")
        .args(["netns", "exec", &net.netns, "python3", "-c", UPSTREAM])
        .arg(d.join("srv.crt"))
        .arg(d.join("srv.key"))
        .arg("0.0.0.0")
        .arg(&ready)
        .stdout(Stdio::null())
        .spawn()
        .expect("upstream");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the upstream did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let server = common::start_server(Some(&format!(
        "[network]\ndns_upstream = [\"{}\"]\nvault_extra_roots = \"{}\"\n",
        net.dns(),
        d.join("ca.crt").display()
    )));
    let api = Api {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        key: server.key.clone(),
    };
    let vault = api.post("/v1/vaults", json!({"name": "bench"})).await;
    let vid = vault["id"].as_str().expect("vault").to_owned();
    api.post(
        &format!("/v1/vaults/{vid}/credentials"),
        json!({"name": "TOKEN", "value": "sk-bench"}),
    )
    .await;
    let service = api
        .post(
            &format!("/v1/vaults/{vid}/services"),
            json!({"host": BOUND, "auth_config": {"type": "bearer", "token": "TOKEN"}}),
        )
        .await;
    assert_eq!(service["host"], BOUND, "{service}");
    let vm = api
        .post("/v1/vms?wait=true", json!({"vault_ids": [vid]}))
        .await;
    let id = vm["vm_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{vm}"))
        .to_owned();
    // The direct path trusts the bench's CA itself (the proxy's path needs
    // nothing: the sandbox trusts its VM's CA).
    let ca = std::fs::read_to_string(d.join("ca.crt")).expect("ca");
    exec_stdout(
        &api,
        &id,
        &format!("cat > /root/bench-ca.pem <<'EOF'\n{ca}EOF"),
    )
    .await;

    println!("paddock vault service benchmark: {CALLS} HTTPS GETs from one VM, p50/p99 per call");
    for (fresh, what) in [
        (true, "a new connection each"),
        (false, "one kept-alive connection"),
    ] {
        println!("{what}:");
        println!("| measurement                                          |  p50 (ms) |  p99 (ms) |     n |");
        println!("|------------------------------------------------------|-----------|-----------|-------|");
        // Warm both paths first (the proxy's leaf certificate, DNS).
        samples(&api, &id, DIRECT, fresh, "/root/bench-ca.pem").await;
        samples(&api, &id, BOUND, fresh, "").await;
        let mut direct = samples(&api, &id, DIRECT, fresh, "/root/bench-ca.pem").await;
        let mut proxied = samples(&api, &id, BOUND, fresh, "").await;
        row("direct (a name no vault binds)", &mut direct);
        row("through the vault proxy (credential added)", &mut proxied);
        let added = percentile(&mut proxied, 0.50).as_secs_f64()
            - percentile(&mut direct, 0.50).as_secs_f64();
        println!("the proxy adds {:.2} ms at p50", added * 1000.0);
    }
    let _ = upstream.kill();
    let _ = upstream.wait();
}
