"""Devbox templates through InstaVM's own SDK and CLI, unchanged: a
manifest published (its snapshot built by paddock's builder over the
SDK's base image, pulled from a registry mirror on loopback; then
verified), listed and read without a key, run as a VM whose app is
shared, and the built-in templates built at first use."""

import json
import os
import pathlib
import subprocess
import pty
import select
import sys
import time

import pytest
import requests
import instavm.sandbox_client as sandbox_client
from instavm import InstaVM

from conftest import BIN, Server
from registry import Registry

MANIFEST = """\
schema_version: 2
kind: devbox
slug: busy-web
name: Busy web
version: 1.0.0
audience: devbox
description: A tiny web app on busybox
vm:
  memory_mb: 256
  vcpus: 1
build:
  - name: site
    command: busybox mkdir -p /root/www && echo 'hello from a template' > /root/www/index.html
runtime:
  - kind: command
    name: check
    command: cat /root/www/index.html
terminal:
  tmux_session: main
  command: busybox httpd -f -p 8080 -h /root/www
  cwd: /root
app:
  port: 8080
  healthcheck_path: /
"""


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """A server whose `docker.io` pulls go to a mirror on loopback that
    holds the SDK's base image (`ubuntu:24.04`, busybox inside)."""
    reg = Registry()
    reg.push_busybox("library/ubuntu:24.04")
    config = reg.paddock_config() + f'[registries."docker.io"]\nmirror = "{reg.host}"\n'
    s = Server(
        extra_env={"PADDOCK_NETWORK__BRIDGE": "psdk2", "PADDOCK_NETWORK__SUBNET": "10.63.2.0/24"},
        config=config,
    )
    # The SDK polls every 5 s; the test has no reason to wait that long.
    sandbox_client.TEMPLATE_POLL_INTERVAL_SECONDS = 0.2
    directory = tmp_path_factory.mktemp("busy-web")
    (directory / "instavm.yaml").write_text(MANIFEST)
    yield s, directory
    s.stop()
    reg.stop()


def _other_key(server, name):
    return subprocess.run(
        [str(BIN), "keys", "create", "--data-dir", str(server.data), "--new-account", name],
        check=True, capture_output=True, text=True, env=server.env,
    ).stdout.strip().split()[-1]


def test_publish_list_get_and_run(catalog):
    server, directory = catalog
    client = InstaVM(api_key=server.key, base_url=server.base_url, auto_start_session=False, timeout=300)
    published = client.templates.publish(str(directory), verify=True, wait=True)
    assert published["status"] == "active" and published["slug"] == "busy-web", published
    assert published["public"] is True and published["snapshot_id"]
    snapshot = client.snapshots.get(published["snapshot_id"])
    assert snapshot["status"] == "ready" and snapshot["name"] == "template/busy-web:1.0.0"

    # The catalog is read without a key.
    anyone = InstaVM(api_key=None, base_url=server.base_url, auto_start_session=False)
    slugs = [t["slug"] for t in anyone.templates.list()]
    assert {"busy-web", "python-data-science", "node-dev"} <= set(slugs)
    got = anyone.templates.get("busy-web")
    assert got["terminal"]["command"].startswith("busybox httpd") and got["app"]["port"] == 8080
    assert requests.get(f"{server.base_url}/v1/templates/nope", timeout=30).status_code == 404
    assert requests.get(f"{server.base_url}/v1/templates", headers={"X-API-Key": "wrong"}, timeout=30).status_code == 401

    # Publishing again reuses the ready snapshot of the same name.
    again = client.templates.publish(str(directory), verify=False, wait=True)
    assert again["snapshot_id"] == published["snapshot_id"] and again["status"] == "active"

    run = client.templates.run("busy-web", vm_lifetime="30m", name="web1")
    assert run["status"] == "active" and run["devbox_name"] == "web1", run
    assert run["app"]["ready"] is True and run["app"]["share_url"].startswith("http://")
    host = run["app"]["share_url"].split("/")[2]
    page = requests.get(
        f"http://127.0.0.1:{server.share_port}/",
        headers={"Host": host, "X-Share-Token": run["app"]["token"]},
        timeout=30,
    )
    assert page.status_code == 200 and page.text == "hello from a template\n"
    vm = client.vms.get(run["vm_id"])
    assert vm["devbox_name"] == "web1" and vm["devbox_template_slug"] == "busy-web"
    assert vm["memory_mb"] == 256 and vm["vm_lifetime_seconds"] == 1800
    # A second devbox of that name is refused while the first runs.
    r = requests.post(f"{server.base_url}/v1/templates/busy-web/runs", headers={"X-API-Key": server.key},
                      json={"name": "web1"}, timeout=60)
    assert r.status_code == 409, r.text

    # Another account runs the catalog's template from a snapshot built
    # for it, and cannot see or delete the publisher's draft.
    other = InstaVM(api_key=_other_key(server, "tpl-other"), base_url=server.base_url,
                    auto_start_session=False, timeout=300)
    theirs = other.templates.run("busy-web")
    assert theirs["app"]["ready"] is True
    assert other.vms.get(theirs["vm_id"])["snapshot_id"] != published["snapshot_id"]
    r = requests.delete(f"{server.base_url}/v1/templates/busy-web", headers={"X-API-Key": other.api_key}, timeout=30)
    assert r.status_code == 404
    other.vms.delete(theirs["vm_id"])
    client.vms.delete(run["vm_id"])


def test_bad_manifests_and_runs_name_their_field(catalog):
    server, _ = catalog
    key = {"X-API-Key": server.key}
    base = server.base_url
    snap = requests.post(f"{base}/v1/snapshots?wait=true", headers=key,
                         json={"oci_image": "docker.io/library/ubuntu:24.04", "name": "plain"}, timeout=120).json()
    good = {"slug": "ok", "name": "Ok", "version": "1", "vm": {"memory_mb": 256, "vcpus": 1},
            "terminal": {"tmux_session": "main", "command": "sh"}, "runtime": [], "build": []}
    for edit, field in [
        ({"slug": "Not Ok"}, ["body", "manifest", "slug"]),
        ({"kind": "service"}, ["body", "manifest", "kind"]),
        ({"app": {"port": 80, "share": "world"}}, ["body", "manifest", "app", "share"]),
        ({"runtime": [{"kind": "command"}]}, ["body", "manifest", "runtime[0]", "command"]),
    ]:
        r = requests.post(f"{base}/v1/templates", headers=key,
                          json={"manifest": {**good, **edit}, "snapshot_id": snap["id"]}, timeout=30)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == field, (edit, r.text)
    r = requests.post(f"{base}/v1/templates", headers=key,
                      json={"manifest": {**good, "slug": "node-dev"}, "snapshot_id": snap["id"]}, timeout=30)
    assert r.status_code == 409
    r = requests.post(f"{base}/v1/templates", headers=key,
                      json={"manifest": good, "snapshot_id": "snap_nothere"}, timeout=30)
    assert r.status_code == 404
    r = requests.post(f"{base}/v1/snapshots", headers=key,
                      json={"oci_image": "docker.io/library/ubuntu:24.04", "build_args": {"post_build": "x"}}, timeout=30)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "build_args"], r.text
    # A template whose verification fails says why, and does not run.
    failing = {**good, "slug": "fails", "runtime": [{"kind": "command", "name": "boom", "command": "exit 7"}]}
    r = requests.post(f"{base}/v1/templates", headers=key,
                      json={"manifest": failing, "snapshot_id": snap["id"], "verify": True}, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "verifying"
    deadline = time.time() + 60
    while time.time() < deadline:
        t = requests.get(f"{base}/v1/templates/fails", headers=key, timeout=30).json()
        if t["status"] != "verifying":
            break
        time.sleep(0.2)
    assert t["status"] == "failed" and "boom exited with Some(7)" in t["config"]["verify_error"], t
    r = requests.post(f"{base}/v1/templates/fails/runs", headers=key, json={}, timeout=30)
    assert r.status_code == 409
    # Drafts stay the account's: the catalog without a key does not show it.
    assert "fails" not in [t["slug"] for t in requests.get(f"{base}/v1/templates", timeout=30).json()["templates"]]
    for body, field in [({"vm_lifetime": "2w"}, "vm_lifetime"), ({"name": "no spaces"}, "name")]:
        r = requests.post(f"{base}/v1/templates/ok-missing/runs", headers=key, json=body, timeout=30)
        assert r.status_code in (404, 422)
    requests.post(f"{base}/v1/templates", headers=key, json={"manifest": good, "snapshot_id": snap["id"], "verify": False}, timeout=30)
    for body, field in [({"vm_lifetime": "2w"}, "vm_lifetime"), ({"name": "no spaces"}, "name")]:
        r = requests.post(f"{base}/v1/templates/ok/runs", headers=key, json=body, timeout=30)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == field, r.text
    assert requests.delete(f"{base}/v1/templates/ok", headers=key, timeout=30).json()["slug"] == "ok"
    assert requests.get(f"{base}/v1/templates/ok", headers=key, timeout=30).status_code == 404


def test_built_in_templates_are_built_at_first_use(catalog):
    server, _ = catalog
    client = InstaVM(api_key=server.key, base_url=server.base_url, auto_start_session=False, timeout=600)
    py = client.templates.run("python-data-science")
    out = requests.post(f"{server.base_url}/v1/vms/{py['vm_id']}/exec", headers={"X-API-Key": server.key},
                        json={"command": "cd /root/work && python3 example.py"}, timeout=120).text
    assert '"exit_code":0' in out and "count" in out, out
    node = client.templates.run("node-dev")
    assert node["app"]["ready"] is True, node
    host = node["app"]["share_url"].split("/")[2]
    page = requests.get(f"http://127.0.0.1:{server.share_port}/",
                        headers={"Host": host, "X-Share-Token": node["app"]["token"]}, timeout=30)
    assert page.text.startswith("hello from node v"), page.text
    client.vms.delete(py["vm_id"])
    client.vms.delete(node["vm_id"])


def test_the_cli_lists_gets_runs_and_stops_devboxes(catalog, tmp_path):
    server, _ = catalog
    env = dict(os.environ, INSTAVM_API_KEY=server.key, INSTAVM_BASE_URL=server.base_url, HOME=str(tmp_path))

    def run(*args):
        done = subprocess.run([sys.executable, "-m", "instavm", *args], capture_output=True, text=True,
                              env=env, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    listed = json.loads(run("template", "list", "--json"))["templates"]
    assert "busy-web" in [t["slug"] for t in listed]
    assert json.loads(run("template", "get", "busy-web", "--json"))["version"] == "1.0.0"
    started = json.loads(run("template", "run", "busy-web", "--name", "cli-box", "--json"))
    assert started["devbox_name"] == "cli-box"
    boxes = json.loads(run("devbox", "ls", "--json"))["devboxes"]
    assert [b["vm_id"] for b in boxes if b["devbox_name"] == "cli-box"] == [started["vm_id"]]
    run("devbox", "stop", "cli-box")
    assert "cli-box" not in [b["devbox_name"] for b in json.loads(run("devbox", "ls", "--json"))["devboxes"]]

    # `instavm devbox start` (no slug: the `devbox` alias) runs a template
    # and attaches a terminal: the CLI runs in a terminal of its own here
    # (its pipe relay stops at stdin's end, racing the answer).
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "instavm", "devbox", "start", "--name", "pty-box", "--no-input",
         "--shell", "/bin/sh", "--vm-lifetime", "max"],
        stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
    )
    os.close(slave)
    seen = b""

    def read_until(token, seconds):
        nonlocal seen
        deadline = time.time() + seconds
        while token not in seen and time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
        return token in seen

    assert read_until(b"# ", 120), seen
    os.write(master, b"echo from-$((40+2))\r")
    assert read_until(b"from-42", 30), seen
    os.write(master, b"exit\r")
    proc.wait(timeout=60)
    os.close(master)
    boxes = json.loads(run("devbox", "ls", "--json"))["devboxes"]
    [box] = [b for b in boxes if b["devbox_name"] == "pty-box"]
    assert box["devbox_template_slug"] == "python-data-science"
    run("devbox", "stop", "pty-box")
