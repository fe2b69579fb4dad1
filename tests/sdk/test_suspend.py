"""Suspend and resume with memory through the unchanged instavm SDK: a
microVM started from an image (the only kind this host can save: see
README), with a process whose state lives only in memory."""

import time

import pytest
from instavm import InstaVM

from registry import server_with_registry


@pytest.fixture(scope="module")
def image_server():
    with server_with_registry("sdk/guest:v1", bridge="psdk1", subnet="10.63.1.0/24") as pair:
        yield pair


def test_a_microvm_suspends_and_resumes_with_its_memory(image_server):
    server, image = image_server
    client = InstaVM(api_key=server.key, base_url=server.base_url, auto_start_session=False,
                     timeout=300)
    vm = client.vms.create(wait=True, provider="microvm", image_variant=image,
                           auto_resume=True)
    assert vm["status"] == "active", vm
    vid = vm["vm_id"]
    inside = InstaVM(api_key=server.key, base_url=server.base_url, auto_start_session=False,
                     timeout=300)
    inside.session_id = vm["session_id"]
    out = inside.execute(
        "(i=0; while :; do i=$((i+1)); echo $i > /work/count; sleep 0.1; done) "
        "</dev/null >/dev/null 2>&1 & echo $!")
    counter = out["stdout"].strip()
    time.sleep(0.5)

    suspended = client.vms.suspend(vid)
    assert suspended["status"] == "suspended", suspended
    assert client.vms.get(vid)["status"] == "suspended"

    resumed = client.vms.resume(vid, wait=True)
    assert resumed["status"] == "active" and resumed["vm_id"] == vid, resumed
    before = int(inside.execute("cat /work/count")["stdout"])
    time.sleep(0.6)
    out = inside.execute(f"kill -0 {counter} && echo alive; cat /work/count")["stdout"].split()
    assert out[0] == "alive", out
    assert int(out[1]) > before, (before, out)

    # A suspended VM is snapshotted and cloned from its own disk, and
    # stays suspended.
    inside.execute("echo from-the-disk > /work/mark")
    client.vms.suspend(vid)
    clone = client.vms.clone(vid, wait=True)
    assert clone["status"] in ("active", "running"), clone
    in_clone = InstaVM(api_key=server.key, base_url=server.base_url, auto_start_session=False,
                       timeout=300)
    in_clone.session_id = clone["session_id"]
    assert in_clone.execute("cat /work/mark")["stdout"] == "from-the-disk\n"
    assert client.vms.get(vid)["status"] == "suspended"
    client.vms.delete(clone["vm_id"])

    # With auto_resume, a command resumes a suspended VM by itself.
    assert inside.execute("echo back")["stdout"] == "back\n"
    assert client.vms.get(vid)["status"] == "active"
    client.vms.delete(vid)
