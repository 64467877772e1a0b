#!/usr/bin/env bash
# The Debian package, built with dpkg-deb from a release build (no
# cargo-deb: one tool less to install, and every file's place is written
# here where it can be read):
#
#   scripts/deb.sh     # -> target/dist/hot-supervisor_VERSION-1_ARCH.deb
#
# The package is `hot-supervisor`, not `supervisor` (Debian's package of
# supervisord), and shares no file with it, so the two install side by
# side: the binary is /usr/bin/supervisor (theirs are supervisord and
# supervisorctl), the man page is supervisor(8) (theirs is supervisor(1)).
# It ships the man page, bash/zsh/fish completions, the README, docs/ and
# the systemd units as examples (no service is installed or enabled).
#
# Needs dpkg-dev (dpkg-shlibdeps, for the Depends line) and gzip; `lintian`
# checks the result when it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
debversion="$version-1"
arch=$(dpkg --print-architecture)
pkg=hot-supervisor
cargo build --release --locked -p hot-supervisor --bin supervisor
bin=target/release/supervisor

stage=$(mktemp -d "${TMPDIR:-/tmp}/deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
p="$stage/$pkg"
install -d "$p/DEBIAN" "$p/usr/bin" "$p/usr/share/man/man8" \
    "$p/usr/share/bash-completion/completions" "$p/usr/share/zsh/vendor-completions" \
    "$p/usr/share/fish/vendor_completions.d" "$p/usr/share/doc/$pkg/docs" \
    "$p/usr/share/doc/$pkg/examples/systemd"
install -m 0755 "$bin" "$p/usr/bin/supervisor"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$p/usr/bin/supervisor"
"$bin" --generate man | gzip -9n >"$p/usr/share/man/man8/supervisor.8.gz"
"$bin" --generate complete-bash >"$p/usr/share/bash-completion/completions/supervisor"
"$bin" --generate complete-zsh >"$p/usr/share/zsh/vendor-completions/_supervisor"
"$bin" --generate complete-fish >"$p/usr/share/fish/vendor_completions.d/supervisor.fish"
install -m 0644 README.md "$p/usr/share/doc/$pkg/README.md"
install -m 0644 docs/*.md "$p/usr/share/doc/$pkg/docs/"
install -m 0644 systemd/myapp.service systemd/myapp.socket systemd/README.md \
    "$p/usr/share/doc/$pkg/examples/systemd/"

cat >"$p/usr/share/doc/$pkg/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: hot-supervisor
Source: https://example.invalid/hot-supervisor

Files: *
Copyright: 2026 The hot-supervisor developers
License: MIT or Apache-2.0

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the "Software"), to
 deal in the Software without restriction, including without limitation the
 rights to use, copy, modify, merge, publish, distribute, sublicense, and/or
 sell copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING
 FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS
 IN THE SOFTWARE.

License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 can be
 found in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
date=$(git log -1 --format=%aD 2>/dev/null || date -R)
printf '%s (%s) unstable; urgency=medium\n\n  * Built from the hot-supervisor repository.\n\n -- hot-supervisor developers <hot-supervisor@example.org>  %s\n' \
    "$pkg" "$debversion" "$date" | gzip -9n >"$p/usr/share/doc/$pkg/changelog.Debian.gz"

# The shared libraries it needs, as dpkg-shlibdeps sees them.
mkdir -p "$stage/src/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$pkg" "$pkg" >"$stage/src/debian/control"
depends=$(cd "$stage/src" && dpkg-shlibdeps -O "$p/usr/bin/supervisor" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
size=$(du -k -s --exclude=DEBIAN "$p" | cut -f1)
cat >"$p/DEBIAN/control" <<CONTROL
Package: $pkg
Version: $debversion
Architecture: $arch
Maintainer: hot-supervisor developers <hot-supervisor@example.org>
Installed-Size: $size
Depends: $depends
Section: admin
Priority: optional
Homepage: https://example.invalid/hot-supervisor
Description: zero-downtime restarts for network servers
 supervisor binds a server's listening sockets once and runs the server as
 a child that inherits them (systemd socket activation: LISTEN_FDS). On
 SIGHUP or "supervisor reload" it starts the new version on the same
 sockets, waits until it is ready (sd_notify READY=1, or a TCP or HTTP
 probe), steers new connections to it, and only then stops and drains the
 old one, so no connection is refused or reset. A new version that fails
 to start never sees a client, and the old one keeps serving.
 .
 It runs as a command wrapper, a container entrypoint (PID 1) or under
 systemd, with workers, rolling and canary reloads, and in-place upgrades
 of itself. This package is not supervisord (package supervisor): the two
 install side by side.
CONTROL
find "$p/usr" -type d -exec chmod 0755 {} +
find "$p/usr" -type f -exec chmod 0644 {} +
chmod 0755 "$p/usr/bin/supervisor"
(cd "$p" && find usr -type f -print0 | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$p/DEBIAN/control" "$p/DEBIAN/md5sums"
mkdir -p "$root_dir/target/dist"
out="$root_dir/target/dist/${pkg}_${debversion}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$p" "$out" >/dev/null
echo "$out ($(stat -c %s "$out") bytes)"
if command -v lintian >/dev/null 2>&1; then
    # Errors fail the build; warnings and notes are printed.
    set +e
    lint=$(lintian --fail-on error --tag-display-limit 0 "$out" 2>&1)
    status=$?
    set -e
    printf '%s\n' "$lint" | grep -v '^running with root privileges' || true
    exit "$status"
fi
