"""paddock's served /openapi.json against the running server, by
schemathesis: every operation of the three surfaces, all four response
checks, once with each auth header. A fixed seed and example count keep
the run bounded and repeatable; the tool's version is pinned in
requirements.txt. The server may use no registry (so that a generated
image reference is refused on the spot rather than looked up). The first
run has a VM, a volume and a vault to aim at (their ids fill the path
parameters of those names), so responses about real objects are checked
too; the second has nothing, and exercises validation, auth and
not-found paths."""

import json
import pathlib
import subprocess
import sys
import urllib.request

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
    # No outbound webhooks: a generated endpoint URL is refused unresolved.
    s = Server(extra_env={"PADDOCK_ONLY_LISTED_REGISTRIES": "true", "PADDOCK_WEBHOOKS__ENABLED": "false"})
    yield s
    s.stop()


def _create(server, path, body):
    request = urllib.request.Request(
        f"{server.base_url}{path}",
        data=json.dumps(body).encode(),
        headers={"X-API-Key": server.key, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.load(reply)


def _objects_config(server):
    """A schemathesis config whose path parameters name real objects."""
    vm = _create(server, "/v1/vms?wait=true", {})
    volume = _create(server, "/v1/volumes", {"name": "contract", "quota_bytes": 64 << 20})
    vault = _create(server, "/v1/vaults", {"name": "contract"})
    path = server.dir / "schemathesis.toml"
    path.write_text(
        "[parameters]\n"
        f'"path.vm_id" = "{vm["vm_id"]}"\n'
        f'"path.session_id" = "{vm["session_id"]}"\n'
        f'"path.volume_id" = "{volume["volume_id"]}"\n'
        f'"path.vault_id" = "{vault["vault_id"]}"\n'
    )
    return ["--config-file", str(path)]


@pytest.mark.parametrize(
    "header, with_objects",
    [("X-API-Key: {key}", True), ("Authorization: Bearer {key}", False)],
)
def test_schemathesis_finds_nothing(contract_server, header, with_objects):
    st = pathlib.Path(sys.executable).parent / "st"
    config = _objects_config(contract_server) if with_objects else []
    result = subprocess.run(
        [
            str(st), *config, "run", f"{contract_server.base_url}/openapi.json",
            "--checks", CHECKS,
            "-H", header.format(key=contract_server.key),
            "--max-examples", EXAMPLES,
            "--seed", SEED,
            "--phases", "examples,coverage,fuzzing",
            "--request-timeout", "60",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        # Its cache (which replays past failures first) lives and dies with
        # the server's temp dir: every run starts from the seed alone.
        cwd=contract_server.dir,
    )
    assert result.returncode == 0, result.stdout[-30000:] + result.stderr[-5000:]


def test_the_served_document_is_valid_openapi_3_1(contract_server):
    from openapi_spec_validator import OpenAPIV31SpecValidator

    with urllib.request.urlopen(f"{contract_server.base_url}/openapi.json", timeout=30) as reply:
        spec = json.load(reply)
    assert spec["openapi"].startswith("3.1")
    # Raises on the first error: a schema that is not valid, a parameter
    # in the wrong place, an operation id used twice.
    OpenAPIV31SpecValidator(spec).validate()
    ids = [
        op["operationId"]
        for item in spec["paths"].values()
        for method, op in item.items()
        if method in ("get", "put", "post", "patch", "delete")
    ]
    assert len(ids) == len(set(ids)) == 240
