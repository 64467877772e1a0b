#!/usr/bin/env bash
# Build the Debian package, check it, install it, use it, remove it (.ci/run
# calls this; it needs root for dpkg -i). Checks:
# - lintian reports no error (scripts/deb.sh fails otherwise);
# - no file in common with Debian's `supervisor` package (supervisord),
#   when apt can download it, so that the two install side by side;
# - after dpkg -i: `supervisor --version`, `man -w supervisor` (section 8),
#   the three completion files, the systemd units as examples only;
# - dpkg -r leaves none of its files behind.
set -euo pipefail
cd "$(dirname "$0")/.."
# (Printed as it comes; not with `tee /dev/stderr`, which truncates a log
# file that stderr is redirected to.)
built=$(mktemp)
scripts/deb.sh | while IFS= read -r line; do
    printf '%s\n' "$line"
    printf '%s\n' "$line" >>"$built"
done
out=$(sed -n 's/ (.* bytes)$//p' "$built" | grep '\.deb$' | tail -1)
rm -f "$built"
[ -f "$out" ] || { echo "deb_check: no package built" >&2; exit 1; }
ours=$(dpkg-deb -c "$out" | awk '{print $6}' | sed 's|^\./|/|' | grep -v '/$' | sort)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if (cd "$tmp" && apt-get download supervisor >/dev/null 2>&1); then
    theirs=$(dpkg-deb -c "$tmp"/supervisor_*.deb | awk '{print $6}' | sed 's|^\./|/|' | grep -v '/$' | sort)
    common=$(comm -12 <(echo "$ours") <(echo "$theirs"))
    if [ -n "$common" ]; then
        echo "deb_check: files in common with Debian's supervisor package:" >&2
        echo "$common" >&2
        exit 1
    fi
    echo "deb_check: no file in common with Debian's supervisor package ($(echo "$theirs" | wc -l) files)"
else
    echo "deb_check: could not download Debian's supervisor package; the overlap check was not made" >&2
fi
if dpkg -s hot-supervisor >/dev/null 2>&1; then
    echo "deb_check: hot-supervisor is installed already; remove it first" >&2
    exit 1
fi
dpkg -i "$out"
removed=0
cleanup() { [ "$removed" = 1 ] || dpkg -r hot-supervisor >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
/usr/bin/supervisor --version
man_path=$(man -w supervisor 2>/dev/null || man -w 8 supervisor)
case "$man_path" in
    */man8/supervisor.8.gz) echo "deb_check: man page at $man_path" ;;
    *) echo "deb_check: man -w supervisor found $man_path, not ours" >&2; exit 1 ;;
esac
for f in /usr/share/bash-completion/completions/supervisor \
    /usr/share/zsh/vendor-completions/_supervisor \
    /usr/share/fish/vendor_completions.d/supervisor.fish \
    /usr/share/doc/hot-supervisor/examples/systemd/myapp.service \
    /usr/share/doc/hot-supervisor/copyright; do
    [ -s "$f" ] || { echo "deb_check: $f is missing" >&2; exit 1; }
done
if echo "$ours" | grep -q '^/lib/systemd\|^/usr/lib/systemd\|^/etc/'; then
    echo "deb_check: the package installs a unit or configuration:" >&2
    echo "$ours" | grep '^/lib/systemd\|^/usr/lib/systemd\|^/etc/' >&2
    exit 1
fi
dpkg -r hot-supervisor
removed=1
left=$(for f in $ours; do [ -e "$f" ] && echo "$f"; done || true)
if [ -n "$left" ]; then
    echo "deb_check: left behind after dpkg -r:" >&2
    echo "$left" >&2
    exit 1
fi
echo "deb_check: built, installed, used and removed $(basename "$out")"
