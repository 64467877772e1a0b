#!/usr/bin/env bash
# The benchmark (not part of the tests): installs wrk and Server::Starter
# (Debian packages wrk and libserver-starter-perl) when they are missing,
# raises the soft limit on open files to the hard limit (the scale runs bind
# 1,000 listeners), builds the supervisor, the demo server and the load
# generator in release mode, then runs scripts/bench.py, which measures the
# supervisor against a naive restart and start_server on loopback, prints a
# table and writes it as CSV (default target/bench/results.csv). It takes
# about 11 minutes on 2 cores (--handoff-only: the steer/shared comparison
# alone, about 5). Arguments go to bench.py (--csv FILE, --runs N, --quick,
# --handoff-only, --bin-dir DIR, --help). With --bin-dir DIR nothing is
# built: DIR/supervisor, DIR/examples/demo_server and DIR/examples/load are
# measured as they are (e.g. an older build, to compare before and after).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v start_server >/dev/null 2>&1 || need+=(libserver-starter-perl)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; }; then
        echo "could not install ${need[*]}: the comparisons that need them are skipped" >&2
    fi
fi
command -v python3 >/dev/null 2>&1 || { echo "python3 is required" >&2; exit 1; }

ulimit -n "$(ulimit -Hn)" 2>/dev/null || echo "could not raise the open-files limit; the 1,000-listener run may fail" >&2

prebuilt=
for arg in "$@"; do
    case "$arg" in --bin-dir|--bin-dir=*) prebuilt=1 ;; esac
done
if [ -z "$prebuilt" ]; then
    echo "building (release)..."
    cargo build --release --quiet --bin supervisor --example demo_server --example load
fi

exec python3 scripts/bench.py "$@"
