#!/usr/bin/env bash
# Install what building guest plugins needs, when it is missing; a no-op when it is there.
#  - Rust guests: nothing when rustup has the wasm32-wasip2 target; otherwise Debian's
#    rustc-web packages (apt, root). Never downloads a toolchain itself.
#  - Python guests: componentize-py (PyPI) in a virtualenv under target/tools/venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

COMPONENTIZE_PY_VERSION=0.25.1

install_rust_guest_toolchain() {
    local sysroot
    sysroot="$(rustc --print sysroot)"
    if [[ -d "$sysroot/lib/rustlib/wasm32-wasip2/lib" ]]; then
        return 0
    fi
    local packages=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22 wasi-libc)
    local missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    if ! command -v apt-get >/dev/null; then
        echo "setup: no wasm32-wasip2 target and no apt-get: run 'rustup target add wasm32-wasip2'" >&2
        return 1
    fi
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_python_guest_toolchain() {
    local venv=target/tools/venv
    if [[ -x "$venv/bin/componentize-py" ]] \
        && "$venv/bin/componentize-py" --version 2>/dev/null | grep -q "$COMPONENTIZE_PY_VERSION"; then
        return 0
    fi
    echo "setup: installing componentize-py $COMPONENTIZE_PY_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
}

install_rust_guest_toolchain
install_python_guest_toolchain
