"""waitress on the supervisor's socket: waitress has no command-line option
for an inherited fd, but its API takes pre-bound sockets (`sockets=[...]`).

    supervisor -l 127.0.0.1:8080 --ready notify -- python3 examples/children/waitress/serve.py

The launcher checks LISTEN_PID, wraps fd 3 with socket.socket(fileno=3),
builds the server with waitress.create_server(app, sockets=[...]) and sends
READY=1 itself once the server exists (the listener is already listening, so
connections queue from then on). waitress has no graceful stop: TERM ends the
process at once, with whatever it was answering. In steer mode that costs
nothing for short requests (it is stopped only once its queue is empty), but
idle keep-alive connections die with it.
"""
import os
import socket

import waitress


def app(environ, start_response):
    body = f"generation {os.environ.get('SUPERVISOR_GENERATION', '0')} pid {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


if os.environ.get("LISTEN_PID") != str(os.getpid()):
    raise SystemExit("serve.py: no inherited listener (LISTEN_PID): run me under the supervisor")
server = waitress.create_server(app, sockets=[socket.socket(fileno=3)])
if os.environ.get("NOTIFY_SOCKET"):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as n:
        path = os.environ["NOTIFY_SOCKET"]
        n.sendto(b"READY=1", "\0" + path[1:] if path.startswith("@") else path)
server.run()
