#!/usr/bin/env bash
# Install what building guest plugins and running the end-to-end tests needs, when it is
# missing; a no-op when it is there.
#  - Rust guests: nothing when rustup has the wasm32-unknown-unknown and wasm32-wasip2 targets;
#    otherwise Debian's rustc-web packages (apt, root). Never downloads a toolchain itself.
#  - Python guests: componentize-py (PyPI) in a virtualenv under target/tools/venv.
#  - Azure Storage tests: the Azurite emulator (npm) under target/tools/azurite, with Debian's
#    nodejs/npm when node is missing, and the Python SDK azure-storage-blob in the same venv.
#  - Browser tests: Debian's chromium (apt, root), driven headless; never a downloaded build.
#  - Container image (scripts/container.sh and its test): Debian's podman with runc (apt, root),
#    and target/tools/containers.conf, which podman reads through CONTAINERS_CONF: runc (crun
#    fails here on setrlimit and the hybrid cgroup layout) and ulimits it can set.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

COMPONENTIZE_PY_VERSION=0.25.1
# 3.35.0 is the newest Azurite whose engines allow Node 20 (3.36 wants >=21, 3.37 >=22); it also
# runs on Debian 12's Node 18.
AZURITE_VERSION=3.35.0
# The SDK the tests drive; azure-core pinned with it, since retries and transport live there.
AZURE_STORAGE_BLOB_VERSION=12.31.1
AZURE_CORE_VERSION=1.41.0

# apt_install HINT PACKAGE...: install Debian packages (root), or fail saying HINT where there
# is no apt-get.
apt_install() {
    local hint="$1"
    shift
    if ! command -v apt-get >/dev/null; then
        echo "setup: $* missing and no apt-get: $hint" >&2
        return 1
    fi
    echo "setup: installing $*"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

install_rust_guest_toolchain() {
    local sysroot
    sysroot="$(rustc --print sysroot)"
    if [[ -d "$sysroot/lib/rustlib/wasm32-unknown-unknown/lib" \
        && -d "$sysroot/lib/rustlib/wasm32-wasip2/lib" ]]; then
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
    apt_install "run 'rustup target add wasm32-unknown-unknown wasm32-wasip2'" "${missing[@]}"
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

install_node() {
    if command -v node >/dev/null && command -v npm >/dev/null; then
        return 0
    fi
    apt_install "install Node.js 18 or newer" nodejs npm
}

install_azurite() {
    local prefix=target/tools/azurite
    local package="$prefix/node_modules/azurite/package.json"
    if [[ -f "$package" ]] \
        && [[ "$(node -p "require('./$package').version" 2>/dev/null)" == "$AZURITE_VERSION" ]]; then
        return 0
    fi
    echo "setup: installing azurite $AZURITE_VERSION into $prefix"
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION"
}

install_azure_sdk() {
    local venv=target/tools/venv
    if [[ ! -x "$venv/bin/python" ]]; then
        python3 -m venv "$venv"
    fi
    if [[ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("azure-storage-blob"), m.version("azure-core"))' 2>/dev/null)" \
        == "$AZURE_STORAGE_BLOB_VERSION $AZURE_CORE_VERSION" ]]; then
        return 0
    fi
    echo "setup: installing azure-storage-blob $AZURE_STORAGE_BLOB_VERSION into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "azure-storage-blob==$AZURE_STORAGE_BLOB_VERSION" "azure-core==$AZURE_CORE_VERSION"
}

install_chromium() {
    if [[ -n "${PORTCULLIS_CHROMIUM:-}" ]] || command -v chromium >/dev/null; then
        return 0
    fi
    apt_install "install Chromium or set PORTCULLIS_CHROMIUM" chromium
}

install_podman() {
    local conf=target/tools/containers.conf
    mkdir -p target/tools
    cat > "$conf.tmp" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
CONF
    mv "$conf.tmp" "$conf"
    if command -v podman >/dev/null && command -v runc >/dev/null; then
        return 0
    fi
    apt_install "install podman and runc" podman runc
}

install_rust_guest_toolchain
install_python_guest_toolchain
install_node
install_azurite
install_azure_sdk
install_chromium
install_podman
