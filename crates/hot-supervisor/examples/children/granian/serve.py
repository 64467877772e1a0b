"""granian on the supervisor's socket, through a private API.

granian has no option for an inherited fd (only --host/--port and --uds),
and on Linux each worker binds the address itself. This launcher overrides
the server's private `_init_shared_socket` so that its workers serve fd 3
instead; it works with granian 2.x as tested, but may break with any
release:

    supervisor -l 127.0.0.1:8080 --ready http:/ --chdir examples/children/granian -- python3 serve.py

granian sends no READY=1; TERM (or INT) is its graceful stop.
"""
import os
import socket

from granian._granian import SocketHolder
from granian.constants import Interfaces
from granian.server import Server

if os.environ.get("LISTEN_PID") != str(os.getpid()):
    raise SystemExit("serve.py: no inherited listener (LISTEN_PID): run me under the supervisor")


class FdServer(Server):
    def _init_shared_socket(self):
        self._ssp = None
        self._shd = SocketHolder(3, False, 4096)  # (fd, is a Unix socket, backlog)
        self._sfd = 3
        self._sso = socket.socket(fileno=3)
        self._sso.set_inheritable(True)


FdServer("app:app", interface=Interfaces.ASGI, log_access=False).serve()
