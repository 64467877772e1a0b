#!/usr/bin/env python3
"""The test child of tests/steer.rs: a small socket-activated server in
Python's standard library whose failings a test chooses.

It serves fd 3 (refusing to start unless LISTEN_PID is its own pid) and
answers every request, whatever its path, with

    generation <G> pid <PID> nodelay <0|1>

where nodelay is getsockopt(TCP_NODELAY) on the accepted connection.

While it runs it accepts eagerly: one thread accepts and starts a thread
per connection, so connections are accepted before their request is read
(`--hold MS` makes each connection wait that long before its request is
read). On its stop signal (`--drain`):

- `naive`: it stops accepting, closes at once every accepted connection
  whose request has not been read completely, and exits 0 when the requests
  in flight have been answered. That is what many servers do, and it loses
  every connection it accepted but had not read yet.
- `none`: SIGTERM's default action kills it at once.

What a generation does (`--mode-file PATH`, read at start; `ok` if absent):

- `ok`: serve;
- `exit`: exit 1 at once (a failed start); `--fail-generations 3,7` does
  the same for the generations listed;
- `500`: answer every request with 500;
- `silent`: accept connections and never answer;
- `noaccept`: never accept;
- `late-exit:MS`: never accept, never send READY=1, and exit 1 after MS
  milliseconds (a start that fails late, with clients queued meanwhile);
  `--late-exit G:MS` does the same for generation G;
- `hold-exit:MS`: accept connections and hold them unanswered, never send
  READY=1, and after MS milliseconds write the number of connections it
  accepted to `--count-file` and exit 1.

`--notify` sends READY=1 once it accepts (never in the modes `noaccept`
and `silent`, which are never ready). `--udp`: fd 3 is a UDP socket;
every datagram is answered with `generation <G> pid <PID> <datagram>`.
"""
import argparse
import os
import select
import signal
import socket
import sys
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("--hold", type=int, default=0, metavar="MS")
parser.add_argument("--drain", choices=["naive", "none"], default="naive")
parser.add_argument("--notify", action="store_true")
parser.add_argument("--mode-file")
parser.add_argument("--fail-generations", default="")
parser.add_argument("--late-exit", default="", metavar="G:MS")
parser.add_argument("--count-file")
parser.add_argument("--udp", action="store_true")
args = parser.parse_args()

if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
    sys.exit("steer_server.py: no inherited listener: run me under the supervisor")
generation = int(os.environ.get("SUPERVISOR_GENERATION", "0"))
pid = os.getpid()

mode = "ok"
if args.mode_file and os.path.exists(args.mode_file):
    with open(args.mode_file) as f:
        mode = f.read().strip()
if str(generation) in args.fail_generations.split(","):
    mode = "exit"
if args.late_exit.split(":")[0] == str(generation):
    mode = "late-exit:" + args.late_exit.split(":")[1]
if mode == "exit":
    sys.exit(f"steer_server.py: generation {generation} fails to start")


def notify(state):
    path = os.environ.get("NOTIFY_SOCKET")
    if path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(state.encode(), "\0" + path[1:] if path.startswith("@") else path)


if args.udp:
    sock = socket.socket(fileno=3)
    if args.notify:
        notify("READY=1")
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(f"generation {generation} pid {pid} ".encode() + data, peer)

listener = socket.socket(fileno=3)
# In shared mode another generation may take the connection this process
# was woken for: a blocking accept would hang.
listener.setblocking(False)

lock = threading.Condition()
pending = set()  # accepted, request not read completely
inflight = 0  # requests read, answer not sent yet
draining = False
accepted = 0
wake_r, wake_w = os.pipe()


def acceptor():
    global accepted
    while True:
        ready, _, _ = select.select([listener, wake_r], [], [])
        if wake_r in ready:
            return
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            continue
        with lock:
            accepted += 1
            if draining:
                conn.close()
                continue
            pending.add(conn)
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def handle(conn):
    global inflight
    try:
        if mode.startswith("hold-exit") or mode == "silent":
            while conn.recv(4096):
                pass
            return
        if args.hold:
            time.sleep(args.hold / 1000)
        nodelay = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        with lock:
            if conn not in pending:
                return  # closed by the drain
            pending.discard(conn)
            inflight += 1
        try:
            status = "500 Internal Server Error" if mode == "500" else "200 OK"
            body = f"generation {generation} pid {pid} nodelay {nodelay}\n"
            conn.sendall(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode()
            )
        finally:
            with lock:
                inflight -= 1
                lock.notify_all()
    except OSError:
        pass
    finally:
        with lock:
            pending.discard(conn)
        conn.close()


if args.drain == "naive":
    # Blocked before any thread starts, so that the main thread alone takes
    # it, with sigwait.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

if mode.startswith("late-exit"):
    time.sleep(int(mode.split(":")[1]) / 1000)
    sys.exit(f"steer_server.py: generation {generation} fails to start, late")

if mode != "noaccept":
    threading.Thread(target=acceptor, daemon=True).start()

if mode.startswith("hold-exit"):
    time.sleep(int(mode.split(":")[1]) / 1000)
    with lock:
        count = accepted
    if args.count_file:
        with open(args.count_file + ".tmp", "w") as f:
            f.write(str(count))
        os.rename(args.count_file + ".tmp", args.count_file)
    sys.exit(f"steer_server.py: generation {generation} gives up after accepting {count}")

if args.notify and mode not in ("noaccept", "silent"):
    notify("READY=1")

if args.drain == "none":
    while True:
        signal.pause()

signal.sigwait({signal.SIGTERM})
with lock:
    draining = True
    for conn in pending:
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    pending.clear()
os.write(wake_w, b"x")
with lock:
    while inflight:
        lock.wait()
os._exit(0)
