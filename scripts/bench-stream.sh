#!/usr/bin/env bash
# Memory while streaming (issue 3): downloads SIZE bytes (default 1 GiB) through the bare
# proxy and through Portcullis (a route with one plugin that does not ask for bodies), on
# loopback, and reports how much each process's peak resident memory (VmHWM) grew. A body no
# plugin asked for must stream: the growth stays flat whatever SIZE is.
#
#   scripts/bench-stream.sh            SIZE=1073741824 by default; SKIP_BUILD=1 to reuse builds
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
SIZE="${SIZE:-1073741824}"
BASE_PORT="${BASE_PORT:-18500}"
target="${CARGO_TARGET_DIR:-$root/target}/release"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release -q -p portcullis -p portcullis-tests
    ./scripts/build-plugins.sh >/dev/null
fi
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

up=$BASE_PORT bare=$((BASE_PORT + 1)) gw=$((BASE_PORT + 2))
"$target/bench_upstream" "$up" >"$work/up.log" 2>&1 &
pids+=($!)
"$target/bare_proxy" "$bare" "http://127.0.0.1:$up" >"$work/bare.log" 2>&1 &
pids+=($!) bare_pid=$!
cat >"$work/portcullis.toml" <<TOML
plugin_dir = "$root/target/plugins"
[server]
listen = "127.0.0.1:$gw"
plaintext = true
[[plugin]]
name = "allow-all"
file = "allow-all.wasm"
[[route]]
authentication = "none"
name = "stream"
upstream = "http://127.0.0.1:$up"
plugins = ["allow-all"]
TOML
"$target/portcullis" serve --config "$work/portcullis.toml" >"$work/gw.log" 2>&1 &
pids+=($!) gw_pid=$!
for port in "$up" "$bare" "$gw"; do
    for _ in $(seq 300); do
        curl -fsS -o /dev/null "http://127.0.0.1:$port/bytes/1" 2>/dev/null && break
        sleep 0.1
    done
done

hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
measure() { # name pid port
    local before after got
    curl -fsS -o /dev/null "http://127.0.0.1:$3/bytes/1048576" # warm: pools, buffers
    before=$(hwm_kib "$2")
    got=$(curl -fsS -o /dev/null -w '%{size_download}' "http://127.0.0.1:$3/bytes/$SIZE")
    after=$(hwm_kib "$2")
    if [[ "$got" != "$SIZE" ]]; then
        echo "bench-stream: $1 delivered $got of $SIZE bytes" >&2
        exit 1
    fi
    printf '| %s | %d MiB | %d MiB | %d MiB |\n' "$1" $((before / 1024)) $((after / 1024)) $(((after - before) / 1024))
}
echo "streamed $SIZE bytes; $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| process | peak RSS before | peak RSS after | growth |"
echo "|---|---|---|---|"
measure "bare proxy" "$bare_pid" "$bare"
measure "portcullis (1 plugin, body not asked)" "$gw_pid" "$gw"
