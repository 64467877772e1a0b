#!/usr/bin/env bash
# The static binary: a fully static x86_64 `supervisor` (glibc static-pie),
# stripped, for containers built FROM scratch or distroless, with its
# SHA-256 beside it.
#
#   scripts/dist.sh            # -> target/dist/supervisor-VERSION-x86_64-linux-static{,.sha256}
#
# It needs no C library at run time and no /etc: --user and --group are
# read from /etc/passwd and /etc/group directly (numbers need no file;
# see docs/containers.md). Runtime files (the control and notify sockets)
# go to $RUNTIME_DIRECTORY, else $XDG_RUNTIME_DIR, else /tmp, which must
# then exist and be writable.
#
# glibc's static libraries come with libc6-dev (there with gcc). The musl
# target is not used: it needs a rustup target this toolchain may lack.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=$(uname -m)
[ "$arch" = x86_64 ] || { echo "dist.sh: builds for x86_64 only (this is $arch)" >&2; exit 1; }
target=x86_64-unknown-linux-gnu
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# --target keeps the flag off build scripts and proc macros (serde's
# derive), which must stay dynamic.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C strip=symbols" \
    cargo build --release --locked --target "$target" -p hot-supervisor --bin supervisor
bin="target/$target/release/supervisor"
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q 'statically linked'; then
    echo "dist.sh: $bin is not static:" >&2
    ldd "$bin" >&2
    exit 1
fi
mkdir -p target/dist
out="target/dist/supervisor-$version-$arch-linux-static"
cp "$bin" "$out"
(cd target/dist && sha256sum "$(basename "$out")" >"$(basename "$out").sha256")
size=$(stat -c %s "$out")
echo "$out ($size bytes)"
cat "$out.sha256"
