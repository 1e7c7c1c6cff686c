#!/usr/bin/env bash
# Build every guest plugin (first-party, examples, test-only) into a component:
#   target/plugins/<name>.wasm
#
# Rust guests: every cdylib crate under plugins/, examples/, tests/plugins/ (name: the crate's).
#   - By default built for wasm32-unknown-unknown and wrapped into a component by
#     portcullis-componentize (sdk/componentize): the component imports the contract's host
#     interface and nothing else, no WASI and so no adapter module, which is what keeps a fresh
#     instance cheap (BENCHMARKS.md).
#   - A crate whose Cargo.toml says `[package.metadata.portcullis] target = "wasm32-wasip2"` is
#     built as a wasip2 component instead, for a guest that uses WASI (the test-only `misbehave`
#     probes the gateway's WASI sandbox that way, as componentize-py guests use it).
# Python guests: every directory under plugins/, examples/, tests/plugins/ holding an app.py
# (name: the directory's), built with componentize-py from target/tools/venv (scripts/setup.sh).
#
# Route per target, chosen by itself, never downloading a toolchain:
#   1. rustup's toolchain has the target's standard library (`rustup target add wasm32-unknown-unknown
#      wasm32-wasip2`)
#   2. Debian's rustc-web with its std source (packages: rustc-web cargo-web rust-web-src
#      rust-web-llvm lld-22 wasi-libc), std rebuilt for the target with -Zbuild-std
# Otherwise it stops and says what to install.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="$root/target/guest"
out_dir="$root/target/plugins"

# Every cdylib crate under plugins/, examples/ and tests/plugins/ is a guest.
core_packages=()
wasi_packages=()
for manifest in plugins/*/Cargo.toml examples/*/Cargo.toml tests/plugins/*/Cargo.toml; do
    [[ -f "$manifest" ]] || continue
    grep -q 'crate-type = \["cdylib"\]' "$manifest" || continue
    name="$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n1)"
    if grep -q '^target = "wasm32-wasip2"' "$manifest"; then
        wasi_packages+=("$name")
    else
        core_packages+=("$name")
    fi
done
if [[ $((${#core_packages[@]} + ${#wasi_packages[@]})) -eq 0 ]]; then
    echo "build-plugins: no guest crates found" >&2
    exit 1
fi

sysroot="$(rustc --print sysroot 2>/dev/null || true)"

# build TARGET PACKAGE...: cargo build --profile plugin for TARGET, through rustup or Debian.
build() {
    local target="$1"
    shift
    local pkg_args=()
    for p in "$@"; do pkg_args+=(-p "$p"); done
    local flags="" debian_libs=""
    if [[ "$target" == wasm32-unknown-unknown ]]; then
        # 1 MiB of heap after the 1 MiB stack and the data, which the SDK's allocator uses
        # before it grows memory (sdk/src/heap.rs).
        flags="-C link-arg=--initial-memory=2097152"
    else
        debian_libs=/usr/lib/wasm32-wasi
    fi
    local target_env
    target_env="CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
    if [[ -n "$sysroot" && -d "$sysroot/lib/rustlib/$target/lib" ]]; then
        echo "build-plugins: $target through rustup ($target std found in $sysroot)"
        env "$target_env=$flags" \
            cargo build --profile plugin --target "$target" --target-dir "$target_dir" "${pkg_args[@]}"
    elif [[ -x /usr/bin/rustc && -x /usr/bin/cargo && -d /usr/lib/rustlib/src/rust/library \
            && -e /usr/bin/rust-lld && ( -z "$debian_libs" || -d "$debian_libs" ) ]]; then
        echo "build-plugins: $target through Debian ($(/usr/bin/rustc --version)), std rebuilt"
        [[ -n "$debian_libs" ]] && flags="$flags${flags:+ }-L native=$debian_libs"
        env RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 "$target_env=$flags" \
            /usr/bin/cargo build --profile plugin --target "$target" --target-dir "$target_dir" \
            -Zbuild-std=std,panic_abort "${pkg_args[@]}"
    else
        cat >&2 <<MSG
build-plugins: no toolchain that can build $target was found.
  With rustup:  rustup target add $target
  On Debian 12: apt-get install rustc-web cargo-web rust-web-src rust-web-llvm lld-22 wasi-libc
MSG
        exit 1
    fi
}

mkdir -p "$out_dir"
report() {
    printf 'build-plugins: %-20s %8d bytes  %s\n' "$1" "$(stat -c %s "$2")" "$2"
}
if [[ ${#core_packages[@]} -gt 0 ]]; then
    build wasm32-unknown-unknown "${core_packages[@]}"
    cargo build --quiet --release -p portcullis-componentize
    for p in "${core_packages[@]}"; do
        "$root/target/release/portcullis-componentize" \
            "$target_dir/wasm32-unknown-unknown/plugin/${p//-/_}.wasm" "$out_dir/$p.wasm"
        report "$p" "$out_dir/$p.wasm"
    done
fi
if [[ ${#wasi_packages[@]} -gt 0 ]]; then
    build wasm32-wasip2 "${wasi_packages[@]}"
    for p in "${wasi_packages[@]}"; do
        cp "$target_dir/wasm32-wasip2/plugin/${p//-/_}.wasm" "$out_dir/$p.wasm"
        report "$p" "$out_dir/$p.wasm"
    done
fi

# Python guests.
componentize_py="$root/target/tools/venv/bin/componentize-py"
for app in plugins/*/app.py examples/*/app.py tests/plugins/*/app.py; do
    [[ -f "$app" ]] || continue
    dir="$(dirname "$app")"
    name="$(basename "$dir")"
    if [[ ! -x "$componentize_py" ]]; then
        echo "build-plugins: $app needs componentize-py: run scripts/setup.sh" >&2
        exit 1
    fi
    out="$out_dir/$name.wasm"
    if [[ -f "$out" && "$out" -nt "$app" && "$out" -nt "$root/wit/policy.wit" ]]; then
        printf 'build-plugins: %-20s up to date\n' "$name"
        continue
    fi
    (cd "$dir" && "$componentize_py" -d "$root/wit" -w policy componentize app -o "$out" >/dev/null)
    printf 'build-plugins: %-20s %8d bytes  %s\n' "$name" "$(stat -c %s "$out")" "$out"
done
