"""A server that needs 3 s from its start to its first accept and sends no
READY=1 (an application that loads a large model or warms a cache before it
listens), for the readiness table of scripts/real_servers.py --ready.

It takes its listener from fd 3 (LISTEN_FDS), answers every request with
`generation G` and `Connection: close`, and on SIGTERM stops accepting,
finishes the connection in hand and exits 0. Also the slow starter of
hot-supervisor's tests/steer.rs, which sets:

- SLOW_START_SECONDS: the pause before the first accept (default 3);
- SLOW_START_FROM: the first generation that pauses (default 1);
- SLOW_START_MARKER: a path prefix; the file PREFIX<generation> is created
  just before the first accept.
"""
import os
import signal
import socket
import time

gen = os.environ.get("SUPERVISOR_GENERATION", "0")
stopping = False


def stop(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
if int(gen) >= int(os.environ.get("SLOW_START_FROM", "1")):
    time.sleep(float(os.environ.get("SLOW_START_SECONDS", "3")))
marker = os.environ.get("SLOW_START_MARKER")
if marker:
    open(marker + gen, "w").close()
sock = socket.socket(fileno=3)
sock.settimeout(0.05)
body = ("generation %s\n" % gen).encode()
reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
while not stopping:
    try:
        conn, _ = sock.accept()
    except (socket.timeout, BlockingIOError, InterruptedError):
        continue
    conn.settimeout(5)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        if data:
            conn.sendall(reply)
    except OSError:
        pass
    conn.close()
