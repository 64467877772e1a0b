#!/usr/bin/env python3
"""A benchmark child with a NAIVE drain, Python standard library only.

    supervisor -l 127.0.0.1:8080 --ready notify -- python3 naive_drain.py [--workers 8] [--delay-ms 1]

It is built the way many real servers are (gunicorn's gthread worker,
uvicorn, waitress): one I/O thread accepts eagerly and hands every new
connection, and every keep-alive connection that turns readable again, to a
pool of worker threads through a queue. It takes the listener from fd 3,
sends READY=1 to NOTIFY_SOCKET once it serves, and answers HTTP/1.1 with
`generation <G> pid <PID>` after --delay-ms, keeping the connection alive
unless the client sends `Connection: close`.

Its drain is the naive one that the benchmark is about: on SIGTERM it
closes its listener and, AT ONCE, every connection it holds without a
complete request yet: connections accepted but still waiting in the queue
for a worker (their request may well be in the socket buffer already), and
idle keep-alive connections. It then waits for the requests in flight,
closes their connections after the response, and exits 0. With a listener
shared between generations, every connection it accepted just before the
signal is lost; the closes of unread connections reset them.
"""

import argparse
import os
import queue
import selectors
import signal
import socket
import sys
import threading
import time

parser = argparse.ArgumentParser(description="HTTP child with a naive drain (benchmark only)")
parser.add_argument("--workers", type=int, default=8, help="worker threads (default 8)")
parser.add_argument("--delay-ms", type=float, default=1.0, help="processing time per request (default 1)")
args = parser.parse_args()

if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
    sys.exit("naive_drain.py: no inherited listener (LISTEN_PID/LISTEN_FDS): run me under the supervisor")
GENERATION = os.environ.get("SUPERVISOR_GENERATION", "0")
BODY = f"generation {GENERATION} pid {os.getpid()}\n".encode()
DELAY = args.delay_ms / 1000

listener = socket.socket(fileno=3)
listener.setblocking(False)  # possibly shared with other generations: never block in accept

work: "queue.Queue[socket.socket | None]" = queue.Queue()  # connections waiting for a worker
back: "queue.Queue[socket.socket]" = queue.Queue()  # keep-alive connections, back to the I/O thread
wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
stopping = threading.Event()
lock = threading.Lock()
queued: set[socket.socket] = set()  # in `work`, not taken by a worker yet


def wake() -> None:
    try:
        os.write(wake_w, b"x")
    except BlockingIOError:
        pass


def hand_to_worker(conn: socket.socket) -> None:
    with lock:
        queued.add(conn)
    work.put(conn)


def io_thread() -> None:
    """Accepts eagerly; watches idle keep-alive connections."""
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "listener")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    while not stopping.is_set():
        for key, _ in sel.select():
            if key.data == "listener":
                while True:
                    try:
                        conn, _ = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    conn.setblocking(True)
                    hand_to_worker(conn)
            elif key.data == "wake":
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
                while True:
                    try:
                        conn = back.get_nowait()
                    except queue.Empty:
                        break
                    if stopping.is_set():
                        conn.close()
                    else:
                        sel.register(conn, selectors.EVENT_READ, "idle")
            else:  # an idle keep-alive connection has data (or EOF)
                sel.unregister(key.fileobj)
                hand_to_worker(key.fileobj)
    # The naive drain: stop accepting, close every idle connection at once.
    for key in list(sel.get_map().values()):
        if key.data == "idle":
            key.fileobj.close()
    sel.close()
    listener.close()
    while True:  # keep-alive connections handed back meanwhile
        try:
            back.get_nowait().close()
        except queue.Empty:
            break


def read_request(conn: socket.socket, buf: bytes) -> tuple[bytes, bytes] | None:
    """One request head (no bodies: GET only), and what follows it."""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
        if len(buf) > 65536:
            return None
    end = buf.index(b"\r\n\r\n") + 4
    return buf[:end], buf[end:]


def worker() -> None:
    while True:
        conn = work.get()
        if conn is None:
            return
        with lock:
            if conn not in queued:  # closed by the drain meanwhile
                continue
            queued.discard(conn)
        try:
            conn.settimeout(30)
            got = read_request(conn, b"")
            if got is None:
                conn.close()
                continue
            head, _rest = got
            time.sleep(DELAY)
            close = stopping.is_set() or b"connection: close" in head.lower()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                + str(len(BODY)).encode()
                + (b"\r\nConnection: close" if close else b"")
                + b"\r\n\r\n"
                + BODY
            )
        except OSError:
            conn.close()
            continue
        if close:
            conn.close()
        else:
            back.put(conn)
            wake()


def notify(state: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(state.encode(), "\0" + path[1:] if path.startswith("@") else path)


# SIGTERM is taken by the main thread alone, with sigwait: blocked before any
# thread starts (the threads inherit the mask).
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
io = threading.Thread(target=io_thread)
io.start()
workers = [threading.Thread(target=worker) for _ in range(args.workers)]
for w in workers:
    w.start()
notify("READY=1")
signal.sigwait({signal.SIGTERM, signal.SIGINT})
notify("STOPPING=1")
stopping.set()
wake()
io.join()
# Every accepted connection whose request no worker has taken yet: closed now.
with lock:
    unread = list(queued)
    queued.clear()
for conn in unread:
    conn.close()
for _ in workers:
    work.put(None)
for w in workers:  # the requests in flight finish
    w.join()
