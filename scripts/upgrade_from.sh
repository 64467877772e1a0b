#!/usr/bin/env bash
# An in-place upgrade from an older build to this tree's, under load:
#
#     scripts/upgrade_from.sh [REV]      # default 0940d0a
#
# Builds REV's supervisor (in a worktree of its own, removed afterwards) and
# this tree's supervisor, demo server and load generator (release), starts
# REV's supervisor around the demo server, puts load on it (8 keep-alive
# connections, 8 s), reloads once, replaces the binary with this tree's,
# runs `supervisor upgrade`, reloads again, and stops. Prints the upgrade's
# answer, the status after it and the load's report; exits 1 if the upgrade
# failed or any request did. Every process it starts is stopped by pid.
set -euo pipefail

rev=${1:-0940d0a}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
sv_pid=
load_pid=

cleanup() {
    [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
    if [ -n "$sv_pid" ] && kill -0 "$sv_pid" 2>/dev/null; then
        kill -TERM "$sv_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$sv_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$sv_pid" 2>/dev/null || true
    fi
    git -C "$root" worktree remove --force "$work/old" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "building $rev and this tree (release)" >&2
git -C "$root" worktree add --quiet --detach "$work/old" "$rev"
(cd "$work/old" && CARGO_TARGET_DIR="$work/old-target" cargo build --release --quiet --bin supervisor)
(cd "$root" && cargo build --release --quiet -p hot-supervisor --bin supervisor \
    --example demo_server --example load)
new="$root/target/release"

bin="$work/supervisor"
cp "$work/old-target/release/supervisor" "$bin"
ctl="$work/control.sock"
"$bin" --control "$ctl" --listen 127.0.0.1:0 --drain-timeout 5s -- "$new/examples/demo_server" \
    >"$work/log" 2>&1 &
sv_pid=$!
# Waiting for the first generation (polling its log: nothing else says it).
for _ in $(seq 100); do
    grep -q 'ready in' "$work/log" && break
    sleep 0.1
done
port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$work/log" | head -1 | cut -d: -f2)
[ -n "$port" ] || { cat "$work/log" >&2; echo "the old supervisor did not start" >&2; exit 1; }
echo "supervisor $rev (pid $sv_pid) on 127.0.0.1:$port" >&2

"$new/examples/load" --addr "127.0.0.1:$port" --connections 8 --duration 8s --json \
    >"$work/load.json" &
load_pid=$!
"$bin" reload --control "$ctl" --timeout 20s
# A deploy replaces the binary by rename, then asks for the upgrade.
cp "$new/supervisor" "$bin.new"
mv "$bin.new" "$bin"
status=0
"$new/supervisor" upgrade --control "$ctl" --timeout 20s || status=1
"$new/supervisor" reload --control "$ctl" --timeout 20s || status=1
"$new/supervisor" status --control "$ctl"
wait "$load_pid" || status=1
load_pid=
echo "load: $(cat "$work/load.json")"
"$new/supervisor" stop --control "$ctl" --timeout 30s || status=1
sv_pid=
exit "$status"
