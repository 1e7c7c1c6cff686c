#!/usr/bin/env bash
# The whole test suite: install the guest toolchain if missing, build every guest plugin, then
# run every test of the workspace (release: debug wasmtime compiles components far slower).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
./scripts/build-plugins.sh
cargo test --workspace --release "$@"
