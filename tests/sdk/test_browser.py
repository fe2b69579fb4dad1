"""Browser sessions through InstaVM's own SDK and CLI, unchanged: a page
served from a sandbox through a share, browsed by headless Chromium in a
session's sandbox (a form filled and sent, the result read back, a
screenshot taken), and what a session may not do."""

import base64
import json
import os
import pathlib
import struct
import subprocess
import sys
import time

import pytest
import requests
from instavm import InstaVM
from instavm.exceptions import BrowserTimeoutError, ElementNotFoundError

from conftest import BIN, Server

APP = r'''
import http.server, urllib.parse
FORM = b"""<!doctype html><html><head><title>Sign up</title>
<style>body { background: #1e6bd6; color: white; font: 24px sans-serif }</style></head>
<body><h1 id="heading">Sign up</h1>
<form method="post" action="/submit"><input id="name" name="name" placeholder="Your name">
<button id="send" type="submit">Send</button></form>
<div style="height: 3000px"></div><p id="bottom">The end</p></body></html>"""
class App(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.reply(FORM)
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        name = urllib.parse.parse_qs(body).get("name", [""])[0]
        self.reply(f"<!doctype html><title>Thanks</title><p id=result>Hello, {name}!</p>".encode())
    def reply(self, page):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)
http.server.ThreadingHTTPServer(("0.0.0.0", 8000), App).serve_forever()
'''


@pytest.fixture(scope="module")
def client(server):
    return InstaVM(api_key=server.key, base_url=server.base_url, timeout=120)


@pytest.fixture(scope="module")
def site(client, server):
    """A sandbox serving a form on port 8000, and its public share."""
    vm = client.vms.create(wait=True)
    script = f"cat > /tmp/app.py <<'PY'\n{APP}\nPY\nsetsid python3 /tmp/app.py > /tmp/app.log 2>&1 < /dev/null &"
    r = requests.post(
        f"{server.base_url}/v1/vms/{vm['vm_id']}/exec",
        headers={"X-API-Key": server.key},
        json={"command": script},
        timeout=60,
    )
    assert r.ok, r.text
    share = client.shares.create(port=8000, vm_id=vm["vm_id"], is_public=True)
    host = share["url"].split("/")[2]
    deadline = time.time() + 20
    while time.time() < deadline:
        # The share proxy answers for the share's host on loopback.
        probe = requests.get(f"http://127.0.0.1:{server.share_port}/", headers={"Host": host}, timeout=5)
        if probe.status_code == 200:
            break
        time.sleep(0.2)
    yield {"vm": vm, "url": share["url"]}
    client.vms.delete(vm["vm_id"])


def _png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_a_form_served_through_a_share_is_filled_sent_and_read_back(client, site):
    with client.browser.create_session(viewport_width=1280, viewport_height=800) as s:
        went = s.navigate(site["url"])
        assert went["title"] == "Sign up" and went["status"] == 200
        assert went["url"] == site["url"]

        s.type("#name", "Ad", delay=5)
        s.fill("#name", "Ada Lovelace")
        [field] = client.browser_extract_elements(s.session_id, "#name", ["placeholder"])
        assert field["attributes"] == {"placeholder": "Your name"}
        s.click("#send")
        s.wait_for("visible", "#result")
        [result] = s.extract_elements("#result")
        assert result["text"] == "Hello, Ada Lovelace!"
        assert result["selector"] == "#result"


def test_screenshots_are_real_images_of_the_page(client, site):
    with client.browser.create_session(viewport_width=1024, viewport_height=700) as s:
        s.navigate(site["url"])
        viewport = base64.b64decode(s.screenshot(full_page=False))
        assert _png_size(viewport) == (1024, 700)
        full = base64.b64decode(s.screenshot(full_page=True))
        width, height = _png_size(full)
        assert width == 1024 and height > 3000
        # Not blank: the page's blue background and white text compress
        # to more than an empty image would.
        assert len(viewport) > 3000
        jpeg = base64.b64decode(s.screenshot(full_page=False, format="jpeg", quality=50))
        assert jpeg[:3] == b"\xff\xd8\xff"
        clipped = base64.b64decode(s.screenshot(clip={"x": 0, "y": 0, "width": 200, "height": 100}))
        assert _png_size(clipped) == (200, 100)


def test_scroll_wait_and_content_for_an_agent(client, site):
    with client.browser.create_session() as s:
        s.navigate(site["url"])
        moved = s.scroll(selector="#bottom")
        assert moved["scroll_y"] > 1000
        assert s.scroll(x=0, y=0)["scroll_y"] == 0
        assert s.wait_for("networkidle")["success"]
        assert s.wait_for("load")["success"]
        content = s.extract_content()
        assert content["readable_content"]["title"] == "Sign up"
        assert "Sign up" in content["readable_content"]["content"]
        assert "background" not in content["readable_content"]["content"]
        selectors = {e["selector"] for e in content["interactive_elements"]}
        assert {"#name", "#send"} <= selectors
        assert any(a["selector"] == "#heading" for a in content["content_anchors"])
        with pytest.raises(BrowserTimeoutError):
            s.wait_for("visible", "#never", timeout=300)


def test_missing_elements_bad_input_and_other_accounts(client, server, site):
    s = client.browser.create_session()
    with pytest.raises(ElementNotFoundError):
        s.click("#nothing-here", timeout=300)
    base = f"{server.base_url}/v1/browser"
    key = {"X-API-Key": server.key}

    def post(path, body, headers=key):
        return requests.post(f"{base}{path}", headers=headers, json=body, timeout=60)

    # Input errors name their field, in the VM API's 422 shape.
    for path, body, field in [
        ("/sessions/", {"viewport_width": 5}, "viewport_width"),
        ("/interactions/navigate", {"session_id": s.session_id, "url": "file:///etc/passwd"}, "url"),
        ("/interactions/click", {"session_id": s.session_id, "selector": "a[", "timeout": 500}, "selector"),
        ("/interactions/wait", {"session_id": s.session_id, "condition": "soon"}, "condition"),
        ("/interactions/screenshot", {"session_id": s.session_id, "format": "gif"}, "format"),
    ]:
        r = post(path, body)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["detail"][0]["loc"] == ["body", field], r.text
    # A page that cannot be loaded is the page's refusal, named.
    r = post("/interactions/navigate", {"session_id": s.session_id, "url": "http://no-such-host.invalid/", "wait_timeout": 10000})
    assert r.status_code in (400, 408), r.text
    # The sandbox sees its own loopback, never the host's (where the API
    # listens), nor another sandbox's address.
    r = post("/interactions/navigate", {"session_id": s.session_id, "url": f"{server.base_url}/v1/users/me", "wait_timeout": 5000})
    assert r.status_code in (400, 408), r.text
    r = post("/interactions/navigate", {"session_id": s.session_id, "url": f"http://{site['vm']['ip_address']}:8000/", "wait_timeout": 3000})
    assert r.status_code in (400, 408), r.text

    other = subprocess.run(
        [str(BIN), "keys", "create", "--data-dir", str(server.data), "--new-account", "browser-other"],
        check=True, capture_output=True, text=True, env=server.env,
    ).stdout.strip().split()[-1]
    theirs = {"X-API-Key": other}
    assert requests.get(f"{base}/sessions/{s.session_id}", headers=theirs, timeout=30).status_code == 404
    r = post("/interactions/navigate", {"session_id": s.session_id, "url": "about:blank"}, theirs)
    assert r.status_code == 404
    assert requests.get(f"{base}/sessions/", headers=theirs, timeout=30).json()["sessions"] == []
    assert s.session_id in [x["session_id"] for x in client.list_browser_sessions()]

    # The session is a VM of the account, and closing it ends that VM.
    info = client.get_browser_session(s.session_id)
    assert info["vm_id"] == s.session_id and info["viewport_width"] == 1920
    assert s.close() is True
    assert client.vms.get(s.session_id)["status"] in ("terminated", "deleted")
    assert requests.get(f"{base}/sessions/{s.session_id}", headers=key, timeout=30).status_code == 404


def test_the_cli_reads_and_screenshots_a_page(server, site, tmp_path):
    env = dict(os.environ, INSTAVM_API_KEY=server.key, INSTAVM_BASE_URL=server.base_url, HOME=str(tmp_path))
    cli = [sys.executable, "-m", "instavm"]

    def run(*args):
        done = subprocess.run([*cli, *args], capture_output=True, text=True, env=env, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    read = json.loads(run("browser", "read", site["url"], "--json"))
    assert read["readable_content"]["title"] == "Sign up"
    shot = tmp_path / "page.png"
    run("browser", "screenshot", site["url"], "--out", str(shot), "--no-full-page")
    assert _png_size(shot.read_bytes())[0] == 1920

    created = json.loads(run("browser", "session", "create", "--width", "800", "--height", "600", "--json"))
    sid = created["session_id"]
    run("browser", "navigate", site["url"], "--session", sid)
    run("browser", "fill", "#name", "Grace", "--session", sid)
    run("browser", "click", "#send", "--session", sid)
    run("browser", "wait", "visible", "--session", sid, "--selector", "#result")
    listed = json.loads(run("browser", "session", "ls", "--json"))
    assert sid in [x["session_id"] for x in listed["sessions"]]
    run("browser", "session", "close", sid)
    # The temporary sessions of `read` and `screenshot` were closed too.
    assert json.loads(run("browser", "session", "ls", "--json"))["sessions"] == []


def test_the_sessions_egress_policy_decides_what_it_reaches(client, server, site):
    s = client.browser.create_session(viewport_width=800, viewport_height=600)
    egress = f"{server.base_url}/v1/egress/vm/{s.session_id}"
    key = {"X-API-Key": server.key}
    navigate = f"{server.base_url}/v1/browser/interactions/navigate"
    try:
        r = requests.post(egress, headers=key, json={"default": "deny"}, timeout=30)
        assert r.status_code == 200, r.text
        r = requests.post(navigate, headers=key, json={"session_id": s.session_id, "url": site["url"]}, timeout=60)
        assert r.status_code == 400 and "ERR_ACCESS_DENIED" in r.json()["detail"], r.text
        r = requests.post(egress, headers=key, json={"default": "deny", "allowed_domains": [site["url"].split("/")[2].split(":")[0]]}, timeout=30)
        assert r.status_code == 200, r.text
        assert s.navigate(site["url"])["title"] == "Sign up"
    finally:
        s.close()


@pytest.fixture(scope="module")
def strict_server():
    s = Server(
        extra_env={"PADDOCK_NETWORK__BRIDGE": "psdk3", "PADDOCK_NETWORK__SUBNET": "10.63.3.0/24"},
        config="[browser]\nmax_sessions_per_account = 1\nidle_timeout_seconds = 2\n",
    )
    yield s
    s.stop()


def test_sessions_count_against_the_account_and_end_when_idle(strict_server):
    client = InstaVM(api_key=strict_server.key, base_url=strict_server.base_url, auto_start_session=False, timeout=120)
    first = client.browser.create_session(viewport_width=800, viewport_height=600)
    r = requests.post(f"{strict_server.base_url}/v1/browser/sessions/", headers={"X-API-Key": strict_server.key},
                      json={}, timeout=60)
    assert r.status_code == 429, r.text
    # Nobody uses it: it ends, and its sandbox with it.
    deadline = time.time() + 30
    while time.time() < deadline and client.list_browser_sessions():
        time.sleep(0.25)
    assert client.list_browser_sessions() == []
    while time.time() < deadline and client.vms.get(first.session_id)["status"] == "stopping":
        time.sleep(0.25)
    assert client.vms.get(first.session_id)["status"] in ("terminated", "deleted")
    second = client.browser.create_session(viewport_width=800, viewport_height=600)
    second.close()
