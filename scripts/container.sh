#!/usr/bin/env bash
# Build the container image (Containerfile) with podman, without a registry: stage the release
# binary, the shared libraries it links (from ldd), CA certificates and the first-party plugins
# under target/container/, then `podman build` FROM scratch.
#
#   scripts/container.sh [TAG]     # default TAG: portcullis:<version of the host crate>
#
# Environment: PORTCULLIS_BIN=path (default: cargo build --release, then target/release/portcullis);
# CONTAINERS_CONF (default: target/tools/containers.conf from scripts/setup.sh, which also
# installs podman).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
tag="${1:-portcullis:$version}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/target/tools/containers.conf}"
command -v podman >/dev/null || { echo "container: podman missing: run scripts/setup.sh" >&2; exit 1; }

bin="${PORTCULLIS_BIN:-}"
if [[ -z "$bin" ]]; then
    cargo build --release -p portcullis
    bin="$root/target/release/portcullis"
fi
plugins=()
for name in guard mask; do
    plugin="$root/target/plugins/$name.wasm"
    [[ -f "$plugin" ]] || { echo "container: $plugin missing: run scripts/build-plugins.sh" >&2; exit 1; }
    plugins+=("$plugin")
done

context="$root/target/container"
rm -rf "$context"
rootfs="$context/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/usr/share/portcullis/plugins" "$rootfs/etc/ssl/certs" \
    "$rootfs/etc/portcullis" "$rootfs/tmp" "$context/state"
chmod 1777 "$rootfs/tmp"
# Debug info stays in target/; the image gets the stripped binary.
objcopy --strip-debug "$bin" "$rootfs/usr/local/bin/portcullis"
# The dynamic loader and every library the binary links, at the paths ldd reports.
ldd "$bin" | awk '/=> \// {print $3} /^[ \t]*\/[^ ]+ \(/ {print $1}' | sort -u | while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
cp "${plugins[@]}" "$rootfs/usr/share/portcullis/plugins/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nportcullis:x:65532:65532:portcullis:/var/lib/portcullis:/sbin/nologin\n' \
    > "$rootfs/etc/passwd"
printf 'root:x:0:\nportcullis:x:65532:\n' > "$rootfs/etc/group"
cp Containerfile "$context/Containerfile"

podman build --quiet --file "$context/Containerfile" --tag "$tag" "$context" >/dev/null
echo "container: built $tag ($(du -sh "$rootfs" | cut -f1) staged)"
