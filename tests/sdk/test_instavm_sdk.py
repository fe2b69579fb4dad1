"""paddock driven through InstaVM's own Python SDK, unchanged: every call
the VM API issue names."""

import asyncio
import hashlib
import json
import os
import subprocess
import time

import pytest
import requests
import websockets
from instavm import InstaVM
from instavm.exceptions import AuthenticationError


@pytest.fixture(scope="module")
def client(server):
    return InstaVM(api_key=server.key, base_url=server.base_url, timeout=120)


def test_session_starts_and_is_active(client):
    assert client.session_id
    assert client.is_session_active()
    info = client.get_session_info()
    assert info["session_id"] == client.session_id
    status = client.get_session_status()
    assert status["vm_status"] == "active"


def test_execute_shell_and_python(client):
    r = client.execute("echo hello; echo oops >&2; exit 4")
    assert r["stdout"] == "hello\n"
    assert r["stderr"] == "oops\n"
    assert r["exit_code"] == 4
    assert isinstance(r["execution_time"], float)
    r = client.execute("import platform; print(platform.node())", language="python")
    assert r["stdout"] == "sandbox\n"
    r = client.execute("sleep 5", timeout=1)
    assert r["timed_out"] is True


def test_state_persists_between_calls(client):
    client.execute("echo kept > /root/kept.txt")
    assert client.execute("cat /root/kept.txt")["stdout"] == "kept\n"


def test_upload_and_download(client, tmp_path):
    payload = os.urandom(3 * 1024 * 1024)
    src = tmp_path / "blob.bin"
    src.write_bytes(payload)
    up = client.upload_file(str(src), "/root/uploaded/blob.bin")
    assert up["size"] == len(payload)
    digest = client.execute("sha256sum /root/uploaded/blob.bin")["stdout"].split()[0]
    assert digest == hashlib.sha256(payload).hexdigest()
    out = tmp_path / "back.bin"
    down = client.download_file("/root/uploaded/blob.bin", local_path=str(out))
    assert down["size"] == len(payload)
    assert out.read_bytes() == payload


def test_execute_async(client):
    task = client.execute_async("sleep 0.5; echo done-async")
    result = client.get_task_result(task["task_id"], poll_interval=0.2, timeout=30)
    assert result["stdout"] == "done-async\n"
    assert result["execution_time"] >= 0.5


def test_vms_crud(client):
    vm = client.vms.create(wait=True, memory_mb=256, vcpu_count=1, metadata={"k": "v"}, env={"A": "1"})
    assert vm["status"] == "active"
    vm_id = vm["vm_id"]
    assert any(v["vm_id"] == vm_id for v in client.vms.list())
    assert client.vms.get(vm_id)["metadata"] == {"k": "v"}
    updated = client.vms.update(vm_id, metadata={"k": "w"}, memory_mb=384)
    assert updated["metadata"] == {"k": "w"}
    assert updated["memory_mb"] == 384
    creating = client.vms.create(wait=False)
    assert creating["status"] == "creating"
    assert client.vms.delete(vm_id)["status"] == "terminated"
    assert not any(v["vm_id"] == vm_id for v in client.vms.list())
    assert any(v["vm_id"] == vm_id for v in client.vms.list_all_records())
    client.vms.delete(creating["vm_id"])


def test_pty_over_websocket(client, server):
    vm = client.vms.create(wait=True)
    pty = client.pty.create_for_vm(vm["vm_id"], cols=90, rows=20)
    pty_id = pty["session_id"]
    assert any(p["session_id"] == pty_id for p in client.pty.list_for_vm(vm["vm_id"]))
    client.pty.resize_for_vm(vm["vm_id"], pty_id, cols=132, rows=43)
    assert client.pty.get_for_vm(vm["vm_id"], pty_id)["cols"] == 132

    async def talk():
        async with websockets.connect(client.pty.ws_url_for_vm(vm["vm_id"], pty_id)) as ws:
            # Type once the shell shows its prompt, as a person would.
            shown = b""
            while b"# " not in shown:
                msg = await asyncio.wait_for(ws.recv(), timeout=10)
                if isinstance(msg, bytes):
                    shown += msg
            await ws.send(b"echo sdk-$((40+2))\n")
            seen = b""
            deadline = time.time() + 10
            while b"sdk-42" not in seen and time.time() < deadline:
                msg = await asyncio.wait_for(ws.recv(), timeout=10)
                if isinstance(msg, bytes):
                    seen += msg
            await ws.send(b"exit 5\n")
            while True:
                msg = await asyncio.wait_for(ws.recv(), timeout=10)
                if isinstance(msg, str):
                    ctrl = json.loads(msg)
                    if ctrl.get("type") == "exit":
                        return seen, ctrl["exit_code"]

    seen, code = asyncio.run(talk())
    assert b"sdk-42" in seen
    assert code == 5
    client.pty.kill_for_vm(vm["vm_id"], pty_id)

    # The session-scoped routes reach the session's VM.
    spty = client.pty.create(client.session_id)
    assert client.pty.get(client.session_id, spty["session_id"])["alive"] is True
    client.pty.kill(client.session_id, spty["session_id"])
    client.vms.delete(vm["vm_id"])


def test_wrong_key_is_rejected(server):
    with pytest.raises(AuthenticationError):
        InstaVM(api_key="pdk_not_a_key", base_url=server.base_url)


def test_kill_ends_the_session(server):
    c = InstaVM(api_key=server.key, base_url=server.base_url)
    sid = c.session_id
    c.kill()
    assert InstaVM(api_key=server.key, base_url=server.base_url, auto_start_session=False).get_session_status(sid)["vm_status"] == "terminated"


def _in_vm(server, vm):
    """An SDK client whose session is the given VM's."""
    c = InstaVM(api_key=server.key, base_url=server.base_url, auto_start_session=False, timeout=120)
    c.session_id = vm["session_id"]
    return c


def test_snapshot_restore_and_clone(client, server):
    vm = client.vms.create(wait=True)
    src = _in_vm(server, vm)
    src.execute("mkdir -p /srv/app && echo v1 > /srv/app/state && ln -s state /srv/app/link")
    snap = client.vms.snapshot(vm["vm_id"], name="sdk-snap")
    assert snap["status"] == "ready"
    sid = snap["snapshot_id"]
    assert client.snapshots.get(sid)["name"] == "sdk-snap"
    assert any(s["id"] == sid for s in client.snapshots.list())

    restored = client.vms.create(wait=True, snapshot_id=sid)
    assert restored["status"] == "active"
    out = _in_vm(server, restored).execute("cat /srv/app/link")["stdout"]
    assert out == "v1\n"

    clone = client.vms.clone(vm["vm_id"], snapshot_name="sdk-clone")
    assert clone["snapshot_id"] and clone["vm_id"] != vm["vm_id"]
    _in_vm(server, clone).execute("echo clone > /srv/app/state")
    assert src.execute("cat /srv/app/state")["stdout"] == "v1\n"

    for v in (restored, clone):
        client.vms.delete(v["vm_id"])
    assert client.snapshots.delete(sid)["id"] == sid
    client.vms.delete(vm["vm_id"])


def test_vault_secrets_reach_the_vm(client, server):
    vault = client.create_vault("sdk-vault", description="for tests")
    vid = vault["id"]
    assert any(v["id"] == vid for v in client.list_vaults())
    cred = client.add_vault_credential(vid, name="SDK_TOKEN", value="sdk-secret-value-93")
    assert "sdk-secret-value-93" not in json.dumps(cred)
    assert [c["name"] for c in client.list_vault_credentials(vid)] == ["SDK_TOKEN"]
    assert client.discover_vault(vid)["credentials"] == ["SDK_TOKEN"]

    vm = client.vms.create(wait=True, vault_ids=[vid])
    assert vm["env_status"] == "ready"
    assert _in_vm(server, vm).execute("echo $SDK_TOKEN")["stdout"] == "sdk-secret-value-93\n"
    client.vms.stage_env(vm["vm_id"], {"STAGED": "staged-93"})
    assert _in_vm(server, vm).execute("echo $STAGED")["stdout"] == "staged-93\n"
    # The vault comes off the running VM, and its secret with it; a
    # variable staged by hand stays.
    updated = client.vms.update(vm["vm_id"], vault_ids=[])
    assert updated["vault_ids"] == []
    out = _in_vm(server, vm).execute('echo "[$SDK_TOKEN][$STAGED]"')["stdout"]
    assert out == "[][staged-93]\n"
    assert client.vms.update(vm["vm_id"], vault_ids=[vid])["vault_ids"] == [vid]
    assert _in_vm(server, vm).execute("echo $SDK_TOKEN")["stdout"] == "sdk-secret-value-93\n"

    failed = client.vms.create(wait=True, vault_ids=["vault_missing"])
    assert failed["env_status"] == "error" and "vault_missing" in failed["env_error"]

    client.rotate_vault_credential(vid, cred["id"], value="sdk-rotated-94")
    assert client.update_vault(vid, name="renamed")["name"] == "renamed"
    client.delete_vault_credential(vid, cred["id"])
    assert client.delete_vault(vid) is True
    client.vms.delete(vm["vm_id"])


def test_volumes_and_checkpoints(client, server):
    vol = client.volumes.create("sdk-vol", 32 * 1024 * 1024)
    vid = vol["id"]
    assert vol["quota_bytes"] == 32 * 1024 * 1024
    assert any(v["id"] == vid for v in client.volumes.list())

    vm = client.vms.create(wait=True, volumes=[{"volume_id": vid, "mount_path": "/data"}])
    assert vm["status"] == "active"
    inside = _in_vm(server, vm)
    inside.execute("echo one > /data/f")
    ck = client.volumes.create_checkpoint(vid, name="sdk-ck")
    assert [c["id"] for c in client.volumes.list_checkpoints(vid)] == [ck["id"]]
    inside.execute("echo two > /data/f")

    reader = client.vms.create(wait=True)
    mounted = client.vms.mount_volume(reader["vm_id"], vid, "/then", mode="ro", checkpoint_id=ck["id"])
    assert mounted["mode"] == "ro"
    assert [m["mount_path"] for m in client.vms.list_volumes(reader["vm_id"])] == ["/then"]
    r = _in_vm(server, reader).execute("cat /then/f; echo x > /then/f")
    assert r["stdout"] == "one\n" and "Read-only" in r["stderr"]
    client.vms.unmount_volume(reader["vm_id"], vid, "/then")
    assert client.vms.list_volumes(reader["vm_id"]) == []

    assert client.volumes.get(vid)["status"] == "attached"
    client.vms.delete(vm["vm_id"])
    client.vms.delete(reader["vm_id"])
    assert client.volumes.update(vid, name="renamed")["name"] == "renamed"
    client.volumes.delete_checkpoint(vid, ck["id"])
    client.volumes.delete(vid)
    assert all(v["id"] != vid for v in client.volumes.list())


def test_egress_policies(client, server):
    vm = client.vms.create(wait=True)
    vid = vm["vm_id"]
    set_ = client.set_vm_egress(vid, allow_http=False, allow_https=True,
                                allowed_domains=["*.example.test"], allowed_cidrs=["198.18.0.0/15"])
    assert set_["allow_https"] is True and set_["allow_http"] is False
    got = client.get_vm_egress(vid)
    assert got["allowed_domains"] == ["*.example.test"]
    assert got["allowed_cidrs"] == ["198.18.0.0/15"]
    # HTTPS anywhere means names resolve; the rules are in force at once.
    r = _in_vm(server, vm).execute("ip -4 -o addr show eth0 | grep -c inet")
    assert r["stdout"].strip() == "1"

    client.set_session_egress(allow_package_managers=False, allow_http=False, allow_https=False,
                              allowed_domains=[], allowed_cidrs=[])
    got = client.get_session_egress()
    assert got["allow_http"] is False and got["allow_public_repos"] is False
    client.vms.delete(vid)


def test_shares_custom_domains_and_ssh_keys(client, server):
    vm = client.vms.create(wait=True)
    vid = vm["vm_id"]
    share = client.shares.create(port=8000, vm_id=vid, is_public=True)
    assert share["share_id"].startswith("shr_")
    assert share["url"].startswith("http://") and share["port"] == 8000
    private = client.shares.update(share["share_id"], is_public=False)
    assert private["is_public"] is False and private["token"]
    with pytest.raises(Exception):
        client.custom_domains.create("app.example.test", share["share_id"], "cloudflare")
    assert client.custom_domains.list() == []
    revoked = client.shares.update(share["share_id"], revoke=True)
    assert revoked["revoked"] is True

    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKnPFMvMQRRYKkwUqjHZ/XmLjTrWZSCvCNBHh3ZcVxsU sdk@test"
    added = client.add_ssh_key(key)
    assert added["fingerprint"].startswith("SHA256:")
    assert [k["id"] for k in client.list_ssh_keys()] == [added["id"]]
    client.delete_ssh_key(added["id"])
    assert client.list_ssh_keys() == []
    client.vms.delete(vid)


def test_api_keys_and_the_current_user(client, server, tmp_path):
    me = client.get_current_user()
    assert me["email"] == "admin@localhost" and me["role"] == "admin"
    assert me["id"].startswith("user_") and me["is_verified"] is True

    made = client.api_keys.create(name="sdk", description="made by the SDK", expires_in_days=7)
    assert made["key"].startswith(made["key_prefix"]) and made["fingerprint"].startswith("SHA256:")
    listed = client.api_keys.list()
    assert made["id"] in [k["id"] for k in listed]
    assert all("key" not in k for k in listed)
    assert client.api_keys.get(made["id"])["name"] == "sdk"
    renamed = client.api_keys.update(made["id"], name="sdk-2", expires_at=None)
    assert renamed["name"] == "sdk-2" and renamed["expires_at"] is None

    # The new key works, through the CLI too, until it is deleted.
    second = InstaVM(api_key=made["key"], base_url=server.base_url, timeout=60)
    assert second.get_current_user()["account_id"] == me["account_id"]
    env = dict(os.environ, INSTAVM_API_KEY=made["key"], INSTAVM_BASE_URL=server.base_url,
               HOME=str(tmp_path))
    cli = os.path.join(os.path.dirname(os.sys.executable), "instavm")
    out = subprocess.run([cli, "whoami", "--json"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["email"] == "admin@localhost"

    client.api_keys.delete(made["id"])
    with pytest.raises(AuthenticationError):
        second.get_current_user()
    assert made["id"] not in [k["id"] for k in client.api_keys.list()]


def test_usage_sandbox_listing_and_app_url(client):
    client.execute("python3 -c 'import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass'")
    usage = client.get_usage()
    assert usage["session_id"] == client.session_id and usage["vm_ids"]
    breakdown = client.get_usage_breakdown(days=7)
    assert breakdown["total_days"] == 7 and len(breakdown["daily_breakdown"]) == 7
    assert {"cost_dollars", "cpu_hours", "ram_gib_hours"} <= set(breakdown["totals"])

    vm = client.vms.create(wait=True, metadata={"suite": "sdk-listing"})
    listed = client.list_sandboxes(metadata={"suite": "sdk-listing"})
    assert [s["vm_id"] for s in listed] == [vm["vm_id"]]
    assert len(client.list_sandboxes(limit=1)) == 1

    app = client.get_session_app_url(port=8080)
    assert app["session_id"] == client.session_id and app["port"] == 8080
    assert app["app_url"].startswith("http://")
    assert client.get_session_app_url(port=8080)["share_id"] == app["share_id"]
    client.vms.delete(vm["vm_id"])


def test_audit_log_through_sdk_and_cli(client, server, tmp_path):
    vm = client.vms.create(wait=True)
    client.vms.delete(vm["vm_id"])
    catalog = client.audit.catalog()
    assert "vms.create" in catalog["catalog"]["vms"]
    page = client.audit.events(vm_id=vm["vm_id"], limit=10)
    assert sorted(e["event_type"] for e in page["items"]) == ["vms.create", "vms.delete"]
    event = client.audit.get_event(page["items"][0]["id"])
    assert event["vm_id"] == vm["vm_id"] and event["status"] == "success"

    env = dict(os.environ, INSTAVM_API_KEY=server.key, INSTAVM_BASE_URL=server.base_url,
               HOME=str(tmp_path))
    cli = os.path.join(os.path.dirname(os.sys.executable), "instavm")
    out = subprocess.run([cli, "events", "tail", "--once", "--json", "--vm", vm["vm_id"]],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip().startswith("{")]
    assert {e["event_type"] for e in lines} == {"vms.create", "vms.delete"}, out.stdout


def test_webhooks_verify_with_the_sdks_own_check():
    """Endpoints, a test event and the deliveries through the SDK; each
    delivery passes `instavm.webhooks.verify` with the endpoint's secret."""
    import http.server
    import threading

    from instavm.webhooks import WebhookVerificationError, verify
    from conftest import Server

    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    # A second server beside the module's: a bridge and subnet of its own.
    server = Server(extra_env={"PADDOCK_WEBHOOKS__ALLOW_PRIVATE": "true",
                               "PADDOCK_NETWORK__BRIDGE": "psdk1",
                               "PADDOCK_NETWORK__SUBNET": "10.63.1.0/24"})
    try:
        client = InstaVM(api_key=server.key, base_url=server.base_url, timeout=60)
        url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        endpoint = client.webhooks.create_endpoint(url, description="sdk", event_patterns=["vm.*", "webhook.*"])
        secret = endpoint["secret"]
        assert endpoint["status"] == "active"
        assert "secret" not in client.webhooks.get_endpoint(endpoint["id"])
        assert [e["id"] for e in client.webhooks.list_endpoints()] == [endpoint["id"]]
        client.webhooks.send_test_event(endpoint["id"])
        assert client.webhooks.verify_endpoint(endpoint["id"])["ok"] is True
        vm = client.vms.create(wait=True)
        deadline = time.time() + 30
        while time.time() < deadline and not any(b'"vm.running"' in b for _, b in received):
            time.sleep(0.2)
        types = set()
        for headers, body in received:
            event = verify(headers, body, secret)
            types.add(event["event_type"])
            with pytest.raises(WebhookVerificationError):
                verify(headers, body, "whsec_wrong")
        assert {"webhook.test", "webhook.verify", "vm.created", "vm.running"} <= types, types
        page = client.webhooks.list_deliveries(endpoint_id=endpoint["id"], status="succeeded")
        assert len(page["items"]) >= 4
        replayed = client.webhooks.replay_delivery(page["items"][0]["id"])
        assert replayed["status"] == "pending"
        updated = client.webhooks.update_endpoint(endpoint["id"], enabled=False, description=None)
        assert updated["status"] == "disabled" and updated["description"] is None
        rotated = client.webhooks.rotate_secret(endpoint["id"])
        assert rotated["secret"] != secret
        client.vms.delete(vm["vm_id"])
        client.webhooks.delete_endpoint(endpoint["id"])
        assert client.webhooks.list_endpoints() == []
    finally:
        server.stop()
        receiver.shutdown()


def test_volume_files_through_the_sdk(client, tmp_path):
    volume = client.volumes.create(name="sdk-files", quota_bytes=32 << 20)
    vid = volume["volume_id"]
    local = tmp_path / "in.txt"
    local.write_bytes(b"volume file via sdk")
    up = client.volumes.upload_file(vid, str(local), "notes/in.txt")
    assert up["size"] == len(b"volume file via sdk")
    files = client.volumes.list_files(vid, prefix="notes")
    assert [f["path"] for f in files] == ["notes/in.txt"]
    out = tmp_path / "out.txt"
    got = client.volumes.download_file(vid, "notes/in.txt", local_path=str(out))
    assert out.read_bytes() == b"volume file via sdk" and got["saved_bytes"] == got["size"]
    client.volumes.delete_file(vid, "notes/in.txt")
    assert [f["path"] for f in client.volumes.list_files(vid)] == ["notes"]
    client.volumes.delete(vid)


def test_suspend_and_resume_refuse_what_cannot_be_done(client, server):
    # The suite's VMs are containers: this host's CRIU cannot checkpoint
    # them (see /readyz), so suspend is refused with the reason, and the VM
    # keeps running. (A microVM started from an image suspends and resumes
    # with its memory: crates/paddock/tests/microvm.rs, over HTTP.)
    vm = client.vms.create(wait=True)
    vid = vm["vm_id"]
    with pytest.raises(requests.exceptions.HTTPError) as refused:
        client.vms.suspend(vid)
    assert refused.value.response.status_code == 409
    assert "cannot be suspended" in refused.value.response.json()["detail"]
    with pytest.raises(requests.exceptions.HTTPError) as refused:
        client.vms.resume(vid, wait=True)
    assert refused.value.response.status_code == 409
    assert "only a suspended VM" in refused.value.response.json()["detail"]
    assert client.vms.get(vid)["status"] == "active"
    client.vms.delete(vid)
