#!/usr/bin/env bash
# The main job: build the plugins and run the gateway on the example configuration.
# (Until the request path lands: `portcullis check`, which loads every plugin of the example
# configuration and prints its name, version and sha256.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
./scripts/build-plugins.sh
cargo run --release -p portcullis -- check --config examples/portcullis.toml
