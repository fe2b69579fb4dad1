"""The unchanged `e2b` SDK against paddock's E2B surface: three
environment variables point it at the server, and user code written for
E2B runs as it is."""

import hashlib
import os
import subprocess
import threading
import time

import pytest

from conftest import BIN, Server, e2b_pointed_at

e2b = pytest.importorskip("e2b")
from e2b import CommandExitException, Sandbox  # noqa: E402
from e2b.exceptions import NotFoundException, TimeoutException  # noqa: E402


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def e2b_env(server):
    """What a user sets to point E2B code at paddock."""
    with e2b_pointed_at(server) as env:
        yield env


@pytest.fixture(scope="module")
def sbx(e2b_env):
    s = Sandbox.create(metadata={"suite": "e2b", "who": "module"}, envs={"FROM_CREATE": "yes"})
    yield s
    try:
        s.kill()
    except Exception:
        pass


def test_create_info_and_list(sbx):
    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id
    assert info.metadata == {"suite": "e2b", "who": "module"}
    assert info.state.value == "running"
    assert info.template_id == "base"
    assert sbx.is_running()

    found = Sandbox.list(query=e2b.SandboxQuery(metadata={"suite": "e2b"})).next_items()
    assert sbx.sandbox_id in [s.sandbox_id for s in found]
    none = Sandbox.list(query=e2b.SandboxQuery(metadata={"suite": "other"})).next_items()
    assert none == []


def test_metrics(sbx):
    sbx.commands.run("head -c 20000000 /dev/urandom | sha256sum >/dev/null")
    metrics = sbx.get_metrics()
    assert len(metrics) == 1
    m = metrics[0]
    assert m.cpu_count >= 1
    assert 0 <= m.cpu_used_pct <= 100
    assert 0 < m.mem_used <= m.mem_total
    assert 0 < m.disk_used < m.disk_total


def test_commands_foreground(sbx):
    r = sbx.commands.run("echo hello; echo oops >&2")
    assert r.exit_code == 0
    assert r.stdout == "hello\n"
    assert r.stderr == "oops\n"

    r = sbx.commands.run("echo $FROM_CREATE $EXTRA; pwd", envs={"EXTRA": "e"}, cwd="/tmp")
    assert r.stdout == "yes e\n/tmp\n"

    with pytest.raises(CommandExitException) as err:
        sbx.commands.run("exit 3")
    assert err.value.exit_code == 3

    seen = []
    sbx.commands.run("for i in 1 2 3; do echo $i; sleep 0.05; done", on_stdout=seen.append)
    assert "".join(seen) == "1\n2\n3\n"


def test_commands_background_stdin_kill_and_timeout(sbx):
    h = sbx.commands.run("sleep 0.3; echo done", background=True)
    assert h.pid > 0
    assert h.pid in [p.pid for p in sbx.commands.list()]
    assert h.wait().stdout == "done\n"

    cat = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(cat.pid, "fed through stdin\n")
    sbx.commands.close_stdin(cat.pid)
    assert cat.wait().stdout == "fed through stdin\n"

    long = sbx.commands.run("sleep 60", background=True)
    assert sbx.commands.kill(long.pid)
    with pytest.raises(CommandExitException):
        long.wait()
    assert long.pid not in [p.pid for p in sbx.commands.list()]
    assert not sbx.commands.kill(long.pid)

    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 5", timeout=1)


def test_files(sbx):
    info = sbx.files.write("/tmp/e2b/hello.txt", "hi there")
    assert info.path == "/tmp/e2b/hello.txt"
    assert sbx.files.read("/tmp/e2b/hello.txt") == "hi there"
    sbx.files.write("/tmp/e2b/blob.bin", b"\x00\x01\xff")
    assert bytes(sbx.files.read("/tmp/e2b/blob.bin", format="bytes")) == b"\x00\x01\xff"
    # Relative paths start at the default user's home.
    sbx.files.write("relative.txt", "home")
    assert sbx.commands.run("cat ~/relative.txt").stdout == "home"

    names = sorted(e.name for e in sbx.files.list("/tmp/e2b"))
    assert names == ["blob.bin", "hello.txt"]
    assert sbx.files.make_dir("/tmp/e2b/sub/deeper")
    assert not sbx.files.make_dir("/tmp/e2b/sub/deeper")
    deep = [e.path for e in sbx.files.list("/tmp/e2b", depth=3)]
    assert "/tmp/e2b/sub/deeper" in deep

    st = sbx.files.get_info("/tmp/e2b/hello.txt")
    assert st.size == 8 and st.type.value == "file"
    moved = sbx.files.rename("/tmp/e2b/hello.txt", "/tmp/e2b/sub/moved.txt")
    assert moved.path == "/tmp/e2b/sub/moved.txt"
    assert not sbx.files.exists("/tmp/e2b/hello.txt")
    assert sbx.files.exists("/tmp/e2b/sub/moved.txt")
    sbx.files.remove("/tmp/e2b/sub")
    assert not sbx.files.exists("/tmp/e2b/sub")
    with pytest.raises(NotFoundException):
        sbx.files.read("/tmp/e2b/nothing-here")


def test_a_64_mib_round_trip(sbx):
    data = os.urandom(64 << 20)
    sbx.files.write("/tmp/big.bin", data)
    assert sbx.commands.run("sha256sum /tmp/big.bin").stdout.split()[0] == hashlib.sha256(data).hexdigest()
    back = sbx.files.read("/tmp/big.bin", format="bytes")
    assert hashlib.sha256(bytes(back)).hexdigest() == hashlib.sha256(data).hexdigest()
    sbx.files.remove("/tmp/big.bin")


def test_pty(sbx):
    out = bytearray()
    term = sbx.pty.create(e2b.PtySize(rows=24, cols=80), timeout=30)
    result = {}
    reader = threading.Thread(target=lambda: result.update(r=term.wait(on_pty=out.extend)))
    reader.start()

    def until(needle):
        deadline = time.time() + 10
        while needle not in out and time.time() < deadline:
            time.sleep(0.05)
        return needle in out

    sbx.pty.send_stdin(term.pid, b"stty size; echo pty-$((40+2))\n")
    assert until(b"pty-42")
    assert b"24 80" in out
    sbx.pty.resize(term.pid, e2b.PtySize(rows=30, cols=100))
    sbx.pty.send_stdin(term.pid, b"stty size; exit\n")
    reader.join(15)
    assert not reader.is_alive()
    assert result["r"].exit_code == 0
    assert b"30 100" in out


def test_timeout_and_kill_and_other_accounts(e2b_env, server):
    s = Sandbox.create(timeout=120)
    before = s.get_info().end_at
    s.set_timeout(600)
    assert s.get_info().end_at > before

    other = subprocess.run(
        [str(BIN), "keys", "create", "--data-dir", str(server.data), "--new-account", "e2b-other"],
        check=True, capture_output=True, text=True, env=server.env,
    ).stdout.strip().split()[-1]
    with pytest.raises(NotFoundException):
        Sandbox.connect(s.sandbox_id, api_key=other)
    assert s.sandbox_id not in [x.sandbox_id for x in Sandbox.list(api_key=other).next_items()]

    s.kill()
    assert not s.is_running()
    with pytest.raises(NotFoundException):
        Sandbox.connect(s.sandbox_id)


def _until(check, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_watch_dir_polled(sbx):
    sbx.files.make_dir("/tmp/watched/sub")
    handle = sbx.files.watch_dir("/tmp/watched", recursive=True)
    sbx.files.write("/tmp/watched/a.txt", "1")
    sbx.files.write("/tmp/watched/sub/b.txt", "2")
    sbx.files.remove("/tmp/watched/a.txt")
    seen = []

    def saw_all():
        seen.extend((e.name, e.type.value) for e in handle.get_new_events())
        return {("a.txt", "create"), ("sub/b.txt", "create"), ("a.txt", "remove")} <= set(seen)

    assert _until(saw_all), seen
    # The upload's temporary file never shows.
    assert not [n for n, _ in seen if "paddock-upload" in n]
    handle.stop()
    with pytest.raises(e2b.SandboxException):
        handle.get_new_events()


def test_async_sdk_streams_watch_and_commands(sbx):
    import asyncio

    from e2b import AsyncSandbox

    async def main():
        s = await AsyncSandbox.connect(sbx.sandbox_id)
        await s.files.make_dir("/tmp/awatch")
        seen = []
        handle = await s.files.watch_dir("/tmp/awatch", on_event=lambda e: seen.append((e.name, e.type.value)))
        await s.files.write("/tmp/awatch/x.txt", "x")
        for _ in range(200):
            if ("x.txt", "create") in seen:
                break
            await asyncio.sleep(0.05)
        await handle.stop()
        out = await s.commands.run("echo async")
        return seen, out.stdout

    seen, stdout = asyncio.run(main())
    assert ("x.txt", "create") in seen
    assert stdout == "async\n"


def test_get_host_reaches_a_server_in_the_sandbox(sbx, server):
    import urllib.request

    sbx.files.write("/tmp/site/index.html", "served from the sandbox")
    web = sbx.commands.run("cd /tmp/site && exec python3 -m http.server 8123", background=True, timeout=0)
    host = sbx.get_host(8123)
    assert host.startswith(f"8123-{sbx.sandbox_id}.")
    # The SDK's host name, sent to the share proxy (no DNS here).
    def fetch(h):
        req = urllib.request.Request(f"http://127.0.0.1:{server.share_port}/index.html", headers={"Host": h})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""

    assert _until(lambda: fetch(host)[0] == 200)
    assert fetch(host) == (200, "served from the sandbox")
    # A port nothing listens on is a gateway error; a sandbox that is not
    # there is not found.
    assert fetch(host.replace("8123-", "8124-", 1))[0] == 502
    assert fetch(host.replace(sbx.sandbox_id, "vm_0000000000000000000x", 1))[0] == 404
    web.kill()


def test_templates_build_and_start(e2b_env):
    template = (
        e2b.Template()
        .from_base_image()
        .set_envs({"GREETING": "built by paddock"})
        .set_workdir("/opt/app")
        .run_cmd(["echo $GREETING > /opt/app/greeting", "pwd > /opt/app/where"])
        .set_start_cmd("echo started > /tmp/started; exec sleep 1000", "test -f /tmp/started")
    )
    logs = []
    info = e2b.Template.build(template, "paddock-e2b-test", on_build_logs=lambda e: logs.append(e.message))
    assert info.template_id
    assert any("RUN" in line for line in logs), logs
    assert e2b.Template.exists("paddock-e2b-test")

    s = Sandbox.create(template="paddock-e2b-test")
    assert s.get_info().template_id == "paddock-e2b-test"
    assert s.files.read("/opt/app/greeting") == "built by paddock\n"
    assert s.files.read("/opt/app/where") == "/opt/app\n"
    # The start command runs in the background, and was ready first.
    assert s.files.read("/tmp/started") == "started\n"
    assert "start_cmd" in [p.tag for p in s.commands.list()]
    s.kill()

    broken = e2b.Template().from_base_image().run_cmd("exit 7")
    with pytest.raises(e2b.BuildException):
        e2b.Template.build(broken, "paddock-e2b-broken")



def test_template_copy_uploads_the_context(e2b_env, tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('from the context')\n")
    (tmp_path / "app" / "data.bin").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "notes.txt").write_text("notes\n")
    copying = (
        e2b.Template(file_context_path=str(tmp_path))
        .from_base_image()
        .copy("app", "/srv/app")
        .copy("notes.txt", "/etc/notes/", mode=0o600)
        .run_cmd("python3 /srv/app/main.py > /srv/ran.txt")
    )
    e2b.Template.build(copying, "paddock-e2b-copy")
    s = Sandbox.create(template="paddock-e2b-copy")
    try:
        assert s.files.read("/srv/ran.txt") == "from the context\n"
        assert bytes(s.files.read("/srv/app/data.bin", format="bytes")) == bytes(range(256)) * 64
        assert s.files.read("/etc/notes/notes.txt") == "notes\n"
        assert s.commands.run("stat -c %a /etc/notes/notes.txt").stdout == "600\n"
    finally:
        s.kill()
    # A second build finds its files uploaded already, and builds the same.
    e2b.Template.build(copying, "paddock-e2b-copy")


def test_reconnect_stream_input_and_pages(sbx, e2b_env):
    # A background command outlives the handle that started it, and a new
    # connection sees it finish.
    h = sbx.commands.run("read line; echo got $line; sleep 0.2; echo bye", background=True, stdin=True)
    h.disconnect()
    again = sbx.commands.connect(h.pid)
    # The SDK's client-streamed input (StreamInput).
    sbx.commands.stream_input(h.pid, iter([b"streamed\n"]))
    result = again.wait()
    assert result.stdout.endswith("bye\n")

    made = [Sandbox.create(metadata={"page": "yes"}) for _ in range(3)]
    try:
        pager = Sandbox.list(query=e2b.SandboxQuery(metadata={"page": "yes"}), limit=2)
        first = pager.next_items()
        assert len(first) == 2 and pager.has_next
        rest = pager.next_items()
        assert sorted(s.sandbox_id for s in first + rest) == sorted(s.sandbox_id for s in made)
        assert not pager.has_next
    finally:
        for s in made:
            s.kill()


def test_http_1_1_and_envd_auth(sbx, server):
    import httpx

    one = Sandbox.connect(sbx.sandbox_id, http_version="1.1")
    assert one.commands.run("echo over http/1.1").stdout == "over http/1.1\n"
    one.files.write("/tmp/h11.txt", "one point one")
    assert one.files.read("/tmp/h11.txt") == "one point one"

    url = f"{server.base_url}/e2b/sandbox/process.Process/List"
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "Content-Type": "application/json"}
    # No token, a wrong token, another sandbox's id: refused, nothing run.
    assert httpx.post(url, headers=headers, content=b"{}").status_code == 401
    assert httpx.post(url, headers={**headers, "X-Access-Token": "ea_wrong"}, content=b"{}").status_code == 401
    missing = {**headers, "E2b-Sandbox-Id": "vm_doesnotexist0000000"}
    assert httpx.post(url, headers=missing, content=b"{}").status_code == 404
    # Bad input is a clear Connect error naming what was wrong.
    good = {**headers, "X-Access-Token": sbx._envd_access_token}
    r = httpx.post(f"{server.base_url}/e2b/sandbox/process.Process/SendSignal", headers=good,
                   content=b'{"process": {"pid": 1}, "signal": "SIGNAL_SIGHUP"}')
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument" and "signal" in r.json()["message"]
    r = httpx.post(f"{server.base_url}/e2b/sandbox/filesystem.Filesystem/Stat", headers=good,
                   content=b'{"path": "/etc/../etc/passwd"}')
    assert r.status_code == 400 and "path" in r.json()["message"]
    r = httpx.post(f"{server.base_url}/e2b/sandbox/process.Process/List", headers={**good, "Content-Type": "application/proto"},
                   content=b"")
    assert r.status_code == 415
    # A bad control-plane body is E2B's error format, naming the field.
    r = httpx.post(f"{server.base_url}/e2b/sandboxes", headers={"X-API-KEY": server.key},
                   json={"templateID": "base", "timeout": -1})
    assert r.status_code == 400 and "timeout" in r.json()["message"]
    r = httpx.post(f"{server.base_url}/e2b/sandboxes", headers={"X-API-KEY": "pdk_nope"},
                   json={"templateID": "base"})
    assert r.status_code == 401 and r.json()["code"] == 401


def test_commands_as_a_user(sbx):
    assert sbx.commands.run("id -u", user="root").stdout == "0\n"
    assert sbx.commands.run("id -u", user="65534", cwd="/tmp").stdout == "65534\n"
    # A user the sandbox does not have is refused, saying so.
    with pytest.raises(e2b.InvalidArgumentException, match="ghost"):
        sbx.commands.run("id -u", user="ghost")


def test_template_uploads_need_their_signed_url(e2b_env, server):
    import httpx

    api = httpx.Client(base_url=f"{server.base_url}/e2b", headers={"X-API-KEY": server.key})
    made = api.post("/v3/templates", json={"name": "paddock-e2b-uploads"}).json()
    link = api.get(f"/templates/{made['templateID']}/files/{'ab' * 32}").json()
    assert link["present"] is False
    url = link["url"]
    assert httpx.put(url.replace("token=", "token=x"), content=b"x").status_code == 401
    assert httpx.put(url.replace("ab" * 32, "cd" * 32), content=b"x").status_code == 401
    assert httpx.put(url, content=b"not a tar").status_code == 200
    assert api.get(f"/templates/{made['templateID']}/files/{'ab' * 32}").json()["present"] is True
    # A hash is hex: a path in its place is refused.
    assert api.get(f"/templates/{made['templateID']}/files/..%2F..%2Fetc").status_code in (400, 404)
    # Another account's template is not found.
    other = subprocess.run(
        [str(BIN), "keys", "create", "--data-dir", str(server.data), "--new-account", "e2b-uploads-other"],
        check=True, capture_output=True, text=True, env=server.env,
    ).stdout.strip().split()[-1]
    r = httpx.get(f"{server.base_url}/e2b/templates/{made['templateID']}/files/{'ab' * 32}", headers={"X-API-KEY": other})
    assert r.status_code == 404
    api.delete(f"/templates/{made['templateID']}")


def test_snapshots_start_new_sandboxes(e2b_env):
    s = Sandbox.create()
    try:
        s.files.write("/opt/state.txt", "before the snapshot")
        snap = s.create_snapshot()
        assert snap.snapshot_id.startswith("snap_")
        listed = [x.snapshot_id for x in Sandbox.list_snapshots(sandbox_id=s.sandbox_id).next_items()]
        assert snap.snapshot_id in listed
        s.files.write("/opt/state.txt", "after the snapshot")
        clone = Sandbox.create(template=snap.snapshot_id)
        try:
            assert clone.files.read("/opt/state.txt") == "before the snapshot"
            assert clone.get_info().template_id == snap.snapshot_id
        finally:
            clone.kill()
    finally:
        s.kill()


def test_a_refused_pause_leaves_commands_running(sbx):
    # A container cannot keep its memory: the pause is refused, and what
    # runs through envd goes on.
    h = sbx.commands.run("sleep 30", background=True)
    with pytest.raises(e2b.SandboxException):
        sbx.pause()
    assert h.pid in [p.pid for p in sbx.commands.list()]
    assert sbx.commands.kill(h.pid)
