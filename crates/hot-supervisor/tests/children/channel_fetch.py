"""A child that fetches its sockets over its channel (SUPERVISOR_CHANNEL_FD)
each time it gets SIGUSR1, and writes what it found to the file named by
its argument: {"n": how many fetches, "answer": the first line, "same":
whether the socket is the one it inherited at fd 3}. It says READY=1 once
it handles SIGUSR1. A fixture of the tests."""

import array
import json
import os
import signal
import socket
import sys

OUT = sys.argv[1]
CHANNEL = int(os.environ["SUPERVISOR_CHANNEL_FD"])
count = 0


def fetch(*_):
    global count
    ch = socket.socket(fileno=os.dup(CHANNEL))
    ch.sendall(b"fds\n")
    data, fds = b"", []
    while b"\n" not in data or (data.startswith(b"ok ") and data.count(b"\n") < 2):
        msg, anc, _, _ = ch.recvmsg(65536, socket.CMSG_SPACE(253 * 4))
        if not msg:
            break
        data += msg
        for _, _, d in anc:
            a = array.array("i")
            a.frombytes(d[: len(d) - len(d) % 4])
            fds.extend(a)
    ch.close()
    same = bool(fds) and os.fstat(fds[0]).st_ino == os.fstat(3).st_ino
    for f in fds:
        os.close(f)
    count += 1
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"n": count, "answer": data.split(b"\n")[0].decode(), "same": same}, f)
    os.rename(tmp, OUT)


signal.signal(signal.SIGUSR1, fetch)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
# Ready only once SIGUSR1 is handled (its default would end the process).
notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
notify.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
notify.close()
while True:
    signal.pause()
