#!/usr/bin/env bash
# The whole test suite: unit and integration tests (each starts a real
# server on a free loopback port with real sandboxes), then the suite that
# drives paddock through InstaVM's own Python SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --bins
cargo test --workspace
venv=target/sdk-venv
if [ ! -x "$venv/bin/pytest" ]; then
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/sdk/requirements.txt
fi
PADDOCK_BIN="$PWD/target/debug/paddock" "$venv/bin/python" -m pytest -q tests/sdk
