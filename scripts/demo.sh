#!/usr/bin/env bash
# The main job, in one command: the supervisor runs the demo server on a
# free loopback port, a load generator keeps 64 connections busy for about
# 20 seconds, and six releases are deployed during the load (the supervisor
# runs `current/server`, a symlink switched to each release, then
# `supervisor reload` asks for a reload through the control socket and
# waits for its outcome). The third release is broken and exits at start:
# that reload fails and the release before it keeps serving. At the end:
# requests, failures, latency, each reload's answer, and `supervisor status`.
#
# Environment: DEMO_SECONDS (default 20), DEMO_CONNECTIONS (default 64).
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${DEMO_SECONDS:-20}
connections=${DEMO_CONNECTIONS:-64}

echo "building (release; about 1 minute on a fresh 2-core machine, seconds after that)..."
# Cargo's own progress lines (Compiling ...) go to stderr, so a first build
# does not look like a hang.
cargo build --release --bin supervisor --example demo_server --example load
bin=$PWD/target/release

work=$(mktemp -d "${TMPDIR:-/tmp}/supervisor-demo.XXXXXX")
sup_pid=""
load_pid=""
cleanup() {
    # Stop only what this script started, by pid.
    if [ -n "$load_pid" ] && kill -0 "$load_pid" 2>/dev/null; then
        kill -INT "$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    if [ -n "$sup_pid" ] && kill -0 "$sup_pid" 2>/dev/null; then
        kill -TERM "$sup_pid" 2>/dev/null || true
        wait "$sup_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 130' INT TERM

# Releases 1..7; release 3 is broken.
for v in 1 2 3 4 5 6 7; do
    mkdir -p "$work/v$v"
    if [ "$v" = 3 ]; then
        printf '#!/bin/sh\necho "release v3: config error: DATABASE_URL is not set" >&2\nexit 1\n' \
            >"$work/v$v/server"
    else
        printf '#!/bin/sh\nexec %s --delay 2ms --body "release v%s" "$@"\n' \
            "$bin/examples/demo_server" "$v" >"$work/v$v/server"
    fi
    chmod +x "$work/v$v/server"
done
ln -sfn "$work/v1" "$work/current"

log=$work/supervisor.log
ctl=$work/control.sock
"$bin/supervisor" --listen http=127.0.0.1:0 --ready notify --ready-timeout 10s \
    --drain-timeout 10s --control "$ctl" -- "$work/current/server" 2>"$log" &
sup_pid=$!

# Wait for an event in the supervisor's log, with a deadline.
wait_for() {
    local pattern=$1 deadline=$((SECONDS + ${2:-15}))
    until grep -q -- "$pattern" "$log"; do
        if [ $SECONDS -ge $deadline ] || ! kill -0 "$sup_pid" 2>/dev/null; then
            echo "gave up waiting for '$pattern'; supervisor log:" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.05
    done
}

wait_for "listening on 127.0.0.1:"
port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -n 1)
wait_for "generation 1 (pid [0-9]*) ready in"
echo "supervisor (pid $sup_pid) serving release v1 on 127.0.0.1:$port"
echo "load: $connections connections for ${seconds}s; deploying v2..v7 (v3 is broken)"

"$bin/examples/load" --addr "127.0.0.1:$port" --connections "$connections" \
    --duration "${seconds}s" >"$work/load.txt" &
load_pid=$!

interval=$(awk -v s="$seconds" 'BEGIN { printf "%.2f", s / 7 }')
reloads=()
for v in 2 3 4 5 6 7; do
    sleep "$interval" # pacing of the deploys, not synchronisation
    ln -sfn "$work/v$v" "$work/current"
    # Synchronous: returns once the new generation is ready (exit 0) or has
    # failed (exit 1, with the reason).
    if answer=$("$bin/supervisor" reload --control "$ctl" --timeout 20s 2>&1); then
        reloads+=("v$v  ok      $answer")
    else
        reloads+=("v$v  FAILED  ${answer#supervisor: reload failed: }")
    fi
done

set +e
wait "$load_pid"
load_status=$?
set -e
load_pid=""
"$bin/supervisor" status --control "$ctl" >"$work/status.txt"
# Graceful stop through the control socket; returns once the supervisor
# has exited.
"$bin/supervisor" stop --control "$ctl" --timeout 30s >/dev/null
wait "$sup_pid"
sup_status=$?
sup_pid=""

echo
echo "== load =="
cat "$work/load.txt"
echo
echo "== reloads (release, outcome, the answer of \`supervisor reload\`) =="
printf '  %s\n' "${reloads[@]}"
echo
echo "== supervisor status, after the load =="
sed 's/^/  /' "$work/status.txt"
echo
echo "== drains =="
grep -o "generation [0-9]* (pid [0-9]*) drained in .*" "$log" | sed 's/^/  /'
echo
echo "supervisor exited with status $sup_status"
if [ "$load_status" -eq 0 ]; then
    echo "RESULT: zero failed requests across ${#reloads[@]} reloads"
else
    echo "RESULT: some requests failed (see the load report above)"
fi
exit "$load_status"
