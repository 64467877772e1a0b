#!/usr/bin/env python3
"""HTTP/1.1 load generator for the hand-off benchmark (Python stdlib only).

    python3 hload.py --port PORT [--connections 16] [--duration 10] [--close] [--samples FILE]

Each connection is a thread sending GET requests back to back: keep-alive
(it reconnects when a response says `Connection: close` or the server
closed the connection after a complete response), or with --close one
connection per request, sending `Connection: close`. A request that got no
complete response is a failure, by kind: connect (refused or timed out),
write, read (reset, or EOF before a complete response: on a reused
keep-alive connection too), timeout; a status other than 2xx is counted
apart. After a failure a thread pauses 10 ms (as examples/load does), so a
down server is not hammered and the counts do not measure retry speed.

With --samples FILE it writes every completed request (answered or failed)
as `start_offset_us latency_us code` (code: the HTTP status, or -1 connect,
-2 write, -3 read, -4 timeout), after a first line `# start
monotonic_ns=<N> realtime_ns=<N>`; the offset runs from that start on
CLOCK_MONOTONIC. A request's latency runs from its connect (new
connection) or its write to the end of its response, or to its failure.

The report is one JSON object on stdout. SIGINT ends the run early.
"""

import argparse
import json
import math
import signal
import socket
import sys
import threading
import time

KINDS = {-1: "connect", -2: "write", -3: "read", -4: "timeout"}
PAUSE = 0.010


class Failed(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def read_response(sock: socket.socket) -> tuple[int, bool]:
    """(status, the server closes the connection after it)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise Failed(-3)
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    lines = buf[:end].decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise Failed(-3) from None
    length, close = None, lines[0].startswith("HTTP/1.0")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            close = value == "close" or (close and value != "keep-alive")
    body = len(buf) - end
    if length is None:  # until EOF
        while sock.recv(65536):
            pass
        return status, True
    while body < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise Failed(-3)
        body += len(chunk)
    return status, close


def client(port: int, close: bool, deadline: float, start_ns: int, stop: threading.Event, out: list) -> None:
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n"
    sock = None
    connects = 0
    while not stop.is_set() and time.monotonic() < deadline:
        t0 = time.monotonic_ns()
        code = 0
        try:
            if sock is None:
                sock = socket.socket()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(10)
                try:
                    sock.connect(("127.0.0.1", port))
                except socket.timeout:
                    raise Failed(-1) from None
                except OSError:
                    raise Failed(-1) from None
                connects += 1
            try:
                sock.sendall(request)
            except OSError:
                raise Failed(-2) from None
            try:
                code, server_closes = read_response(sock)
            except socket.timeout:
                raise Failed(-4) from None
            except OSError:
                raise Failed(-3) from None
            if close or server_closes:
                sock.close()
                sock = None
        except Failed as f:
            code = f.code
            if sock is not None:
                sock.close()
                sock = None
        t1 = time.monotonic_ns()
        if stop.is_set() and code < 0:
            break  # abandoned at the end, not a failure
        out.append(((t0 - start_ns) // 1000, (t1 - t0) // 1000, code))
        if code < 0:
            time.sleep(PAUSE)
    if sock is not None:
        sock.close()
    out.append(("connects", connects))


def main() -> int:
    ap = argparse.ArgumentParser(description="HTTP load generator with per-request samples")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds")
    ap.add_argument("--close", action="store_true", help="one connection per request, Connection: close")
    ap.add_argument("--samples", help="write every request to this file")
    args = ap.parse_args()
    sys.setswitchinterval(0.0005)  # threads that wait on the GIL skew latency less
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    start_ns, real_ns = time.monotonic_ns(), time.time_ns()
    deadline = time.monotonic() + args.duration
    outs = [[] for _ in range(args.connections)]
    threads = [
        threading.Thread(target=client, args=(args.port, args.close, deadline, start_ns, stop, o), daemon=True)
        for o in outs
    ]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)
    samples, connects = [], 0
    for o in outs:
        for item in o:
            if item[0] == "connects":
                connects += item[1]
            else:
                samples.append(item)
    samples.sort()
    failures = {k: 0 for k in KINDS.values()}
    ok, non_2xx, lat = 0, 0, []
    for _, latency, code in samples:
        if code < 0:
            failures[KINDS[code]] += 1
        elif 200 <= code < 300:
            ok += 1
            lat.append(latency)
        else:
            non_2xx += 1
    lat.sort()

    def q(p: float) -> float:
        return lat[max(0, math.ceil(p * len(lat)) - 1)] / 1000 if lat else 0.0

    if args.samples:
        with open(args.samples, "w") as f:
            f.write(f"# start monotonic_ns={start_ns} realtime_ns={real_ns}\n")
            f.writelines(f"{a} {b} {c}\n" for a, b, c in samples)
    report = {
        "requests": len(samples), "ok": ok, "non_2xx": non_2xx, "failures": failures,
        "failed": sum(failures.values()), "connects": connects,
        "latency_ms": {"p50": q(0.5), "p99": q(0.99), "max": q(1.0)},
    }  # fmt: skip
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
