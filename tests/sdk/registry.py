"""A real OCI registry (Debian's `docker-registry`) on a free loopback
port, and a busybox image pushed to it over the registry's HTTP API, for
the SDK tests that need an image (a microVM from an image)."""

import contextlib
import gzip
import hashlib
import io
import json
import os
import pathlib
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time

import requests


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="pdkreg", dir="/tmp"))
        port = _free_port()
        self.host = f"127.0.0.1:{port}"
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.dir / 'data'}\nhttp:\n  addr: {self.host}\n"
        )
        self.log = open(self.dir / "registry.log", "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                                     stdout=self.log, stderr=self.log)
        deadline = time.time() + 20
        while True:
            try:
                if requests.get(f"http://{self.host}/v2/", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("docker-registry did not start")
            time.sleep(0.05)

    def paddock_config(self):
        return f'[registries."{self.host}"]\ninsecure = true\n'

    def reference(self, repo_tag):
        return f"{self.host}/{repo_tag}"

    def _blob(self, repo, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = requests.post(f"http://{self.host}/v2/{repo}/blobs/uploads/", timeout=30)
        start.raise_for_status()
        location = start.headers["Location"]
        if location.startswith("/"):
            location = f"http://{self.host}{location}"
        sep = "&" if "?" in location else "?"
        put = requests.put(f"{location}{sep}digest={digest}", data=data, timeout=60,
                           headers={"Content-Type": "application/octet-stream"})
        put.raise_for_status()
        return digest

    def push_busybox(self, repo_tag, env=("PATH=/bin",), workdir="/work", with_bash=False):
        """A one-layer image: static busybox as /bin/sh and a few applets;
        `with_bash` adds the host's bash and the libraries it loads (what
        E2B's SDK runs every command with)."""
        repo, tag = repo_tag.split(":")
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as t:
            dirs = {"bin", "etc", "tmp", "root"}
            files = {}
            if with_bash:
                out = subprocess.run(["ldd", "/bin/bash"], capture_output=True, text=True, check=True).stdout
                libs = [w for w in out.split() if w.startswith("/")]
                for path in ["/bin/bash"] + libs:
                    files[path.lstrip("/")] = os.path.realpath(path)
                    parent = os.path.dirname(path.lstrip("/"))
                    while parent:
                        dirs.add(parent)
                        parent = os.path.dirname(parent)
            for d in sorted(dirs):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            t.add("/bin/busybox", arcname="bin/busybox")
            for arc, real in files.items():
                t.add(real, arcname=arc)
            for applet in ("sh", "cat", "echo", "kill", "sleep", "ls", "dd"):
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                t.addfile(info)
        layer = raw.getvalue()
        compressed = gzip.compress(layer, compresslevel=1)
        layer_digest = self._blob(repo, compressed)
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": list(env), "WorkingDir": workdir, "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers",
                       "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        }).encode()
        config_digest = self._blob(repo, config)
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": len(compressed)}],
        }).encode()
        put = requests.put(f"http://{self.host}/v2/{repo}/manifests/{tag}", data=manifest,
                           headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
                           timeout=30)
        put.raise_for_status()
        return self.reference(repo_tag)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def server_with_registry(repo_tag, bridge, subnet):
    """A paddock server (on its own bridge and subnet, sharing the suite's
    microVM cache) that pulls from a fresh registry holding a busybox
    image at `repo_tag`: yields the server and the image's reference."""
    from conftest import Server

    reg = Registry()
    try:
        image = reg.push_busybox(repo_tag)
        server = Server(
            extra_env={
                "PADDOCK_NETWORK__BRIDGE": bridge,
                "PADDOCK_NETWORK__SUBNET": subnet,
                "PADDOCK_MICROVM__CACHE_DIR": "/tmp/paddock-test-microvm-cache",
            },
            config=reg.paddock_config(),
        )
        try:
            yield server, image
        finally:
            server.stop()
    finally:
        reg.stop()
