//! Vault services against a real server: an HTTPS API (Python's own
//! server, with a CA of the test's, in the test's own "outside" network
//! namespace, named by its DNS server) is bound to a vault's credential;
//! a VM with the vault calls it with the placeholder its environment
//! holds, and the request arrives with the real credential, added by
//! paddock's egress path under TLS the sandbox trusts, while the secret is
//! nowhere in the sandbox, the answers, the data dir or the log.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::internet::Internet;
use common::Server;
use serde_json::{json, Value};

const SECRET: &str = "sk-vault-service-1c9e47d2b8";
const ROTATED: &str = "sk-vault-rotated-88a02f6e13";
/// A name the outside DNS server answers (see `common::internet`).
const HOST: &str = "web.allowed.test";

/// An HTTPS server that answers each GET with what it received, the
/// credentials' headers as SHA-256 digests only.
const UPSTREAM: &str = r#"
import hashlib, http.server, json, ssl, sys
port_file, cert, key, bind = sys.argv[1:5]
def digest(v):
    return hashlib.sha256(v.encode()).hexdigest() if v is not None else None
class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({
            "path": self.path,
            "host": self.headers.get("Host"),
            "authorization": digest(self.headers.get("Authorization")),
            "x_api_key": digest(self.headers.get("X-Api-Key")),
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer((bind, 443), Echo)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
open(port_file + ".tmp", "w").write(str(server.server_address[1]))
import os; os.rename(port_file + ".tmp", port_file)
server.serve_forever()
"#;

struct Upstream {
    child: Child,
    ca_file: std::path::PathBuf,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the upstream on port 443 of the outside namespace's web address,
/// with a certificate for [`HOST`] from a CA of its own, whose certificate
/// is in `ca_file` for paddock to trust.
fn start_upstream(dir: &Path, net: &Internet) -> Upstream {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "vault services test CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![HOST.to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    let (cert_file, key_file, ca_file, port_file) = (
        dir.join("upstream.crt"),
        dir.join("upstream.key"),
        dir.join("ca.crt"),
        dir.join("port"),
    );
    std::fs::write(&cert_file, cert.pem()).expect("write");
    std::fs::write(&key_file, key.serialize_pem()).expect("write");
    std::fs::write(&ca_file, ca.pem()).expect("write");
    let child = Command::new("ip")
        .args(["netns", "exec", &net.netns, "python3", "-c", UPSTREAM])
        .arg(&port_file)
        .arg(&cert_file)
        .arg(&key_file)
        .arg(net.web.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("start python3");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !port_file.exists() {
        assert!(Instant::now() < deadline, "the upstream did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Upstream { child, ca_file }
}

fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Calls the bound host from inside `vm` with `header: prefix$VAR` and
/// what the upstream answered (or the error, as text).
async fn call(c: &common::Client, vm: &str, path: &str, header: &str, value: &str) -> Value {
    let script = format!(
        "import json, os, urllib.request\n\
         r = urllib.request.Request('https://{HOST}{path}', headers={{'{header}': {value}}})\n\
         try:\n    print(urllib.request.urlopen(r, timeout=15).read().decode())\n\
         except Exception as e:\n    print(json.dumps({{'error': repr(e)}}))\n"
    );
    let command = format!("python3 -c \"$(printf '%s' '{}' | base64 -d)\"", {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(script)
    });
    let (out, err, _) = c.exec(vm, &command).await;
    serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out} {err}"))
}

/// Opens TLS to port 443 of the VM's gateway (its resolver) asking for
/// `name`, certificate unchecked: `served` or `refused`.
async fn tls_to_gateway(c: &common::Client, vm: &str, name: &str) -> String {
    let script = format!(
        "import socket, ssl\n\
         gw = open('/etc/resolv.conf').read().split('nameserver')[1].split()[0]\n\
         ctx = ssl.create_default_context()\n\
         ctx.check_hostname = False\n\
         ctx.verify_mode = ssl.CERT_NONE\n\
         try:\n    ctx.wrap_socket(socket.create_connection((gw, 443), timeout=10), \
         server_hostname='{name}')\n    print('served')\n\
         except Exception:\n    print('refused')\n"
    );
    let command = format!("python3 -c \"$(printf '%s' '{}' | base64 -d)\"", {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(script)
    });
    let (out, err, _) = c.exec(vm, &command).await;
    assert!(!out.trim().is_empty(), "{err}");
    out.trim().to_owned()
}

#[tokio::test]
async fn a_bound_host_gets_the_credential_and_the_sandbox_never_holds_it() {
    let net = Internet::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = start_upstream(dir.path(), &net);
    let mut server = Server::start_with_config(&format!(
        "[network]\ndns_upstream = [\"{}\"]\nvault_extra_roots = {:?}\n",
        net.dns(),
        upstream.ca_file.display().to_string(),
    ));
    let c = server.client();
    let vid = c.post("/v1/vaults", json!({"name": "apis"})).await.body["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let cred = c
        .post(
            &format!("/v1/vaults/{vid}/credentials"),
            json!({"name": "OPENAI_KEY", "value": SECRET}),
        )
        .await;
    let cid = cred.body["id"].as_str().expect("id").to_owned();

    // Bad bindings are 422s naming the field, and change nothing.
    for (body, loc) in [
        (
            json!({"host": "https://x.test/", "auth_config": {"type": "bearer", "token": "OPENAI_KEY"}}),
            json!(["body", "host"]),
        ),
        (
            json!({"host": HOST, "auth_config": {"type": "magic"}}),
            json!(["body", "auth_config", "type"]),
        ),
        (
            json!({"host": HOST, "auth_config": {"type": "bearer", "token": "NO_SUCH"}}),
            json!(["body", "auth_config", "token"]),
        ),
        (
            json!({"host": HOST, "auth_config": {"type": "api-key", "key": "OPENAI_KEY"}}),
            json!(["body", "auth_config", "header"]),
        ),
    ] {
        let r = c.post(&format!("/v1/vaults/{vid}/services"), body).await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(r.body["detail"][0]["loc"], loc, "{}", r.body);
    }
    let r = c.get(&format!("/v1/vaults/{vid}/services")).await;
    assert_eq!(r.body["services"], json!([]));

    let service = c
        .post(
            &format!("/v1/vaults/{vid}/services"),
            json!({"host": HOST, "auth_config": {"type": "bearer", "token": "OPENAI_KEY"},
                   "description": "the test API"}),
        )
        .await;
    assert_eq!(service.status, 200, "{}", service.body);
    assert_eq!(service.body["host"], HOST);
    assert_eq!(
        service.body["auth_config"],
        json!({"type": "bearer", "token": "OPENAI_KEY"})
    );
    let sid = service.body["id"].as_str().expect("id").to_owned();
    let again = c
        .post(
            &format!("/v1/vaults/{vid}/services"),
            json!({"host": HOST, "auth_config": {"type": "bearer", "token": "OPENAI_KEY"}}),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(
        c.get(&format!("/v1/vaults/{vid}/discover")).await.body["services"],
        json!([HOST])
    );

    // The VM holds a placeholder; its request arrives with the secret.
    let vm = c.create_vm(json!({"vault_ids": [vid]})).await;
    assert_eq!(vm["env_status"], "ready", "{vm}");
    let id = vm["vm_id"].as_str().expect("id").to_owned();
    let (out, _, _) = c.exec(&id, "echo $OPENAI_KEY").await;
    assert_eq!(out.trim(), "paddock-vault-placeholder-OPENAI_KEY");
    let bearer = "'Bearer ' + os.environ['OPENAI_KEY']";
    let got = call(&c, &id, "/v1/models?limit=1", "Authorization", bearer).await;
    assert_eq!(
        got["authorization"],
        sha256(&format!("Bearer {SECRET}")),
        "{got}"
    );
    assert_eq!(got["path"], "/v1/models?limit=1");
    assert_eq!(got["host"], HOST);

    // Nothing in the sandbox holds it: its environment, its files, the
    // memory of its processes.
    let (out, _, _) = c
        .exec(
            &id,
            &format!(
                "env | grep -c {SECRET}; grep -rls {SECRET} /etc /root /tmp /home 2>/dev/null | wc -l; \
                 cat /proc/[0-9]*/environ 2>/dev/null | grep -c {SECRET}"
            ),
        )
        .await;
    assert_eq!(out, "0\n0\n0\n", "the secret is in the sandbox");

    // The request is in the vault's log: no query, no secret.
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let r = c
            .get(&format!("/v1/vaults/{vid}/request-logs?limit=10"))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        if r.body["logs"].as_array().is_some_and(|l| !l.is_empty()) {
            break r.body;
        }
        assert!(Instant::now() < deadline, "no request logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let entry = &logs["logs"][0];
    assert_eq!(entry["host"], HOST);
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/v1/models");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["vm_id"], id.as_str());
    assert_eq!(entry["credential_name"], "OPENAI_KEY");

    // The proxy on the gateway serves a VM its own services only: another
    // VM (no vaults) asking it for the bound host by name, and this VM
    // asking for a host no vault binds, get a closed connection.
    let stranger = c.create_vm(json!({})).await;
    let stranger = stranger["vm_id"].as_str().expect("id").to_owned();
    for (vm, name) in [
        (stranger.as_str(), HOST),
        (id.as_str(), "unbound.example.test"),
    ] {
        assert_eq!(tls_to_gateway(&c, vm, name).await, "refused", "{vm} {name}");
    }
    assert_eq!(tls_to_gateway(&c, &id, HOST).await, "served");
    assert_eq!(c.delete(&format!("/v1/vms/{stranger}")).await.status, 200);

    // A VM whose egress policy reaches nothing reaches no service either.
    let closed = c
        .create_vm(json!({"vault_ids": [vid], "egress_policy": {"default": "deny"}}))
        .await;
    let closed = closed["vm_id"].as_str().expect("id").to_owned();
    let got = call(&c, &closed, "/nope", "Authorization", bearer).await;
    assert!(got["error"].is_string(), "{got}");
    assert_eq!(c.delete(&format!("/v1/vms/{closed}")).await.status, 200);

    // A credential added later reaches the running VM's commands.
    let r = c
        .post(
            &format!("/v1/vaults/{vid}/credentials"),
            json!({"name": "LATER_ADDED", "value": "later-value-3c"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (out, _, _) = c.exec(&id, "echo $LATER_ADDED").await;
    assert_eq!(out, "later-value-3c\n");

    // Another header, then a rotated value: in force at once.
    let r = c
        .patch(
            &format!("/v1/vaults/{vid}/services/{sid}"),
            json!({"auth_config": {"type": "api-key", "header": "X-Api-Key", "key": "OPENAI_KEY"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = call(&c, &id, "/v2", "X-Api-Key", "os.environ['OPENAI_KEY']").await;
    assert_eq!(got["x_api_key"], sha256(SECRET), "{got}");
    let r = c
        .post(
            &format!("/v1/vaults/{vid}/credentials/{cid}/rotate"),
            json!({"value": ROTATED}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = call(&c, &id, "/v3", "X-Api-Key", "os.environ['OPENAI_KEY']").await;
    assert_eq!(got["x_api_key"], sha256(ROTATED), "{got}");

    // A restart keeps the VM's services in force, with the same CA.
    server.restart();
    let c = server.client();
    let got = call(&c, &id, "/v4", "X-Api-Key", "os.environ['OPENAI_KEY']").await;
    assert_eq!(got["x_api_key"], sha256(ROTATED), "{got}");

    // Another account sees none of it.
    let other = c.with_key(Some(&server.other_account_key()));
    for path in [
        format!("/v1/vaults/{vid}/services"),
        format!("/v1/vaults/{vid}/services/{sid}"),
        format!("/v1/vaults/{vid}/request-logs"),
    ] {
        assert_eq!(other.get(&path).await.status, 404, "{path}");
    }
    assert_eq!(
        other
            .delete(&format!("/v1/vaults/{vid}/services/{sid}"))
            .await
            .status,
        404
    );

    // Unbound, the host is no longer paddock's: the VM reaches it
    // directly, and the test's CA is none of the sandbox's.
    let r = c.delete(&format!("/v1/vaults/{vid}/services/{sid}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = call(&c, &id, "/v5", "X-Api-Key", "'x'").await;
    let error = got["error"].as_str().unwrap_or_default();
    assert!(error.contains("CERTIFICATE_VERIFY_FAILED"), "{got}");

    // Bound again, then the whole vault deleted: the VM stops getting the
    // service at once.
    let r = c
        .post(
            &format!("/v1/vaults/{vid}/services"),
            json!({"host": HOST, "auth_config": {"type": "bearer", "token": "OPENAI_KEY"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = call(&c, &id, "/v6", "Authorization", bearer).await;
    assert_eq!(
        got["authorization"],
        sha256(&format!("Bearer {ROTATED}")),
        "{got}"
    );
    assert_eq!(c.delete(&format!("/v1/vaults/{vid}")).await.status, 200);
    let got = call(&c, &id, "/v7", "Authorization", "'x'").await;
    let error = got["error"].as_str().unwrap_or_default();
    assert!(error.contains("CERTIFICATE_VERIFY_FAILED"), "{got}");

    // Answers, the data dir and the log never carry a value.
    for path in [
        format!("/v1/vaults/{vid}/services"),
        format!("/v1/vaults/{vid}/request-logs"),
        format!("/v1/vms/{id}"),
    ] {
        let r = c.get(&path).await;
        assert!(!r.body.to_string().contains(SECRET), "{path}");
        assert!(!r.body.to_string().contains(ROTATED), "{path}");
    }
    for needle in [SECRET, ROTATED] {
        assert!(!server.log().contains(needle));
    }
}

#[tokio::test]
async fn the_catalog_binds_templates_to_credentials_the_vault_has() {
    let server = Server::start();
    let c = server.client();
    let catalog = c.get("/v1/vaults/catalog").await;
    assert_eq!(catalog.status, 200, "{}", catalog.body);
    let openai = catalog.body["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .find(|t| t["id"] == "openai")
        .expect("an openai template")
        .clone();
    assert_eq!(openai["host"], "api.openai.com");
    assert_eq!(openai["credential_key"], "OPENAI_API_KEY");

    let vid = c.post("/v1/vaults", json!({"name": "llm"})).await.body["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/v1/vaults/{vid}/services:from_template");
    // Unknown templates, and templates whose credential the vault lacks.
    for ids in [json!(["no-such"]), json!(["openai"]), json!([])] {
        let r = c.post(&path, json!({"template_ids": ids})).await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(r.body["detail"][0]["loc"], json!(["body", "template_ids"]));
    }
    c.post(
        &format!("/v1/vaults/{vid}/credentials"),
        json!({"name": "OPENAI_API_KEY", "value": "sk-template"}),
    )
    .await;
    let r = c.post(&path, json!({"template_ids": ["openai"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["services"][0]["host"], "api.openai.com");
    assert_eq!(
        r.body["services"][0]["auth_config"],
        json!({"type": "bearer", "token": "OPENAI_API_KEY"})
    );
    // Bound already: left as it is.
    let r = c.post(&path, json!({"template_ids": ["openai"]})).await;
    assert_eq!(r.body["services"].as_array().map(Vec::len), Some(1));
    let r = c
        .get(&format!("/v1/vaults/{vid}/request-logs?limit=0"))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["detail"][0]["loc"], json!(["query", "limit"]));
}
