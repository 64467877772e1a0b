"""Naive-restart launcher for the benchmark: what a server without a
supervisor does at start. It binds 127.0.0.1:PORT itself (SO_REUSEADDR,
backlog SOMAXCONN), puts the listening socket at fd 3 and execs the server
with LISTEN_FDS=1 and LISTEN_PID=<its own pid> (exec keeps the pid), so the
same socket-activated child runs unchanged. A restart is: stop the old
server, wait for it to exit, start a new one.

With --wait it first prints "naive_launcher: armed" to stderr and waits for
a line on stdin before it binds (and exits at EOF without binding): the
benchmark starts the next server ahead of time, so that the interpreter's
own start-up is not counted as downtime; the server still binds the port
only after the old one has exited.

Usage: python3 naive_launcher.py [--wait] PORT CMD [ARGS...]
"""

import os
import socket
import sys


def main() -> None:
    args = sys.argv[1:]
    wait = bool(args) and args[0] == "--wait"
    if wait:
        args = args[1:]
    if len(args) < 2:
        sys.exit("usage: naive_launcher.py [--wait] PORT CMD [ARGS...]")
    port = int(args[0])
    cmd = args[1:]
    if wait:
        print("naive_launcher: armed", file=sys.stderr, flush=True)
        if not sys.stdin.buffer.readline():
            return  # called off
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(socket.SOMAXCONN)
    if sock.fileno() != 3:
        os.dup2(sock.fileno(), 3)  # the copy at fd 3 is inheritable
    else:
        os.set_inheritable(3, True)
    env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
    env.pop("LISTEN_FDNAMES", None)
    os.execve(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
