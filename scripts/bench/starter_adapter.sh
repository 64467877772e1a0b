#!/bin/sh
# Server::Starter adapter for the benchmark: start_server passes its
# listening socket as SERVER_STARTER_PORT=HOST:PORT=FD, while the demo server
# (like any socket-activated server) takes it from fd 3 with LISTEN_FDS and
# LISTEN_PID. This moves the first socket named there to fd 3 (the benchmark
# asks start_server for fd 3 with --port=HOST:PORT=3), sets the variables and
# execs the command, so the pid (which start_server signals) stays the same.
# POSIX sh on purpose: on the benchmark's machine a demo server exec'd
# through bash showed about half the latency at a handover than one exec'd
# directly or through sh, env or perl, under start_server and the supervisor
# alike; the comparison must not depend on that.
# Usage: starter_adapter.sh CMD [ARGS...]
set -eu
first=${SERVER_STARTER_PORT%%;*}
fd=${first##*=}
case $fd in
[0-9]) ;;
*)
    echo "starter_adapter: want a single-digit fd in SERVER_STARTER_PORT (start_server --port=HOST:PORT=3), got '${SERVER_STARTER_PORT:-}'" >&2
    exit 1
    ;;
esac
if [ "$fd" != 3 ]; then
    eval "exec 3<&$fd $fd<&-"
fi
unset LISTEN_FDNAMES
LISTEN_FDS=1
LISTEN_PID=$$
# The demo server names its generation in each response.
SUPERVISOR_GENERATION=${SERVER_STARTER_GENERATION:-0}
export LISTEN_FDS LISTEN_PID SUPERVISOR_GENERATION
exec "$@"
