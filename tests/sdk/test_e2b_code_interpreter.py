"""The unchanged `e2b-code-interpreter` SDK against paddock: `run_code`
in a Jupyter kernel in the sandbox, with state across calls, streamed
output, rich results (a matplotlib PNG), errors and contexts."""

import base64

import pytest

from conftest import Server, e2b_pointed_at

ci = pytest.importorskip("e2b_code_interpreter")


@pytest.fixture(scope="module")
def sbx():
    server = Server(extra_env={
        "PADDOCK_NETWORK__BRIDGE": "psdk3",
        "PADDOCK_NETWORK__SUBNET": "10.63.3.0/24",
    })
    with e2b_pointed_at(server):
        s = ci.Sandbox.create()
        yield s
        s.kill()
    server.stop()


def test_state_persists_and_output_streams(sbx):
    first = sbx.run_code("x = 41\nprint('hello from the kernel')")
    assert first.logs.stdout == ["hello from the kernel\n"]
    assert first.error is None
    seen = []
    second = sbx.run_code("import sys\nprint('out'); print('err', file=sys.stderr)\nx + 1",
                          on_stdout=lambda m: seen.append(m.line))
    assert second.text == "42"
    assert second.logs.stderr == ["err\n"]
    assert seen == ["out\n"]
    assert second.execution_count == first.execution_count + 1


def test_rich_results(sbx):
    chart = sbx.run_code(
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [4, 1, 9])\n"
        "plt.show()")
    pngs = [r.png for r in chart.results if r.png]
    assert chart.error is None, chart.error
    assert len(pngs) == 1
    assert base64.b64decode(pngs[0]).startswith(b"\x89PNG\r\n\x1a\n")
    html = sbx.run_code("from IPython.display import HTML\nHTML('<b>bold</b>')")
    assert html.results[0].html == "<b>bold</b>"
    data = sbx.run_code("from IPython.display import JSON\nJSON({'a': 1})")
    assert data.results[0].json == {"a": 1}


def test_errors_and_env(sbx):
    failed = sbx.run_code("1 / 0")
    assert failed.error.name == "ZeroDivisionError"
    assert failed.error.value == "division by zero"
    assert "ZeroDivisionError" in failed.error.traceback
    env = sbx.run_code("import os\nos.environ.get('ONLY_HERE')", envs={"ONLY_HERE": "yes"})
    assert env.text == "'yes'"
    assert sbx.run_code("os.environ.get('ONLY_HERE')").text is None
    # A language whose runtime is not here is refused, as the SDK's own
    # exception.
    with pytest.raises(ci.SandboxException, match="python and bash"):
        sbx.run_code("1", language="r")


def test_bash_keeps_its_state(sbx):
    first = sbx.run_code("cd /tmp; export N=41; echo started", language="bash")
    assert first.logs.stdout == ["started\n"]
    second = sbx.run_code("echo $((N + 1)) $(pwd); echo oops >&2; printf tail", language="bash")
    assert second.logs.stdout == ["42 /tmp\n", "tail"]
    assert second.logs.stderr == ["oops\n"]
    ctx = sbx.create_code_context(language="bash")
    assert sbx.run_code("echo ${N:-unset}", context=ctx).logs.stdout == ["unset\n"]
    sbx.remove_code_context(ctx)


def test_contexts(sbx):
    ctx = sbx.create_code_context(cwd="/tmp")
    assert ctx.cwd == "/tmp"
    sbx.run_code("y = 'in the context'", context=ctx)
    assert sbx.run_code("y", context=ctx).text == "'in the context'"
    # The default context is another kernel.
    assert sbx.run_code("'y' in dir()").text == "False"
    assert sbx.run_code("import os; os.getcwd()", context=ctx).text == "'/tmp'"
    assert ctx.id in [c.id for c in sbx.list_code_contexts()]
    sbx.restart_code_context(ctx)
    assert sbx.run_code("'y' in dir()", context=ctx).text == "False"
    sbx.remove_code_context(ctx)
    assert ctx.id not in [c.id for c in sbx.list_code_contexts()]


def test_an_oversized_run_is_refused(sbx):
    import httpx

    url = sbx.connection_config.get_sandbox_url(sbx.sandbox_id, sbx.sandbox_domain, 49999)
    r = httpx.post(f"{url}/execute", headers={
        "E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49999",
        "X-Access-Token": sbx._envd_access_token, "Content-Type": "application/json",
    }, content=b'{"code": "' + b"x" * (17 << 20) + b'"}', timeout=60)
    assert r.status_code == 413, r.text
    assert sbx.run_code("1 + 1").text == "2"
