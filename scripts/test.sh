#!/usr/bin/env bash
# The whole test suite: unit and integration tests (each starts a real
# server on a free loopback port with real sandboxes), then the suite that
# drives paddock through InstaVM's own Python SDK and checks its OpenAPI
# document against it with schemathesis.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --bins
cargo test --workspace
venv=target/sdk-venv
# The venv is (re)filled whenever the pinned requirements change.
if ! cmp -s tests/sdk/requirements.txt "$venv/requirements.txt"; then
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/sdk/requirements.txt
  cp tests/sdk/requirements.txt "$venv/requirements.txt"
fi
PADDOCK_BIN="$PWD/target/debug/paddock" "$venv/bin/python" -m pytest -q tests/sdk
