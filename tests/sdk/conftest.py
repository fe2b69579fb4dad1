"""A real paddock server for the SDK suite: a free loopback port, a
temporary data dir, and every sandbox removed afterwards."""

import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("PADDOCK_BIN", ROOT / "target" / "debug" / "paddock"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _PortTaken(RuntimeError):
    """A port picked as free was bound by another process before the
    server bound it (picking a port and binding it are two steps)."""


class Server:
    def __init__(self, extra_env=None, config=None):
        # Fresh ports on each try: a port picked as free can be taken
        # before the server binds it.
        for attempt in range(3):
            try:
                self._start(extra_env, config)
                return
            except _PortTaken:
                if attempt == 2:
                    raise

    def _start(self, extra_env, config):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="pdk", dir="/tmp"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.dir / "server.log", "ab")
        self.share_port = _free_port()
        # A bridge, subnet and proxy ports of its own, apart from any other
        # server on the host.
        self.env = dict(
            os.environ,
            PADDOCK_NETWORK__BRIDGE="psdk0",
            PADDOCK_NETWORK__SUBNET="10.63.0.0/24",
            PADDOCK_SHARES__LISTEN=f"127.0.0.1:{self.share_port}",
            PADDOCK_SHARES__TLS_LISTEN=f"127.0.0.1:{_free_port()}",
            PADDOCK_SSH__LISTEN=f"127.0.0.1:{_free_port()}",
        )
        self.env.update(extra_env or {})
        args = [str(BIN), "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data)]
        if config is not None:
            (self.dir / "paddock.toml").write_text(config)
            args += ["--config", str(self.dir / "paddock.toml")]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env=self.env,
        )
        deadline = time.time() + 20
        while time.time() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        else:
            # Leave nothing behind (the process, its mounts and
            # namespaces), and say why it did not start.
            self.log.flush()
            why = (self.dir / "server.log").read_text(errors="replace")[-3000:]
            self.stop()
            if "Address already in use" in why:
                raise _PortTaken(f"paddock did not start:\n{why}")
            raise RuntimeError(f"paddock did not start:\n{why}")
        self.key = (self.data / "admin.key").read_text().strip()

    def stop(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()
        subprocess.run([str(BIN), "purge", "--data-dir", str(self.data)], check=True,
                       stdout=subprocess.DEVNULL, env=self.env)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@contextlib.contextmanager
def e2b_pointed_at(server):
    """The three variables that point E2B's SDKs at `server`, set while
    the block runs and put back after."""
    env = {
        "E2B_API_URL": f"{server.base_url}/e2b",
        "E2B_SANDBOX_URL": f"{server.base_url}/e2b/sandbox",
        "E2B_API_KEY": server.key,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
