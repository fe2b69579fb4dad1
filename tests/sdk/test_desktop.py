"""Desktops through InstaVM's own SDK and CLI, unchanged: a computer-use
VM (Xvfb, openbox, x11vnc, noVNC), its viewer opened by a real headless
Chromium on this host (the noVNC canvas shows the desktop's background),
its control API (screenshot, mouse, keyboard) and a recording listed,
downloaded and deleted."""

import base64
import json
import os
import pathlib
import socket
import struct
import subprocess
import sys
import time

import pytest
import requests
from instavm import InstaVM

from chromium import Chromium
from conftest import BIN, ROOT

# The desktop paints its root window this color (`xsetroot`).
BACKGROUND = (0x2F, 0x6F, 0x8F)


@pytest.fixture(scope="module")
def client(server):
    return InstaVM(api_key=server.key, base_url=server.base_url, auto_start_session=False, timeout=300)


@pytest.fixture(scope="module")
def desktop(client):
    vm = client.vms.create(wait=True, image_variant="computer-use")
    assert vm["status"] == "active", vm
    yield vm
    client.vms.delete(vm["vm_id"])


def _png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_the_viewer_shows_the_desktop_in_a_real_browser(client, desktop):
    viewer = client.computer_use.viewer_url(desktop["session_id"])
    assert viewer["vm_id"] == desktop["vm_id"] and "paddock_login=" in viewer["viewer_url"]
    assert viewer["websocket_url"].startswith("ws://") and viewer["websocket_url"].endswith("/websockify")
    chrome = Chromium()
    try:
        chrome.call("Page.enable")
        chrome.call("Page.navigate", url=viewer["viewer_url"])
        probe = """(() => {
            const c = document.querySelector('#noVNC_container canvas') || document.querySelector('canvas');
            if (!c || !c.width || !c.height) return null;
            const d = c.getContext('2d').getImageData(Math.floor(c.width / 2), 5, 1, 1).data;
            return [c.width, c.height, d[0], d[1], d[2]];
        })()"""
        seen = None
        deadline = time.time() + 60
        while time.time() < deadline:
            seen = chrome.evaluate(probe)
            if seen and tuple(seen[2:]) == BACKGROUND:
                break
            time.sleep(0.25)
        assert seen and seen[:2] == [1280, 800] and tuple(seen[2:]) == BACKGROUND, seen
        shot = base64.b64decode(chrome.call("Page.captureScreenshot", format="png")["data"])
        width, height = _png_size(shot)
        assert width == 1280 and height > 600
        out = ROOT / "target" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        (out / "desktop-viewer.png").write_bytes(shot)
    finally:
        chrome.close()
    # The login URL is one-time: a second look gets a fresh one.
    again = client.computer_use.viewer_url(desktop["session_id"])
    assert again["viewer_url"] != viewer["viewer_url"] and again["share_id"] == viewer["share_id"]
    assert client.computer_use.vnc_websockify(desktop["session_id"])["websocket_url"] == viewer["websocket_url"]


def test_control_api_and_recordings(client, desktop, tmp_path):
    sid = desktop["session_id"]
    shot = client.computer_use.get(sid, "screenshot")
    assert (shot["width"], shot["height"]) == (1280, 800)
    assert _png_size(base64.b64decode(shot["screenshot"])) == (1280, 800)
    assert client.computer_use.get(sid, "display")["display"] == ":1"
    client.computer_use.post(sid, "mouse/move", json_data={"x": 200, "y": 150})
    at = client.computer_use.get(sid, "mouse")
    assert (at["x"], at["y"]) == (200, 150)
    assert client.computer_use.post(sid, "mouse/click", json_data={"button": "left"})["success"]
    assert client.computer_use.post(sid, "keyboard/type", json_data={"text": "hello"})["typed"] == 5
    assert client.computer_use.post(sid, "keyboard/key", json_data={"keys": "ctrl+l"})["success"]

    started = client.computer_use.post(sid, "recordings/start")
    assert started["status"] == "recording"
    time.sleep(1.5)
    client.computer_use.post(sid, "mouse/move", json_data={"x": 600, "y": 400})
    time.sleep(1)
    done = client.computer_use.post(sid, "recordings/stop")
    assert done["status"] == "ready" and done["size_bytes"] > 0, done
    rid = done["id"]
    assert rid in [r["id"] for r in client.recordings.list(session_id=sid)]
    assert client.recordings.get(rid)["duration_ms"] >= 2000
    url = client.recordings.get_download_url(rid)
    assert "signature=" in url
    saved = client.recordings.download(rid, str(tmp_path / "rec.mp4"))
    video = (tmp_path / "rec.mp4").read_bytes()
    assert saved["bytes"] == done["size_bytes"] == len(video) and video[4:8] == b"ftyp"
    # A tampered signature is not found, and needs no key to be refused.
    assert requests.get(url.replace("signature=", "signature=0"), timeout=30).status_code == 404
    client.recordings.delete(rid)
    assert requests.get(url, timeout=30).status_code == 404


def test_bad_requests_and_other_sessions(client, server, desktop):
    base = f"{server.base_url}/v1/computeruse/{desktop['session_id']}"
    key = {"X-API-Key": server.key}
    r = requests.post(f"{base}/mouse/move", headers=key, json={"x": -4, "y": 1}, timeout=30)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "x"], r.text
    r = requests.post(f"{base}/keyboard/key", headers=key, json={"keys": "$(reboot)"}, timeout=30)
    assert r.status_code == 422
    r = requests.get(f"{base}/no/such/thing", headers=key, timeout=30)
    assert r.status_code == 404 and "screenshot" in r.json()["detail"]
    r = requests.post(f"{base}/recordings/stop", headers=key, timeout=30)
    assert r.status_code == 409
    # A session whose VM is no desktop has none.
    plain = client.vms.create(wait=True)
    r = requests.get(f"{server.base_url}/v1/computeruse/{plain['session_id']}/viewer-url", headers=key, timeout=30)
    assert r.status_code == 404
    client.vms.delete(plain["vm_id"])
    r = requests.get(f"{base}/viewer-url", timeout=30)
    assert r.status_code == 401
    # Another account's desktop is not found, whatever the path.
    other = subprocess.run(
        [str(BIN), "keys", "create", "--data-dir", str(server.data), "--new-account", "desktop-other"],
        check=True, capture_output=True, text=True, env=server.env,
    ).stdout.strip().split()[-1]
    theirs = {"X-API-Key": other}
    for method, path in [("GET", "viewer-url"), ("GET", "screenshot"), ("POST", "recordings/start")]:
        assert requests.request(method, f"{base}/{path}", headers=theirs, timeout=30).status_code == 404
    assert requests.get(f"{server.base_url}/v1/recordings", headers=theirs, timeout=30).json() == []


def test_the_cli_shows_and_stops_a_desktop(server, client, tmp_path):
    vm = client.vms.create(wait=True, image_variant="computer-use")
    env = dict(os.environ, INSTAVM_API_KEY=server.key, INSTAVM_BASE_URL=server.base_url, HOME=str(tmp_path))

    def run(*args):
        done = subprocess.run([sys.executable, "-m", "instavm", *args], capture_output=True, text=True,
                              env=env, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    status = json.loads(run("desktop", "status", vm["vm_id"], "--json"))
    assert status["vm_alive"] is True and status["viewer_url"].startswith("http://")
    assert "vnc.html" in json.loads(run("desktop", "viewer", vm["vm_id"], "--json"))["viewer_url"]
    listed = json.loads(run("desktop", "recordings", "ls", "--session-id", vm["session_id"], "--json"))
    assert listed["recordings"] == []
    run("desktop", "stop", vm["vm_id"])
    deadline = time.time() + 30
    while client.vms.get(vm["vm_id"])["status"] == "active" and time.time() < deadline:
        time.sleep(0.2)
    assert client.vms.get(vm["vm_id"])["status"] != "active"
    # `desktop start` brings the session's desktop back, as a new VM.
    started = json.loads(run("desktop", "start", vm["session_id"], "--json"))
    assert started["vm_id"] != vm["vm_id"] and started["session_id"] == vm["session_id"]
    assert started["viewer_url"].startswith("http://")
    client.vms.delete(started["vm_id"])
