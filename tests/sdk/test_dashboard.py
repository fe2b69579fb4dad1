"""The web dashboard at /ui/, in a real headless Chromium on this host:
sign in with an API key (a wrong one is refused), create a VM through the
form and see it listed live, type in its terminal, move files, run a
command, share a port, set its egress, watch its graphs, snapshot it and
start a VM from the snapshot, delete, sign out; the other pages
(volumes, vaults, keys, images, gateway environments and batch jobs,
definitions) each do their job; never another account's VM. Screenshots
go to target/screenshots/ for a person to look at."""

import base64
import json
import pathlib
import subprocess
import tempfile
import time

import pytest
import requests

from chromium import Chromium
from conftest import BIN, ROOT, Server
from registry import server_with_registry

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


def click(chrome, selector):
    found = chrome.evaluate(
        f"(() => {{ const b = document.querySelector({json.dumps(selector)}); if (b) b.click(); return !!b; }})()"
    )
    assert found, f"nothing matches {selector}\n{chrome.evaluate('document.body.innerText')}"


def fill(chrome, values):
    for element_id, value in values.items():
        chrome.evaluate(f"document.getElementById({json.dumps(element_id)}).value = {json.dumps(value)}; true")


def go(chrome, route):
    chrome.evaluate(f"location.hash = {json.dumps(route)}; true")


def api(server, key, method, path, **kw):
    return requests.request(method, f"{server.base_url}{path}", headers={"X-API-Key": key}, timeout=120, **kw)


def new_account(server, name):
    return subprocess.run(
        [str(BIN), "keys", "create", "--data-dir", str(server.data), "--new-account", name],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


def open_dashboard(server, key=None):
    chrome = Chromium()
    chrome.call("Page.enable")
    chrome.call("Page.navigate", url=f"{server.base_url}/ui/")
    wait_for(chrome, "document.readyState === 'complete' && !!document.getElementById('sign-in')")
    if key:
        sign_in(chrome, key)
        wait_for(chrome, "!document.getElementById('view').hidden")
    return chrome


def enter(chrome):
    chrome.call("Input.dispatchKeyEvent", type="keyDown", key="Enter", code="Enter", windowsVirtualKeyCode=13, text="\r")
    chrome.call("Input.dispatchKeyEvent", type="keyUp", key="Enter", code="Enter", windowsVirtualKeyCode=13)


def type_line(chrome, text):
    chrome.evaluate("document.querySelector('#terminal .xterm-helper-textarea').focus(); true")
    chrome.call("Input.insertText", text=text)
    enter(chrome)


def see_line(chrome, line, timeout=20):
    deadline = time.time() + timeout
    while line not in terminal_lines(chrome):
        assert time.time() < deadline, terminal_lines(chrome)
        time.sleep(0.1)


def terminal_lines(chrome):
    return chrome.evaluate(
        "[...document.querySelectorAll('#terminal .xterm-rows > div')].map(r => r.textContent.trimEnd())"
    )


def test_the_pages_are_served_with_a_strict_policy(server):
    page = requests.get(f"{server.base_url}/ui/", timeout=10)
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert requests.get(f"{server.base_url}/ui", timeout=10, allow_redirects=False).status_code == 308
    for script in ("app.js", "vm.js", "terminal.js", "vendor/xterm.js", "vendor/addon-fit.js"):
        answer = requests.get(f"{server.base_url}/ui/{script}", timeout=10)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/javascript"), script
    # The terminal is built in, not a stand-in.
    assert "paddockTerminalMissing" not in requests.get(f"{server.base_url}/ui/vendor/xterm.js", timeout=10).text
    assert requests.get(f"{server.base_url}/ui/../../etc/passwd", timeout=10).status_code == 404
    assert requests.get(f"{server.base_url}/ui/nope.js", timeout=10).status_code == 404


def test_a_vm_from_sign_in_to_sign_out(server):
    other = new_account(server, "dashboard-other")
    theirs = api(server, other, "POST", "/v1/vms?wait=true", json={"memory_mb": 128}).json()["vm_id"]
    chrome = open_dashboard(server)
    made = []
    try:
        screenshot(chrome, "dashboard-sign-in.png")
        # A wrong key is refused and shows nothing.
        sign_in(chrome, "pk_not_a_key")
        wait_for(chrome, "document.getElementById('sign-in-error').textContent.includes('refused')")
        assert chrome.evaluate("document.getElementById('view').hidden") is True

        # The page's own script runs under its policy: signing in works,
        # and the key is kept in the tab's session storage only.
        sign_in(chrome, server.key)
        wait_for(chrome, "!document.getElementById('view').hidden")
        assert chrome.evaluate("sessionStorage.getItem('paddock.key')") == server.key
        assert chrome.evaluate("document.cookie") == ""

        # Create through the form, with env; the list shows it running,
        # without a reload, and never the other account's VM.
        fill(chrome, {"memory": "256", "env": "GREETING=from-the-form"})
        click(chrome, "#create button[type=submit]")
        vm = wait_for(chrome, """(() => {
            const row = [...document.querySelectorAll('#vms tr')].find(r => r.children[1].textContent === 'active');
            return row && row.dataset.vm; })()""", timeout=90)
        made.append(vm)
        assert api(server, server.key, "GET", f"/v1/vms/{vm}").json()["memory_mb"] == 256
        assert chrome.evaluate(f"!!document.querySelector('tr[data-vm=\"{theirs}\"]')") is False
        # A VM made elsewhere shows up by itself.
        elsewhere = api(server, server.key, "POST", "/v1/vms?wait=true", json={"memory_mb": 128}).json()["vm_id"]
        made.append(elsewhere)
        wait_for(chrome, f"!!document.querySelector('tr[data-vm=\"{elsewhere}\"]')")
        screenshot(chrome, "dashboard-vms.png")
        # Another account's VM page is the API's 404, nothing of it shown.
        go(chrome, f"#/vms/{theirs}")
        wait_for(chrome, "document.getElementById('vm-error').textContent.startsWith('404')")

        # The VM's page opens on its terminal: typing runs in the VM.
        go(chrome, f"#/vms/{vm}")
        wait_for(chrome, "document.getElementById('terminal')?.dataset.connected === 'true'")
        wait_for(chrome, "[...document.querySelectorAll('#terminal .xterm-rows > div')].some(r => r.textContent.includes('#'))")
        type_line(chrome, "echo hello $GREETING")
        see_line(chrome, "hello from-the-form")
        # The theme's colours apply although the page allows no inline
        # styles (xterm's <style> elements are mirrored into adopted sheets).
        assert chrome.evaluate("getComputedStyle(document.querySelector('#terminal .xterm-rows')).color") == "rgb(255, 255, 255)"
        # The key went in the WebSocket's subprotocol, never a URL.
        assert server.key not in chrome.evaluate("location.href")
        assert server.key not in (server.dir / "server.log").read_text(errors="replace")
        screenshot(chrome, "dashboard-terminal.png")
        # The shell's size follows the pane's.
        type_line(chrome, "stty size")
        wide = wait_for(chrome, "(() => { const m = [...document.querySelectorAll('#terminal .xterm-rows > div')]"
                                ".map(r => r.textContent.trim().match(/^(\\d+) (\\d+)$/)).filter(Boolean).pop();"
                                " return m && Number(m[2]); })()")
        chrome.call("Emulation.setDeviceMetricsOverride", width=640, height=800, deviceScaleFactor=1, mobile=False)
        time.sleep(0.5)
        type_line(chrome, "clear; stty size")
        narrow = wait_for(chrome, "(() => { const m = [...document.querySelectorAll('#terminal .xterm-rows > div')]"
                                  ".map(r => r.textContent.trim().match(/^(\\d+) (\\d+)$/)).filter(Boolean).pop();"
                                  f" return m && Number(m[2]) < {wide} && Number(m[2]); }})()")
        assert narrow < wide
        chrome.call("Emulation.clearDeviceMetricsOverride")
        # Leaving the terminal and coming back reattaches to the same shell.
        pty = chrome.evaluate("document.getElementById('terminal').dataset.pty")
        type_line(chrome, "export MARK=kept")
        time.sleep(0.5)

        # Files: upload with progress, listed, downloaded, deleted.
        click(chrome, "button[data-tab=files]")
        wait_for(chrome, "!!document.getElementById('upload-input') && document.getElementById('files-path').value === '/root'")
        payload = tempfile.NamedTemporaryFile(prefix="dash", suffix=".txt", delete=False)
        payload.write(b"uploaded through the dashboard\n" * 4096)
        payload.close()
        name = pathlib.Path(payload.name).name
        document = chrome.call("DOM.getDocument")["root"]["nodeId"]
        node = chrome.call("DOM.querySelector", nodeId=document, selector="#upload-input")["nodeId"]
        chrome.call("DOM.setFileInputFiles", nodeId=node, files=[payload.name])
        wait_for(chrome, f"!!document.querySelector('#files tr[data-name=\"{name}\"]')")
        assert chrome.evaluate("document.getElementById('upload-progress').value") == 1 or \
            chrome.evaluate("document.getElementById('upload-progress').hidden")
        got = api(server, server.key, "GET", f"/v1/vms/{vm}/files", params={"path": f"/root/{name}"})
        assert got.content == pathlib.Path(payload.name).read_bytes()
        screenshot(chrome, "dashboard-files.png")
        downloads = pathlib.Path(tempfile.mkdtemp(prefix="dashdl"))
        chrome.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        click(chrome, f"#files tr[data-name=\"{name}\"] button[data-action=download]")
        deadline = time.time() + 20
        while not (downloads / name).exists() or (downloads / name).read_bytes() != got.content:
            assert time.time() < deadline, list(downloads.iterdir())
            time.sleep(0.1)
        api(server, server.key, "PUT", f"/v1/vms/{vm}/files", params={"path": "/root/gone.txt"}, data=b"x")
        chrome.evaluate("document.getElementById('files-path').closest('form').requestSubmit(); true")
        wait_for(chrome, "!!document.querySelector('#files tr[data-name=\"gone.txt\"]')")
        click(chrome, "#files tr[data-name=\"gone.txt\"] button[data-action=delete]")
        wait_for(chrome, "!document.querySelector('#files tr[data-name=\"gone.txt\"]')")
        assert api(server, server.key, "GET", f"/v1/vms/{vm}/files", params={"path": "/root/gone.txt"}).status_code == 404

        click(chrome, "button[data-tab=terminal]")
        wait_for(chrome, "document.getElementById('terminal')?.dataset.connected === 'true'")
        assert chrome.evaluate("document.getElementById('terminal').dataset.pty") == pty
        type_line(chrome, "echo mark=$MARK")
        see_line(chrome, "mark=kept")

        # Run: a command's output streamed back, stderr apart.
        click(chrome, "button[data-tab=run]")
        fill(chrome, {"command": "echo hello; echo oops >&2"})
        click(chrome, "#exec-form button[type=submit]")
        shown = wait_for(chrome, "(() => { const t = document.getElementById('exec-output').textContent;"
                                 " return t.includes('[exit 0]') && t; })()")
        assert "hello\n" in shown and "oops\n" in shown, shown
        assert chrome.evaluate("document.querySelector('#exec-output .stderr').textContent") == "oops\n"

        # Shares: made, made public, revoked.
        click(chrome, "button[data-tab=shares]")
        fill(chrome, {"share-port": "8080"})
        chrome.evaluate("document.getElementById('share-port').closest('form').requestSubmit(); true")
        share = wait_for(chrome, "document.querySelector('tr[data-share]')?.dataset.share")
        click(chrome, f"tr[data-share=\"{share}\"] button[data-action=toggle]")
        wait_for(chrome, f"document.querySelector('tr[data-share=\"{share}\"]')?.children[2].textContent === 'yes'")
        assert api(server, server.key, "GET", f"/v1/shares/{share}").json()["is_public"] is True
        click(chrome, f"tr[data-share=\"{share}\"] button[data-action=revoke]")
        wait_for(chrome, f"!document.querySelector('tr[data-share=\"{share}\"]')")

        # Egress: the policy read, changed, saved.
        click(chrome, "button[data-tab=egress]")
        wait_for(chrome, "!!document.getElementById('egress-form')")
        time.sleep(0.5)
        chrome.evaluate("document.querySelector('#egress-form input[placeholder^=\"example.com\"]').value = 'example.com';"
                        "document.getElementById('egress-default').value = 'deny'; true")
        chrome.evaluate("document.getElementById('egress-form').requestSubmit(); true")
        wait_for(chrome, "document.querySelector('#tab-pane .error')?.textContent === 'Saved.'")
        policy = api(server, server.key, "GET", f"/v1/egress/vm/{vm}").json()
        assert policy["allowed_domains"] == ["example.com"] and policy["default"] == "deny", policy

        # Metrics: CPU and memory graphs from the cgroup's counters.
        click(chrome, "button[data-tab=metrics]")
        wait_for(chrome, "Number(document.getElementById('cpu-graph')?.dataset.samples) >= 2", timeout=20)
        assert int(chrome.evaluate("document.getElementById('memory-graph').dataset.latest")) > 0
        screenshot(chrome, "dashboard-metrics.png")

        # A container cannot be suspended: the API's 409, as it said it.
        click(chrome, "button[data-action=suspend]")
        wait_for(chrome, "document.getElementById('vm-error').textContent.startsWith('409')")

        # Snapshot from the VM's page, then a VM started from it has the
        # uploaded file.
        click(chrome, "button[data-action=snapshot]")
        snapshot = wait_for(chrome, "document.querySelector('tr[data-snapshot] .status-ready') &&"
                                    " document.querySelector('tr[data-snapshot]').dataset.snapshot", timeout=120)
        screenshot(chrome, "dashboard-snapshots.png")
        click(chrome, f"tr[data-snapshot=\"{snapshot}\"] button[data-action=start]")
        restored = wait_for(chrome, f"location.hash.startsWith('#/vms/') && !location.hash.endsWith('{vm}') && "
                                    "decodeURIComponent(location.hash.slice(6))", timeout=90)
        made.append(restored)
        assert api(server, server.key, "GET", f"/v1/vms/{restored}").json()["snapshot_id"] == snapshot
        back = api(server, server.key, "GET", f"/v1/vms/{restored}/files", params={"path": f"/root/{name}"})
        assert back.content == pathlib.Path(payload.name).read_bytes()

        # Clone from the page: a new VM, opened.
        click(chrome, "button[data-action=clone]")
        clone = wait_for(chrome, f"location.hash.startsWith('#/vms/') && !location.hash.endsWith('{restored}') && "
                                 "decodeURIComponent(location.hash.slice(6))", timeout=90)
        made.append(clone)
        assert api(server, server.key, "GET", f"/v1/vms/{clone}").json()["status"] == "active"

        # A narrow window still lists and deletes.
        go(chrome, "#/vms")
        wait_for(chrome, f"!!document.querySelector('tr[data-vm=\"{vm}\"]')")
        chrome.call("Emulation.setDeviceMetricsOverride", width=420, height=800, deviceScaleFactor=1, mobile=False)
        screenshot(chrome, "dashboard-vms-narrow.png")
        chrome.call("Emulation.clearDeviceMetricsOverride")
        for gone in made:
            click(chrome, f"tr[data-vm=\"{gone}\"] button[data-action=delete]")
            wait_for(chrome, f"!document.querySelector('tr[data-vm=\"{gone}\"]')")
            assert api(server, server.key, "GET", f"/v1/vms/{gone}").json()["status"] == "terminated"

        # Signing out forgets the key.
        click(chrome, "#sign-out")
        wait_for(chrome, "!document.getElementById('sign-in-view').hidden")
        assert chrome.evaluate("sessionStorage.getItem('paddock.key')") is None
        assert chrome.evaluate("document.querySelectorAll('#vms tr').length") == 0
    finally:
        chrome.close()
        for vm in made:
            api(server, server.key, "DELETE", f"/v1/vms/{vm}")
        api(server, other, "DELETE", f"/v1/vms/{theirs}")


@pytest.fixture(scope="module")
def registry_server():
    with server_with_registry("sdk/dash:v1", bridge="psdk4", subnet="10.63.4.0/24") as pair:
        yield pair


def rows(chrome, selector):
    return chrome.evaluate(f"[...document.querySelectorAll({json.dumps(selector)})].map(r => r.textContent)")


def test_images_suspend_and_the_accounts_other_pages(registry_server):
    server, image = registry_server
    chrome = open_dashboard(server, server.key)
    vms = []
    try:
        # Images: a pull with its progress, then listed.
        go(chrome, "#/images")
        fill(chrome, {"pull-reference": image})
        chrome.evaluate("document.getElementById('pull-reference').closest('form').requestSubmit(); true")
        wait_for(chrome, "document.getElementById('pull-progress').dataset.status === 'done'", timeout=60)
        wait_for(chrome, f"document.querySelector('main').textContent.includes({json.dumps(image)})")
        screenshot(chrome, "dashboard-images.png")

        # A microVM from it, made through the form, suspended and resumed
        # from its page.
        go(chrome, "#/vms")
        wait_for(chrome, "!!document.getElementById('create')")
        fill(chrome, {"memory": "256", "image": image, "provider": "microvm"})
        click(chrome, "#create button[type=submit]")
        vm = wait_for(chrome, """(() => {
            const row = [...document.querySelectorAll('#vms tr')].find(r => r.children[1].textContent === 'active');
            return row && row.dataset.vm; })()""", timeout=240)
        vms.append(vm)
        assert api(server, server.key, "GET", f"/v1/vms/{vm}").json()["provider"] == "microvm"
        go(chrome, f"#/vms/{vm}")
        wait_for(chrome, "!!document.querySelector('button[data-action=suspend]')")
        click(chrome, "button[data-action=suspend]")
        wait_for(chrome, "!!document.querySelector('button[data-action=resume]')", timeout=120)
        assert api(server, server.key, "GET", f"/v1/vms/{vm}").json()["status"] == "suspended"
        click(chrome, "button[data-action=resume]")
        wait_for(chrome, "!!document.querySelector('button[data-action=suspend]')", timeout=120)
        assert api(server, server.key, "GET", f"/v1/vms/{vm}").json()["status"] == "active"

        # Volumes and their checkpoints.
        go(chrome, "#/volumes")
        fill(chrome, {"volume-name": "dash-vol", "volume-quota": "1"})
        chrome.evaluate("document.getElementById('volume-name').closest('form').requestSubmit(); true")
        wait_for(chrome, "document.querySelector('main').textContent.includes('dash-vol')")
        volume = next(v for v in api(server, server.key, "GET", "/v1/volumes").json() if v["name"] == "dash-vol")
        assert volume["quota_bytes"] == 1 << 30
        click(chrome, ".listing tbody tr button.secondary")
        wait_for(chrome, "!!document.querySelector('.checkpoints form')")
        chrome.evaluate("document.querySelector('.checkpoints input').value = 'first';"
                        "document.querySelector('.checkpoints form').requestSubmit(); true")
        wait_for(chrome, "document.querySelector('.checkpoints').textContent.includes('first')", timeout=60)
        checkpoints = api(server, server.key, "GET", f"/v1/volumes/{volume['volume_id']}/checkpoints").json()
        assert [c["name"] for c in checkpoints] == ["first"]
        screenshot(chrome, "dashboard-volumes.png")

        # Vaults: names and credential names; a value goes in, never out.
        go(chrome, "#/vaults")
        fill(chrome, {"vault-name": "dash-vault"})
        chrome.evaluate("document.getElementById('vault-name').closest('form').requestSubmit(); true")
        wait_for(chrome, "!!document.querySelector('.card[data-vault]')")
        chrome.evaluate("const f = document.querySelector('.card[data-vault] form');"
                        "f.querySelector('input').value = 'GITHUB_TOKEN';"
                        "f.querySelector('input[type=password]').value = 'ghp-very-secret-value';"
                        "f.requestSubmit(); true")
        wait_for(chrome, "document.querySelector('.card[data-vault] .credential')?.textContent === 'GITHUB_TOKEN'")
        assert "ghp-very-secret-value" not in chrome.evaluate("document.documentElement.outerHTML")
        assert chrome.evaluate("document.querySelector('.card[data-vault] input[type=password]').value") == ""
        screenshot(chrome, "dashboard-vaults.png")

        # A VM made through the form with that volume and that vault, by
        # name; its page shows the mount.
        vault = next(v for v in api(server, server.key, "GET", "/v1/vaults").json()["vaults"] if v["name"] == "dash-vault")
        go(chrome, "#/vms")
        wait_for(chrome, f"!!document.querySelector('#vaults option[value=\"{vault['vault_id']}\"]')")
        fill(chrome, {"memory": "256", "image": "", "provider": "", "volumes": f"{volume['volume_id']}:/data"})
        chrome.evaluate(f"document.querySelector('#vaults option[value=\"{vault['vault_id']}\"]').selected = true; true")
        click(chrome, "#create button[type=submit]")
        wait_for(chrome, "document.getElementById('vms-error').textContent === ''"
                         " && document.querySelectorAll('#vms tr').length === 2", timeout=90)
        with_both = next(v for v in api(server, server.key, "GET", "/v1/vms").json() if v["vm_id"] != vm)
        vms.append(with_both["vm_id"])
        assert with_both["vault_ids"] == [vault["vault_id"]], with_both
        out = api(server, server.key, "POST", f"/v1/vms/{with_both['vm_id']}/exec",
                  json={"command": "printenv GITHUB_TOKEN; mount | grep -c ' /data '"}).text
        assert "ghp-very-secret-value" in out and "1" in out, out
        go(chrome, f"#/vms/{with_both['vm_id']}")
        wait_for(chrome, "!!document.querySelector('button[data-tab=volumes]')")
        click(chrome, "button[data-tab=volumes]")
        wait_for(chrome, f"document.getElementById('tab-pane').textContent.includes('{volume['volume_id']}')")
        chrome.call("Emulation.setDeviceMetricsOverride", width=420, height=800, deviceScaleFactor=1, mobile=False)
        screenshot(chrome, "dashboard-vm-narrow.png")
        chrome.call("Emulation.clearDeviceMetricsOverride")

        # API keys: a new key is shown once and works; revoked, it does not.
        go(chrome, "#/keys")
        fill(chrome, {"key-name": "dash-key"})
        chrome.evaluate("document.getElementById('key-name').closest('form').requestSubmit(); true")
        new_key = wait_for(chrome, "document.querySelector('#new-key code')?.textContent")
        assert api(server, new_key, "GET", "/v1/users/me").status_code == 200
        wait_for(chrome, "document.querySelector('main').textContent.includes('dash-key')")
        screenshot(chrome, "dashboard-keys.png")
        chrome.evaluate("[...document.querySelectorAll('.listing tr')].find(r => r.textContent.includes('dash-key'))"
                        ".querySelector('button').click(); true")
        wait_for(chrome, "!document.querySelector('.listing').textContent.includes('dash-key')")
        assert api(server, new_key, "GET", "/v1/users/me").status_code == 401

        # Gateway environments: create, connect with progress, disconnect.
        go(chrome, "#/environments")
        fill(chrome, {"env-id": "dashenv", "env-image": image})
        chrome.evaluate("document.getElementById('env-id').closest('form').requestSubmit(); true")
        wait_for(chrome, "document.querySelector('tr[data-environment=dashenv]')?.dataset.state === 'DISCONNECTED'", timeout=120)
        wait_for(chrome, "!!document.querySelector('tr[data-environment=dashenv] select.pool option[value=host-cpu]')")
        chrome.evaluate("document.querySelector('tr[data-environment=dashenv] select.pool').value = 'host-cpu'; true")
        click(chrome, "tr[data-environment=dashenv] button[data-action=connect]")
        wait_for(chrome, "document.querySelector('tr[data-environment=dashenv]')?.dataset.state === 'CONNECTED'", timeout=120)
        env_vm = chrome.evaluate("document.querySelector('tr[data-environment=dashenv] td.id a').textContent")
        assert api(server, server.key, "GET", f"/v1/vms/{env_vm}").json()["status"] == "active"
        screenshot(chrome, "dashboard-environments.png")
        click(chrome, "tr[data-environment=dashenv] button[data-action=disconnect]")
        wait_for(chrome, "document.querySelector('tr[data-environment=dashenv]')?.dataset.state === 'DISCONNECTED'", timeout=120)

        # Batch jobs: submitted, run, logs read.
        go(chrome, "#/jobs")
        wait_for(chrome, "!!document.querySelector('#job-pool option[value=host-cpu]')")
        fill(chrome, {"job-id": "dashjob", "job-pool": "host-cpu", "job-image": image, "job-command": "echo job-says-hi; echo job-oops >&2"})
        chrome.evaluate("document.getElementById('job-id').closest('form').requestSubmit(); true")
        wait_for(chrome, "document.querySelector('tr[data-job=dashjob]')?.dataset.state === 'COMPLETED'", timeout=120)
        click(chrome, "tr[data-job=dashjob] button[data-action=logs]")
        wait_for(chrome, "document.getElementById('job-logs').textContent.includes('job-says-hi')")
        assert chrome.evaluate("document.querySelector('#job-logs .stderr').textContent").startswith("job-oops")
        screenshot(chrome, "dashboard-jobs.png")

        # Definitions: create, edit with the revision, launch; a stale
        # edit is refused with the API's own words.
        # More than one page of them (100): every one is listed.
        spec = {"provider": "container", "image": {"docker": None, "dockerfile": None},
                "resources": {"cpu": 1, "memory": "256Mi", "disk": None},
                "network": {"mode": "block", "allow": []},
                "lifecycle": {"preserve": False, "stop_on_terminal": False, "auto_stop": None},
                "labels": {}, "volumes": [], "env": {}}
        for i in range(101):
            made = api(server, server.key, "POST", "/api/v1/environments", json={**spec, "id": f"bulk-{i:03}"})
            assert made.status_code == 201, made.text
        go(chrome, "#/definitions")
        wait_for(chrome, "document.querySelectorAll('tr[data-definition]').length === 101")
        fill(chrome, {"definition-id": "dash-def"})
        chrome.evaluate("document.getElementById('definition-id').closest('form').requestSubmit(); true")
        wait_for(chrome, "!!document.getElementById('definition-json')")
        first = api(server, server.key, "GET", "/api/v1/environments/dash-def").json()["revision"]
        chrome.evaluate("const t = document.getElementById('definition-json'); const v = JSON.parse(t.value);"
                        "v.env = {GREETING: 'edited'}; t.value = JSON.stringify(v); t.closest('form').requestSubmit(); true")
        wait_for(chrome, "!!document.querySelector('#definition h3') && "
                         f"!document.querySelector('#definition h3').textContent.includes({json.dumps(first[:12])})")
        edited = api(server, server.key, "GET", "/api/v1/environments/dash-def").json()
        assert edited["env"] == {"GREETING": "edited"} and edited["revision"] != first
        # Someone else changes it; saving the page's copy is refused.
        theirs = {k: v for k, v in edited.items() if k not in ("id", "revision")}
        theirs["env"] = {"GREETING": "theirs"}
        changed = requests.put(f"{server.base_url}/api/v1/environments/dash-def", json=theirs, timeout=30,
                               headers={"X-API-Key": server.key, "If-Match": f"\"{edited['revision']}\""})
        assert changed.status_code == 200, changed.text
        chrome.evaluate("document.getElementById('definition-json').closest('form').requestSubmit(); true")
        wait_for(chrome, "/^4\\d\\d: /.test(document.querySelector('#view p.error')?.textContent || '')")
        assert api(server, server.key, "GET", "/api/v1/environments/dash-def").json()["env"] == {"GREETING": "theirs"}
        chrome.evaluate("document.getElementById('launch-command').value = 'sleep 300'; true")
        click(chrome, "button[data-action=launch]")
        wait_for(chrome, "document.querySelectorAll('#definition tbody tr').length === 1", timeout=60)
        sandboxes = api(server, server.key, "GET", "/api/v1/environments/dash-def/sandboxes").json()["data"]
        assert len(sandboxes) == 1
        screenshot(chrome, "dashboard-definitions.png")
        api(server, server.key, "DELETE", f"/api/v1/sandboxes/{sandboxes[0]['id']}")
    finally:
        chrome.close()
        for vm in vms:
            api(server, server.key, "DELETE", f"/v1/vms/{vm}")
