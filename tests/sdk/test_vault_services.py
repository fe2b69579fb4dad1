"""Vault services through the unchanged instavm SDK and CLI: a host bound
to a vault credential is reached from a VM with only a placeholder in its
environment, and the request arrives with the real credential (added by
paddock's egress path); the catalog, templates and request logs."""

import hashlib
import http.server
import json
import os
import ssl
import subprocess
import threading

import pytest
from instavm import InstaVM

from conftest import Server

HOST = "api.sdk-vault.test"
SECRET = "sk-sdk-vault-5be1c09a7d"


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(d):
    """A CA of the test's own and a certificate for HOST from it."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-subj", "/CN=sdk vault test CA", "-days", "2",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,digitalSignature", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
             "-subj", f"/CN={HOST}", cwd=d)
    (d / "ext.cnf").write_text(f"subjectAltName=DNS:{HOST}\n")
    _openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "srv.crt", "-days", "2", "-extfile", "ext.cnf", cwd=d)


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        auth = self.headers.get("Authorization")
        body = json.dumps({
            "path": self.path,
            "authorization": hashlib.sha256(auth.encode()).hexdigest() if auth else None,
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def vault_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("upstream")
    _certificates(d)
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "srv.crt", d / "srv.key")
    upstream.socket = context.wrap_socket(upstream.socket, server_side=True)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    config = (f'[network]\nvault_extra_roots = "{d / "ca.crt"}"\n'
              f'[network.vault_upstreams]\n"{HOST}" = "127.0.0.1:{upstream.server_address[1]}"\n')
    s = Server(extra_env={"PADDOCK_NETWORK__BRIDGE": "psdk2",
                          "PADDOCK_NETWORK__SUBNET": "10.63.2.0/24"}, config=config)
    yield s
    s.stop()
    upstream.shutdown()


def test_a_bound_host_gets_the_credential_through_the_sdk(vault_server, tmp_path):
    server = vault_server
    client = InstaVM(api_key=server.key, base_url=server.base_url, auto_start_session=False,
                     timeout=120)
    vid = client.create_vault("sdk-services")["id"]
    client.add_vault_credential(vid, name="API_TOKEN", value=SECRET)
    service = client.add_vault_service(vid, host=HOST,
                                       auth_config={"type": "bearer", "token": "API_TOKEN"},
                                       description="sdk test API")
    assert service["host"] == HOST and service["enabled"] is True
    assert [s["id"] for s in client.list_vault_services(vid)] == [service["id"]]
    assert client.discover_vault(vid)["services"] == [HOST]

    vm = client.vms.create(wait=True, vault_ids=[vid])
    inside = InstaVM(api_key=server.key, base_url=server.base_url, auto_start_session=False,
                     timeout=120)
    inside.session_id = vm["session_id"]
    assert inside.execute("echo $API_TOKEN")["stdout"] == "paddock-vault-placeholder-API_TOKEN\n"
    r = inside.execute(
        "import json, os, urllib.request\n"
        f"req = urllib.request.Request('https://{HOST}/v1/chat?stream=0', headers="
        "{'Authorization': 'Bearer ' + os.environ['API_TOKEN']})\n"
        "print(urllib.request.urlopen(req, timeout=15).read().decode())",
        language="python")
    got = json.loads(r["stdout"])
    assert got["authorization"] == hashlib.sha256(f"Bearer {SECRET}".encode()).hexdigest(), r
    assert got["path"] == "/v1/chat?stream=0"

    logs = client.get_vault_request_logs(vid, limit=5)
    assert logs and logs[0]["host"] == HOST and logs[0]["path"] == "/v1/chat"
    assert logs[0]["status"] == 200 and logs[0]["credential_name"] == "API_TOKEN"
    assert SECRET not in json.dumps(logs)

    # The CLI reads the same records.
    env = dict(os.environ, INSTAVM_API_KEY=server.key, INSTAVM_BASE_URL=server.base_url,
               HOME=str(tmp_path))
    cli = os.path.join(os.path.dirname(os.sys.executable), "instavm")
    out = subprocess.run([cli, "vault", "service", "list", vid, "--json"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [s["host"] for s in json.loads(out.stdout)["services"]] == [HOST]
    out = subprocess.run([cli, "vault", "logs", vid, "--json"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["logs"][0]["host"] == HOST

    out = subprocess.run([cli, "vault", "catalog", "--json"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "api.openai.com" in out.stdout

    assert client.delete_vault_service(vid, service["id"]) is True
    assert client.list_vault_services(vid) == []
    client.vms.delete(vm["vm_id"])


def test_templates_from_the_catalog(vault_server):
    client = InstaVM(api_key=vault_server.key, base_url=vault_server.base_url,
                     auto_start_session=False, timeout=60)
    catalog = client.get_vault_catalog()
    anthropic = next(t for t in catalog if t["id"] == "anthropic")
    assert anthropic["host"] == "api.anthropic.com" and anthropic["header"] == "x-api-key"
    vid = client.create_vault("sdk-templates")["id"]
    client.add_vault_credential(vid, name="ANTHROPIC_API_KEY", value="sk-ant-sdk")
    result = client.add_vault_services_from_templates(vid, ["anthropic"])
    bound = result["services"]
    assert [s["host"] for s in bound] == ["api.anthropic.com"]
    assert bound[0]["auth_config"] == {"type": "api-key", "header": "x-api-key",
                                       "key": "ANTHROPIC_API_KEY"}
    client.delete_vault(vid)
