#!/usr/bin/env bash
# The main job: build the gateway and the plugins, start a small example upstream, and run the
# gateway on the example configuration (examples/portcullis.toml) in the foreground. Before it
# settles, it shows one allowed and one denied request going through. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
./scripts/build-plugins.sh
cargo build --release -p portcullis
target/release/portcullis check --config examples/portcullis.toml

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# The example upstream: static JSON on 127.0.0.1:8081.
python3 -m http.server 8081 --bind 127.0.0.1 --directory examples/upstream >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    curl -fsS -o /dev/null http://127.0.0.1:8081/hello.json 2>/dev/null && break
    sleep 0.1
done
RUST_LOG="${RUST_LOG:-portcullis=info}" target/release/portcullis serve --config examples/portcullis.toml &
pids+=($!)

ready=""
for _ in $(seq 600); do
    if curl -fsS http://127.0.0.1:9090/readyz >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.2
done
if [[ -z "$ready" ]]; then
    echo "run: the gateway did not become ready within 120 s" >&2
    exit 1
fi
echo
echo "== GET /hello.json (allowed, forwarded to the example upstream):"
curl -sS -i http://127.0.0.1:8080/hello.json
echo
echo "== DELETE /admin/users/7 (denied by plugin-template; never reaches the upstream):"
curl -sS -i -X DELETE http://127.0.0.1:8080/admin/users/7
echo
echo
echo "Portcullis is serving http://127.0.0.1:8080 (admin: http://127.0.0.1:9090/readyz). Ctrl-C stops it."
wait "${pids[1]}"
