#!/usr/bin/env bash
# The whole test suite: unit and integration tests (each starts a real
# server on a free loopback port with real sandboxes), on SQLite and again
# on PostgreSQL (a throwaway cluster on loopback), then the suite that
# drives paddock through InstaVM's own Python SDK and checks its OpenAPI
# document against it with schemathesis.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --bins
read -r pg_admin pg_dir < <(scripts/postgres.sh start)
trap 'scripts/postgres.sh stop "$pg_dir"' EXIT
export PADDOCK_TEST_POSTGRES="$pg_admin"
# Unit tests run each store test on both backends; the integration tests'
# servers use SQLite, but for those that share or move a PostgreSQL store.
cargo test --workspace
# The integration suite again, every server on a PostgreSQL database.
PADDOCK_TEST_STORE=postgres cargo test -p paddock --tests
venv=target/sdk-venv
# The venv is (re)filled whenever the pinned requirements change.
if ! cmp -s tests/sdk/requirements.txt "$venv/requirements.txt"; then
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/sdk/requirements.txt
  cp tests/sdk/requirements.txt "$venv/requirements.txt"
fi
PADDOCK_BIN="$PWD/target/debug/paddock" "$venv/bin/python" -m pytest -q tests/sdk
