"""Tapes through InstaVM's own SDK and CLI, unchanged: a session's VM
recorded step by step (commands with their output, a terminal, file
transfers, a tool call's span), its files compared between steps, a new
VM branched at a step, the tape exported, stopped, listed and deleted."""

import asyncio
import base64
import json
import os
import subprocess
import sys
import time

import pytest
import requests
import websockets
from instavm import InstaVM
from instavm.sandbox_client import ToolCallRecorder

from conftest import BIN


@pytest.fixture(scope="module")
def client(server):
    return InstaVM(api_key=server.key, base_url=server.base_url, timeout=120)


def _events(client, tape_id, want, kind=None, seconds=20):
    """The tape's events once `want` of them (of `kind`) are there: a step
    is written when it ends, after the call that made it answered."""
    deadline = time.time() + seconds
    while True:
        events = client.tapes.events(tape_id, kind=kind)
        if len(events) >= want or time.time() > deadline:
            return events
        time.sleep(0.1)


def _exec(server, vm_id, command):
    r = requests.post(
        f"{server.base_url}/v1/vms/{vm_id}/exec",
        headers={"X-API-Key": server.key},
        json={"command": command},
        timeout=60,
    )
    assert r.ok, r.text
    return "".join(json.loads(line).get("data", "") for line in r.text.splitlines() if '"stdout"' in line)


def test_a_session_is_recorded_diffed_branched_and_exported(client, server, tmp_path):
    tape = client.tapes.start(client.session_id, retention_days=3)
    tid = tape["id"]
    assert tape["status"] == "recording" and tape["total_steps"] == 0
    assert tape["vm_id"] and tape["session_id"] == client.session_id

    client.execute("mkdir -p /root/proj && printf 'alpha\\nbeta\\n' > /root/proj/notes.txt && echo made")
    client.execute("printf 'gamma\\n' >> /root/proj/notes.txt; head -c 4096 /dev/urandom > /root/proj/data.bin; echo warn >&2; exit 3")
    local = tmp_path / "up.txt"
    local.write_text("uploaded by the sdk\n")
    client.upload_file(str(local), "/root/proj/up.txt")
    client.execute("rm /root/proj/data.bin")

    recorder = ToolCallRecorder(client.tapes, tid)
    with recorder.span("python_exec", payload={"code": "1+1"}) as span:
        span.attach({"output": "2"})

    events = _events(client, tid, 6)
    kinds = [e["kind"] for e in events]
    assert kinds.count("exec") == 3 and "file_upload" in kinds
    assert kinds[-2:] == ["tool_call_start", "tool_call_end"], kinds
    steps = [e["step_id"] for e in events]
    assert steps == sorted(steps)
    first, second = [e for e in events if e["kind"] == "exec"][:2]
    assert first["payload"]["stdout"] == "made\n" and first["payload"]["exit_code"] == 0
    assert "printf 'alpha" in first["payload"]["command"]
    assert second["payload"]["stderr"] == "warn\n" and second["payload"]["exit_code"] == 3
    assert second["payload"]["duration_ms"] >= 0 and second["ts"]
    upload = next(e for e in events if e["kind"] == "file_upload")
    assert upload["payload"] == {"path": "/root/proj/up.txt", "bytes": 20}
    start, end = events[-2:]
    assert end["step_id"] == start["step_id"] and end["payload"]["ok"] is True
    # Each step that changed files has its checkpoint.
    assert first["checkpoint_id"] == f"cp_{first['step_id']}"

    s1, s2 = first["step_id"], second["step_id"]
    d = client.tapes.diff(tid, 0, s1)
    assert "/root/proj/notes.txt" in d["changed_paths"]
    [notes] = [a for a in d["added"] if a["path"] == "/root/proj/notes.txt"]
    assert notes["size"] == 11 and "+alpha" in notes["diff"]
    d = client.tapes.diff(tid, s1, s2)
    [changed] = d["changed"]
    assert changed["path"] == "/root/proj/notes.txt"
    assert (changed["size_before"], changed["size"]) == (11, 17)
    assert "+gamma" in changed["diff"] and " alpha" in changed["diff"]
    assert [a["path"] for a in d["added"]] == ["/root/proj/data.bin"]
    last = events[-1]["step_id"]
    d = client.tapes.diff(tid, s2, last)
    assert [r["path"] for r in d["removed"]] == ["/root/proj/data.bin"]
    assert "/root/proj/up.txt" in [a["path"] for a in d["added"]]

    lanes = client.tapes.lanes(tid)["lanes"]
    assert lanes["exec"] == 3 and lanes["tool_call_start"] == 1
    assert [e["kind"] for e in client.tapes.events(tid, kind="exec")] == ["exec"] * 3
    assert [e["step_id"] for e in client.tapes.events(tid, after_step=s2)][0] > s2

    # A new VM whose files are the tape's at step s2: data.bin still
    # there, the upload not yet.
    branch = client.tapes.branch(tid, at_step=s2)
    assert branch["parent_tape_id"] == tid and branch["parent_step_id"] == s2
    assert branch["status"] == "active" and branch["skipped_count"] == 0, branch
    out = _exec(server, branch["vm_id"], "cat /root/proj/notes.txt; wc -c < /root/proj/data.bin; ls /root/proj")
    assert out == "alpha\nbeta\ngamma\n4096\ndata.bin\nnotes.txt\n", out
    child = client.tapes.get(branch["tape_id"])
    assert child["parent_tape_id"] == tid and child["status"] == "recording"

    stopped = client.tapes.stop(tid)
    assert stopped["status"] == "stopped" and stopped["total_steps"] == last
    client.execute("echo after-stop")
    assert len(client.tapes.events(tid)) == len(events)

    bundle = client.tapes.export(tid)
    assert bundle["format"] == "paddock-tape/1" and len(bundle["events"]) == len(events)
    contents = bundle["files"]["contents"]
    assert any(base64.b64decode(v) == b"uploaded by the sdk\n" for v in contents.values())

    listed = client.tapes.list(session_id=client.session_id)
    assert tid in [t["id"] for t in listed]
    assert [t["id"] for t in client.tapes.list(status="stopped", session_id=client.session_id)] == [tid]
    client.tapes.delete(branch["tape_id"])
    client.vms.delete(branch["vm_id"])
    assert client.tapes.delete(tid)["success"] is True
    with pytest.raises(Exception):
        client.tapes.get(tid)


def test_a_terminal_is_recorded(client, server):
    vm = client.vms.create(wait=True)
    tape = client.tapes.start(vm["session_id"], record_fs=False)
    pty = client.pty.create_for_vm(vm["vm_id"], cols=80, rows=24)

    async def talk():
        async with websockets.connect(client.pty.ws_url_for_vm(vm["vm_id"], pty["session_id"])) as ws:
            shown = b""
            while b"# " not in shown:
                msg = await asyncio.wait_for(ws.recv(), timeout=10)
                if isinstance(msg, bytes):
                    shown += msg
            await ws.send(b"echo tape-$((6*7))\n")
            seen = b""
            while b"tape-42" not in seen:
                msg = await asyncio.wait_for(ws.recv(), timeout=10)
                if isinstance(msg, bytes):
                    seen += msg

    asyncio.run(talk())
    outputs = _events(client, tape["id"], 1, kind="pty_input")
    assert any("echo tape-$((6*7))" in e["payload"]["data"] for e in outputs)
    deadline = time.time() + 10
    while time.time() < deadline:
        shown = "".join(e["payload"]["data"] for e in client.tapes.events(tape["id"], kind="pty_output"))
        if "tape-42" in shown:
            break
        time.sleep(0.2)
    assert "tape-42" in shown
    # Without record_fs, nothing is checkpointed and a diff says why.
    assert all(e["checkpoint_id"] is None for e in client.tapes.events(tape["id"]))
    r = requests.get(
        f"{server.base_url}/v1/tapes/{tape['id']}/diff",
        params={"from": 0, "to": 1},
        headers={"X-API-Key": server.key},
        timeout=30,
    )
    assert r.status_code == 409 and "record_fs" in r.json()["detail"]
    client.tapes.stop(tape["id"])
    client.vms.delete(vm["vm_id"])


def test_bad_input_conflicts_and_other_accounts(client, server):
    key = {"X-API-Key": server.key}
    base = server.base_url
    vm = client.vms.create(wait=True)
    sid = vm["session_id"]
    tape = client.tapes.start(sid)
    tid = tape["id"]
    # One tape per VM at a time.
    r = requests.post(f"{base}/v1/sessions/{sid}/tape/start", headers=key, json={}, timeout=30)
    assert r.status_code == 409, r.text
    for body, field in [({"retention_days": 0}, "retention_days"), ({"record_fs": "maybe"}, "record_fs")]:
        other_vm = client.vms.create(wait=True)
        r = requests.post(f"{base}/v1/sessions/{other_vm['session_id']}/tape/start", headers=key, json=body, timeout=30)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == field, r.text
        client.vms.delete(other_vm["vm_id"])
    r = requests.post(f"{base}/v1/sessions/no-such-session/tape/start", headers=key, json={}, timeout=30)
    assert r.status_code == 404
    for body, field in [
        ({"kind": "bad kind!"}, "kind"),
        ({"kind": "x", "payload": [1]}, "payload"),
        ({"kind": "x", "step_id": 999}, "step_id"),
        ({"kind": "x", "checkpoint_id": "cp_999"}, "checkpoint_id"),
    ]:
        r = requests.post(f"{base}/v1/tapes/{tid}/events", headers=key, json=body, timeout=30)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == field, (body, r.text)
    r = requests.get(f"{base}/v1/tapes/{tid}/diff", headers=key, params={"from": 0, "to": 99}, timeout=30)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "to"], r.text
    r = requests.get(f"{base}/v1/tapes/{tid}/events", headers=key, params={"limit": 0}, timeout=30)
    assert r.status_code == 422
    r = requests.post(f"{base}/v1/tapes/{tid}/branch", headers=key, json={"at_step": 0, "mode": "fork"}, timeout=30)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "mode"

    other = subprocess.run(
        [str(BIN), "keys", "create", "--data-dir", str(server.data), "--new-account", "tapes-other"],
        check=True, capture_output=True, text=True, env=server.env,
    ).stdout.strip().split()[-1]
    theirs = {"X-API-Key": other}
    for method, path in [("GET", f"/v1/tapes/{tid}"), ("GET", f"/v1/tapes/{tid}/events"),
                         ("POST", f"/v1/tapes/{tid}/stop"), ("DELETE", f"/v1/tapes/{tid}")]:
        assert requests.request(method, f"{base}{path}", headers=theirs, timeout=30).status_code == 404
    r = requests.post(f"{base}/v1/sessions/{sid}/tape/start", headers=theirs, json={}, timeout=30)
    assert r.status_code == 404
    assert requests.get(f"{base}/v1/tapes", headers=theirs, timeout=30).json() == []
    client.tapes.stop(tid)
    r = requests.post(f"{base}/v1/tapes/{tid}/events", headers=key, json={"kind": "late"}, timeout=30)
    assert r.status_code == 409
    client.tapes.delete(tid)
    client.vms.delete(vm["vm_id"])


def test_the_cli_records_and_plays_a_tape(client, server, tmp_path):
    env = dict(os.environ, INSTAVM_API_KEY=server.key, INSTAVM_BASE_URL=server.base_url, HOME=str(tmp_path))

    def run(*args):
        done = subprocess.run([sys.executable, "-m", "instavm", *args], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    vm = client.vms.create(wait=True)
    started = json.loads(run("tape", "start", vm["session_id"], "--json"))
    tid = started["id"]
    _exec(server, vm["vm_id"], "echo cli > /root/cli.txt")
    _events(client, tid, 1)
    assert "exec" in run("tape", "play", tid)
    events = json.loads(run("tape", "events", tid, "--json"))["events"]
    step = events[0]["step_id"]
    diff = json.loads(run("tape", "diff", tid, "--from", "0", "--to", str(step), "--json"))
    assert "/root/cli.txt" in diff["changed_paths"]
    assert json.loads(run("tape", "lanes", tid, "--json"))["lanes"]["exec"] == 1
    out = tmp_path / "tape.json"
    run("tape", "export", tid, "--output", str(out))
    assert json.loads(out.read_text())["tape"]["id"] == tid
    run("tape", "stop", tid)
    assert tid in run("tape", "ls")
    run("tape", "rm", tid)
    client.vms.delete(vm["vm_id"])
