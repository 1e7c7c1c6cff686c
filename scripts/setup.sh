#!/usr/bin/env bash
# Install what building guest plugins needs, when it is missing. A no-op on a machine whose
# rustup toolchain has the wasm32-wasip2 target, or that already has the Debian packages.
# Installs only Debian packages (needs root and apt); never downloads a toolchain itself.
set -euo pipefail

sysroot="$(rustc --print sysroot)"
if [[ -d "$sysroot/lib/rustlib/wasm32-wasip2/lib" ]]; then
    exit 0
fi
packages=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22 wasi-libc)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "setup: no wasm32-wasip2 target and no apt-get: run 'rustup target add wasm32-wasip2'" >&2
    exit 1
fi
echo "setup: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
