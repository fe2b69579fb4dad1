# The code interpreter's driver, run in the sandbox by paddock for each
# code context: for Python it starts a Jupyter kernel (ipykernel, through
# jupyter_client) and runs what paddock sends it there; for bash, one
# bash process whose state (variables, directory, functions) lasts
# between calls.
#
# Protocol, one JSON object per line: paddock writes
# {"code": ..., "env_vars": {...}} to stdin; the driver answers with E2B's
# output lines ({"type": "stdout"|"stderr"|"result"|"error"|
# "number_of_executions", ...}) and then {"type": "end"}. It first says
# {"type": "ready"} (or {"type": "fatal", "message": ...}). SIGINT
# interrupts the running code; end of stdin shuts the kernel down.
import json
import os
import signal
import subprocess
import sys
import time

out = os.fdopen(os.dup(1), "w", buffering=1)
# Whatever a library prints goes to stderr, never into the protocol.
sys.stdout = sys.stderr

MIME = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
}


def emit(obj):
    out.write(json.dumps(obj) + "\n")


def die_with_parent():
    # The kernel runs in a session of its own: without this it would
    # outlive a driver that was killed.
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def bash_main(cwd):
    """A stateful bash: each call's code, then a marker on both streams
    carrying the exit status, read back line by line."""
    import secrets
    import threading

    shell = subprocess.Popen(
        ["bash", "--noprofile", "--norc"],
        cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=die_with_parent, start_new_session=True,
    )
    signal.signal(signal.SIGINT, lambda *_: os.killpg(shell.pid, signal.SIGINT))
    emit({"type": "ready"})
    count = 0
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        count += 1
        emit({"type": "number_of_executions", "execution_count": count})
        nonce = secrets.token_hex(8)
        marker = f"__paddock_done_{nonce}"
        env = "".join(f"export {k}={json.dumps(v)}\n" for k, v in (request.get("env_vars") or {}).items())
        script = env + request.get("code", "") + f"\n__s=$?; printf '\\n{marker} %s\\n' $__s; printf '\\n{marker}\\n' >&2\n"
        shell.stdin.write(script.encode())
        shell.stdin.flush()

        def pump(stream, kind):
            # The marker follows a newline of its own: the line before it
            # is held back, to drop that newline (a whole empty line, or
            # the end of a last line the code left open).
            held = None
            for raw in iter(stream.readline, b""):
                text = raw.decode(errors="replace")
                if text.startswith(marker):
                    if held is not None and held != "\n":
                        emit({"type": kind, "text": held[:-1], "timestamp": time.time_ns()})
                    return
                if held is not None:
                    emit({"type": kind, "text": held, "timestamp": time.time_ns()})
                held = text

        err = threading.Thread(target=pump, args=(shell.stderr, "stderr"))
        err.start()
        pump(shell.stdout, "stdout")
        err.join()
        if shell.poll() is not None:
            emit({"type": "error", "name": "KernelDied", "value": "bash exited", "traceback": ""})
            emit({"type": "end"})
            return 1
        emit({"type": "end"})
    shell.stdin.close()
    return 0


def main():
    cwd = sys.argv[1] if len(sys.argv) > 1 else os.getcwd()
    if len(sys.argv) > 2 and sys.argv[2] == "bash":
        return bash_main(cwd)
    # Debian's matplotlib reads its defaults from /etc/matplotlibrc, which
    # a sandbox built over the host's /usr does not have; its data dir
    # holds the same file.
    shipped = "/usr/share/matplotlib/mpl-data/matplotlibrc"
    if not os.path.exists("/etc/matplotlibrc") and os.path.exists(shipped):
        os.environ.setdefault("MATPLOTLIBRC", shipped)
    try:
        from jupyter_client.manager import KernelManager

        km = KernelManager(kernel_name="python3")
        km.start_kernel(
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
    except Exception as e:  # noqa: BLE001 - told to paddock, which says it
        emit({"type": "fatal", "message": f"{type(e).__name__}: {e}"})
        return 1
    signal.signal(signal.SIGINT, lambda *_: km.interrupt_kernel())
    emit({"type": "ready"})

    def run(code, silent=False):
        msg_id = kc.execute(code, silent=silent, store_history=not silent)
        while True:
            try:
                msg = kc.get_iopub_msg(timeout=1)
            except Exception:  # noqa: BLE001 - no message within the second
                if not km.is_alive():
                    emit({"type": "error", "name": "KernelDied", "value": "the kernel died",
                          "traceback": ""})
                    return False
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content["execution_state"] == "idle":
                return True
            if silent:
                continue
            if kind == "stream":
                emit({"type": "stdout" if content["name"] == "stdout" else "stderr",
                      "text": content["text"], "timestamp": time.time_ns()})
            elif kind in ("execute_result", "display_data"):
                result = {MIME[m]: v for m, v in content.get("data", {}).items() if m in MIME}
                extra = {m: v for m, v in content.get("data", {}).items() if m not in MIME}
                if extra:
                    result["extra"] = extra
                result["type"] = "result"
                result["is_main_result"] = kind == "execute_result"
                emit(result)
            elif kind == "error":
                emit({"type": "error", "name": content["ename"], "value": content["evalue"],
                      "traceback": "\n".join(content["traceback"])})
            elif kind == "execute_input":
                emit({"type": "number_of_executions",
                      "execution_count": content["execution_count"]})

    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        env = request.get("env_vars") or {}
        if env:
            run("import os as __pdk_os\n__pdk_saved = {k: __pdk_os.environ.get(k) for k in %r}\n"
                "__pdk_os.environ.update(%r)" % (list(env), env), silent=True)
        run(request.get("code", ""))
        if env:
            run("for __k, __v in __pdk_saved.items():\n"
                "    __pdk_os.environ.pop(__k, None) if __v is None else __pdk_os.environ.__setitem__(__k, __v)\n"
                "del __pdk_saved", silent=True)
        emit({"type": "end"})
    km.shutdown_kernel(now=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
