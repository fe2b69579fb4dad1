"""The web dashboard at /ui/, in a real headless Chromium on this host:
sign in with an API key (a wrong one is refused), create a VM through the
form and see it listed live, never another account's VM, delete it, sign
out. Screenshots go to target/screenshots/ for a person to look at."""

import base64
import json
import subprocess
import time

import requests

from chromium import Chromium
from conftest import BIN, ROOT

SHOTS = ROOT / "target" / "screenshots"


def wait_for(chrome, expression, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = chrome.evaluate(expression)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"never true: {expression}\n{chrome.evaluate('document.body.innerText')}")


def screenshot(chrome, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    data = chrome.call("Page.captureScreenshot", format="png")["data"]
    (SHOTS / name).write_bytes(base64.b64decode(data))


def sign_in(chrome, key):
    chrome.evaluate(
        f"document.getElementById('key').value = {json.dumps(key)};"
        "document.querySelector('#sign-in button').click(); true"
    )


def api(server, key, method, path, **kw):
    return requests.request(method, f"{server.base_url}{path}", headers={"X-API-Key": key}, timeout=120, **kw)


def test_the_pages_are_served_with_a_strict_policy(server):
    page = requests.get(f"{server.base_url}/ui/", timeout=10)
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert requests.get(f"{server.base_url}/ui", timeout=10, allow_redirects=False).status_code == 308
    script = requests.get(f"{server.base_url}/ui/app.js", timeout=10)
    assert script.headers["content-type"].startswith("text/javascript")


def test_sign_in_create_list_delete_and_sign_out(server):
    other = subprocess.run(
        [str(BIN), "keys", "create", "--data-dir", str(server.data), "--new-account", "dashboard-other"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    theirs = api(server, other, "POST", "/v1/vms?wait=true", json={"memory_mb": 128}).json()["vm_id"]
    chrome = Chromium()
    try:
        chrome.call("Page.enable")
        chrome.call("Page.navigate", url=f"{server.base_url}/ui/")
        wait_for(chrome, "document.readyState === 'complete' && !!document.getElementById('sign-in')")
        screenshot(chrome, "dashboard-sign-in.png")

        # A wrong key is refused and shows nothing.
        sign_in(chrome, "pk_not_a_key")
        wait_for(chrome, "document.getElementById('sign-in-error').textContent.includes('refused')")
        assert chrome.evaluate("document.getElementById('vms-view').hidden") is True

        # The page's own script runs under its policy: signing in works,
        # and the key is kept in the tab's session storage only.
        sign_in(chrome, server.key)
        wait_for(chrome, "!document.getElementById('vms-view').hidden")
        assert chrome.evaluate("sessionStorage.getItem('paddock.key')") == server.key
        assert chrome.evaluate("document.cookie") == ""
        assert server.key not in chrome.evaluate("location.href")

        # Create through the form; the list shows it running, without a
        # reload, and never the other account's VM.
        chrome.evaluate(
            "document.getElementById('memory').value = '256';"
            "document.querySelector('#create button').click(); true"
        )
        vm = wait_for(
            chrome,
            """(() => {
                const row = [...document.querySelectorAll('#vms tr')]
                    .find(r => r.children[1].textContent === 'active');
                return row && row.dataset.vm;
            })()""",
            timeout=90,
        )
        assert api(server, server.key, "GET", f"/v1/vms/{vm}").json()["memory_mb"] == 256
        assert chrome.evaluate(f"!!document.querySelector('tr[data-vm=\"{theirs}\"]')") is False
        screenshot(chrome, "dashboard-vms.png")
        # A command run in it from the page streams its output back.
        chrome.evaluate(f"document.querySelector('tr[data-vm=\"{vm}\"] button[data-action=exec]').click(); true")
        wait_for(chrome, "!document.getElementById('vm-panel').hidden")
        chrome.evaluate(
            "document.getElementById('command').value = 'echo hello; echo oops >&2';"
            "document.querySelector('#exec-form button[type=submit]').click(); true"
        )
        shown = wait_for(
            chrome,
            "(() => { const t = document.getElementById('exec-output').textContent;"
            " return t.includes('[exit 0]') && t; })()",
        )
        assert "hello\n" in shown and "oops\n" in shown, shown
        assert chrome.evaluate("document.querySelector('#exec-output .stderr').textContent") == "oops\n"
        screenshot(chrome, "dashboard-exec.png")
        # A VM made elsewhere shows up by itself.
        made = api(server, server.key, "POST", "/v1/vms?wait=true", json={"memory_mb": 128}).json()["vm_id"]
        wait_for(chrome, f"!!document.querySelector('tr[data-vm=\"{made}\"]')")
        # A narrow window still lists and deletes.
        chrome.call("Emulation.setDeviceMetricsOverride", width=420, height=800, deviceScaleFactor=1, mobile=False)
        screenshot(chrome, "dashboard-vms-narrow.png")
        chrome.call("Emulation.clearDeviceMetricsOverride")

        for gone in (vm, made):
            chrome.evaluate(f"document.querySelector('tr[data-vm=\"{gone}\"] button[data-action=delete]').click(); true")
            wait_for(chrome, f"!document.querySelector('tr[data-vm=\"{gone}\"]')")
            assert api(server, server.key, "GET", f"/v1/vms/{gone}").json()["status"] == "terminated"

        # Signing out forgets the key.
        chrome.evaluate("document.getElementById('sign-out').click(); true")
        wait_for(chrome, "!document.getElementById('sign-in-view').hidden")
        assert chrome.evaluate("sessionStorage.getItem('paddock.key')") is None
        assert chrome.evaluate("document.querySelectorAll('#vms tr').length") == 0
    finally:
        chrome.close()
        api(server, other, "DELETE", f"/v1/vms/{theirs}")
