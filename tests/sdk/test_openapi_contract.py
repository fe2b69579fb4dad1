"""paddock's served /openapi.json against the running server, by
schemathesis: every operation of the three surfaces, all four response
checks, once with each auth header. A fixed seed and example count keep
the run bounded and repeatable; the tool's version is pinned in
requirements.txt. The server may use no registry (so that a generated
image reference is refused on the spot rather than looked up), and it
has nothing in it: the tool exercises validation, auth and not-found
paths, which is where a contract drifts."""

import pathlib
import subprocess
import sys

import pytest

from conftest import Server

CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
])
EXAMPLES = "10"
SEED = "1"


@pytest.fixture(scope="module")
def contract_server():
    s = Server(extra_env={"PADDOCK_ONLY_LISTED_REGISTRIES": "true"})
    yield s
    s.stop()


@pytest.mark.parametrize("header", ["X-API-Key: {key}", "Authorization: Bearer {key}"])
def test_schemathesis_finds_nothing(contract_server, header):
    st = pathlib.Path(sys.executable).parent / "st"
    result = subprocess.run(
        [
            str(st), "run", f"{contract_server.base_url}/openapi.json",
            "--checks", CHECKS,
            "-H", header.format(key=contract_server.key),
            "--max-examples", EXAMPLES,
            "--seed", SEED,
            "--phases", "examples,coverage,fuzzing",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-30000:] + result.stderr[-5000:]
