#!/usr/bin/env bash
# Builds the `raftgate:local` image from local files only (no registry needed): the release
# binary plus the shared libraries it links, on an empty (`scratch`) base.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cargo build --release -p raftgate --manifest-path "$root/Cargo.toml"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
bin="$root/target/release/raftgate"
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/tmp"
cp "$bin" "$ctx/rootfs/usr/local/bin/raftgate"
# Copy the dynamic loader and every library the binary needs, keeping their paths.
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/usr/local/bin/raftgate"]
DOCKERFILE
docker build -t raftgate:local "$ctx"
