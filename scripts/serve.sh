#!/usr/bin/env bash
# Builds paddock and runs the server on its embedded defaults
# (127.0.0.1:7420, state in ./.paddock). Needs root: sandboxes are
# namespaces and cgroups. Extra arguments go to `paddock serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --bins
exec target/release/paddock serve "$@"
