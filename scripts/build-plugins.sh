#!/usr/bin/env bash
# Build every guest plugin (first-party, examples, test-only) into a component:
#   target/plugins/<name>.wasm
#
# Rust guests: every cdylib crate under plugins/, examples/, tests/plugins/ (name: the crate's).
# Python guests: every directory under plugins/, examples/, tests/plugins/ holding an app.py
# (name: the directory's), built with componentize-py from target/tools/venv (scripts/setup.sh).
#
# Route, chosen by itself, never downloading a toolchain:
#   1. rustup's toolchain has the wasm32-wasip2 standard library (`rustup target add wasm32-wasip2`)
#   2. Debian's rustc-web with its std source (packages: rustc-web cargo-web rust-web-src
#      rust-web-llvm lld-22 wasi-libc), std rebuilt for the target with -Zbuild-std
# Otherwise it stops and says what to install.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="$root/target/guest"
out_dir="$root/target/plugins"

# Every cdylib crate under plugins/, examples/ and tests/plugins/ is a guest.
packages=()
for manifest in plugins/*/Cargo.toml examples/*/Cargo.toml tests/plugins/*/Cargo.toml; do
    [[ -f "$manifest" ]] || continue
    grep -q 'crate-type = \["cdylib"\]' "$manifest" || continue
    packages+=("$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n1)")
done
if [[ ${#packages[@]} -eq 0 ]]; then
    echo "build-plugins: no guest crates found" >&2
    exit 1
fi
pkg_args=()
for p in "${packages[@]}"; do pkg_args+=(-p "$p"); done

sysroot="$(rustc --print sysroot 2>/dev/null || true)"
if [[ -n "$sysroot" && -d "$sysroot/lib/rustlib/wasm32-wasip2/lib" ]]; then
    echo "build-plugins: rustup route (wasm32-wasip2 std found in $sysroot)"
    cargo build --profile plugin --target wasm32-wasip2 --target-dir "$target_dir" "${pkg_args[@]}"
elif [[ -x /usr/bin/rustc && -x /usr/bin/cargo && -d /usr/lib/rustlib/src/rust/library \
        && -d /usr/lib/wasm32-wasi && -e /usr/bin/rust-lld ]]; then
    echo "build-plugins: Debian route ($(/usr/bin/rustc --version)), std rebuilt for wasm32-wasip2"
    env RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
        CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-L native=/usr/lib/wasm32-wasi" \
        /usr/bin/cargo build --profile plugin --target wasm32-wasip2 --target-dir "$target_dir" \
        -Zbuild-std=std,panic_abort "${pkg_args[@]}"
else
    cat >&2 <<'MSG'
build-plugins: no toolchain that can build wasm32-wasip2 components was found.
  With rustup:  rustup target add wasm32-wasip2
  On Debian 12: apt-get install rustc-web cargo-web rust-web-src rust-web-llvm lld-22 wasi-libc
MSG
    exit 1
fi

mkdir -p "$out_dir"
for p in "${packages[@]}"; do
    built="$target_dir/wasm32-wasip2/plugin/${p//-/_}.wasm"
    cp "$built" "$out_dir/$p.wasm"
    printf 'build-plugins: %-20s %8d bytes  %s\n' "$p" "$(stat -c %s "$built")" "$out_dir/$p.wasm"
done

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
