#!/usr/bin/env python3
"""A socket-activated HTTP server in Python's standard library only.

    supervisor -l 127.0.0.1:8080 --ready notify -- python3 server.py

It serves the listener at fd 3 (refusing to start unless LISTEN_PID is its
own pid), answers every request with `generation <G> pid <PID>`, sends
READY=1 to NOTIFY_SOCKET once it serves, and on SIGTERM stops accepting,
finishes the requests in flight and exits 0. It speaks HTTP/1.0, so every
connection closes after its response and a drain never has to close an
idle keep-alive connection that a client may be about to reuse.
"""
import http.server
import os
import signal
import socket
import sys
import threading

if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
    sys.exit("server.py: no inherited listener (LISTEN_PID/LISTEN_FDS): run me under the supervisor")
generation = os.environ.get("SUPERVISOR_GENERATION", "0")

listener = socket.socket(fileno=3)
# The socket is shared with the other generations: one of them may take a
# connection this process was woken for, and a blocking accept would hang.
listener.setblocking(False)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        body = f"generation {generation} pid {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for the requests in flight
    block_on_close = True


server = Server(listener.getsockname()[:2], Handler, bind_and_activate=False)
server.socket.close()
server.socket = listener


def notify(state):
    path = os.environ.get("NOTIFY_SOCKET")
    if path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(state.encode(), "\0" + path[1:] if path.startswith("@") else path)


# Block SIGTERM before any thread starts, so that the main thread alone takes
# it, with sigwait (a Python-level handler runs only when the kernel happens
# to deliver the signal to the main thread).
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
notify("READY=1")
signal.sigwait({signal.SIGTERM})
notify("STOPPING=1")
server.shutdown()  # stops accepting
server.server_close()  # closes this process's copy of the listener, joins the requests
