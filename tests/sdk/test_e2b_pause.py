"""E2B's pause and resume through the unchanged SDK: sandboxes of the E2B
API run as microVMs here (`[e2b] provider = "microvm"`), whose memory a
pause keeps, so a process running before the pause goes on after it."""

import time

import pytest

from conftest import Server, e2b_pointed_at
from registry import Registry

e2b = pytest.importorskip("e2b")


@pytest.fixture(scope="module")
def paused_server():
    reg = Registry()
    image = reg.push_busybox("sdk/e2b-guest:v1", with_bash=True)
    s = Server(
        extra_env={
            "PADDOCK_NETWORK__BRIDGE": "psdk2",
            "PADDOCK_NETWORK__SUBNET": "10.63.2.0/24",
            "PADDOCK_MICROVM__CACHE_DIR": "/tmp/paddock-test-microvm-cache",
        },
        config=reg.paddock_config() + '\n[e2b]\nprovider = "microvm"\n',
    )
    with e2b_pointed_at(s):
        yield s, image
    s.stop()
    reg.stop()


def test_pause_keeps_memory_and_connect_resumes(paused_server):
    _, image = paused_server
    sbx = e2b.Sandbox.create(template=image, timeout=600, request_timeout=300)
    # A detached counter: its state lives only in the guest's memory.
    sbx.commands.run(
        "(i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done) "
        "</dev/null >/dev/null 2>&1 & echo $! > /tmp/counter.pid", timeout=60)
    sbx.files.write("/tmp/kept.txt", "before the pause")
    time.sleep(0.5)

    assert sbx.pause()
    info = e2b.Sandbox.get_info(sbx.sandbox_id)
    assert info.state.value == "paused"
    assert [s.sandbox_id for s in e2b.Sandbox.list(query=e2b.SandboxQuery(state=[e2b.SandboxState.PAUSED])).next_items()] == [sbx.sandbox_id]
    # Pausing a paused sandbox says so.
    assert not sbx.pause()

    again = e2b.Sandbox.connect(sbx.sandbox_id, timeout=600)
    assert e2b.Sandbox.get_info(sbx.sandbox_id).state.value == "running"
    before = int(again.files.read("/tmp/count"))
    time.sleep(0.6)
    out = again.commands.run("kill -0 $(cat /tmp/counter.pid) && echo alive; cat /tmp/count").stdout.split()
    assert out[0] == "alive", out
    assert int(out[1]) > before, (before, out)
    assert again.files.read("/tmp/kept.txt") == "before the pause"
    again.kill()


def test_a_sandbox_that_times_out_pauses_and_resumes_on_use(paused_server):
    _, image = paused_server
    sbx = e2b.Sandbox.create(template=image, timeout=3, request_timeout=300,
                             lifecycle={"on_timeout": "pause", "auto_resume": True})
    sbx.files.write("/tmp/before.txt", "kept")
    deadline = time.time() + 60
    while time.time() < deadline and e2b.Sandbox.get_info(sbx.sandbox_id).state.value != "paused":
        time.sleep(0.5)
    assert e2b.Sandbox.get_info(sbx.sandbox_id).state.value == "paused"
    again = e2b.Sandbox.connect(sbx.sandbox_id, timeout=600)
    assert again.files.read("/tmp/before.txt") == "kept"
    again.kill()
