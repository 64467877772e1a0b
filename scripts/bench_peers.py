#!/usr/bin/env python3
"""The supervisor against its peers, on the same apps, in one run.

    scripts/bench_peers.py --setup     # installs the peers (Debian packages, npm into target/peers)
    scripts/bench_peers.py             # the benchmark: about 15 minutes on 2 cores
    scripts/bench_peers.py --quick     # a smoke run: one short run, one reload per load
    scripts/bench_peers.py --docs      # also writes the table into docs/performance.md
                                       # and the picture to docs/peers.svg

Two pairs of the same app under two managers each:

- Express (scripts/peers/express/server.js), 2 workers: PM2 in cluster mode
  with wait_ready (its own readiness signal, process.send("ready")), against
  `supervisor --workers 2 --ready http:/`.
- A Go net/http server (scripts/peers/go, one handler, two builds): the
  build with tableflip in it, against the build that takes its listener
  from the supervisor (LISTEN_FDS, READY=1) and, the same binary, from
  Server::Starter's start_server (SERVER_STARTER_PORT).

einhorn cannot be installed here (it is not a Debian package and its
registry is not reachable): its row quotes its documentation.

Each tool serves under three loads in turn, with `--reloads` reloads during
each (16 connections, `--seconds` each): wrk with `Connection: close`, wrk
with keep-alive, and scripts/peers/client, a Go client on net/http's
Transport, which retries an idempotent request on a new connection when a
kept-alive connection it reused closes before the answer (as every Go
service calling another does). Every app answers "version V pid P", V read
at start from a file the benchmark writes before each reload, so the new
code is told from the old. A reload is requested as an operator of each
tool does: `pm2 reload`, SIGHUP to tableflip's process, SIGHUP to
start_server, SIGHUP to the supervisor (and, for the breakdown, `supervisor
reload`).

Figures, per tool, medians over the runs (min-max where it helps):
- failed requests per load (wrk: non-2xx + socket errors; Go client: errors);
- reload time: from the reload request to the new code answering every new
  connection (a probe opens a new connection every millisecond throughout:
  the first answer of the new version after the last answer of an old one);
  and the first answer of the new version, which on a shared socket comes
  before the old code has stopped answering;
- p99 latency of the Go client's requests inside reload windows (request to
  the old processes' exit) over its p99 outside them;
- the manager's RSS after the reloads, and its CPU time per reload, idle
  (from /proc: the supervisor, PM2's daemon, start_server; tableflip lives
  in the server, so its row has the whole server's RSS and no CPU figure).

Runs alternate the order of the tools and of the loads. The table goes to
stdout (and with --docs into docs/performance.md between its markers); the
data to target/peers/results.json. Every process started is stopped by pid
or by the process group it was started in, also on Ctrl+C. Python 3
standard library only; Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "scripts" / "peers"
OUT = ROOT / "target" / "peers"
GOPATH = "/usr/share/gocode"

APT = [
    "wrk",
    "golang-go",
    "golang-github-cloudflare-tableflip-dev",
    "golang-golang-x-sys-dev",
    "libserver-starter-perl",
    "nodejs",
    "npm",
]
NPM = ["pm2", "express@4"]
SETUP_CMD = "scripts/bench_peers.py --setup"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup


def setup() -> None:
    """Install the peers: Debian packages (apt-get), npm packages into
    target/peers (nothing global from npm)."""
    subprocess.run(["apt-get", "update"], check=True)
    subprocess.run(["apt-get", "install", "-y", *APT], check=True)
    OUT.mkdir(parents=True, exist_ok=True)
    pkg = OUT / "package.json"
    if not pkg.exists():
        pkg.write_text(json.dumps({"name": "supervisor-peers", "private": True}) + "\n")
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(OUT), *NPM], check=True)
    log("setup done: the peers are installed")


# ---------------------------------------------------------------- small helpers


def run_out(cmd, **kw) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"({e})"


def dpkg_version(pkg: str) -> str | None:
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", pkg], capture_output=True, text=True)
    if r.returncode != 0 or "install ok installed" not in r.stdout:
        return None
    return r.stdout.split()[-1]


def npm_version(name: str) -> str | None:
    p = OUT / "node_modules" / name / "package.json"
    try:
        return json.loads(p.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, timeout: float = 1.0) -> tuple[str, int] | None:
    """One request on a new connection: (version, pid), or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET / HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    m = re.search(rb"version (\S+) pid (\d+)", data)
    return (m.group(1).decode(), int(m.group(2))) if m else None


def alive(pid: int) -> bool:
    """Running (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def rss_kb(pid: int) -> int | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_ns(pid: int) -> int | None:
    """CPU time of every thread of pid, in ns (schedstat)."""
    total = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                total += int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        return None
    return total


def wait_for(cond, timeout: float, step: float = 0.002):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------- the tools


class Started:
    """One running manager: its processes and how to reload and stop it."""

    def __init__(self, tool: "Tool", port: int, tmp: Path) -> None:
        self.tool, self.port, self.tmp = tool, port, tmp
        self.procs: list[subprocess.Popen] = []
        self.extra_pids: set[int] = set()
        self.cli: list[Spawned] = []
        self.conns: list[socket.socket] = []
        self.note: dict = {}

    def popen(self, cmd, env=None, log_name="manager.log", **kw) -> subprocess.Popen:
        out = open(self.tmp / log_name, "ab")
        p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                             start_new_session=True, **kw)
        out.close()
        self.procs.append(p)
        return p


class Tool:
    name = ""
    pair = ""
    probe_us = 1000

    def missing(self) -> str | None:
        """Why this tool cannot run, with the command that installs it."""
        return None

    def version(self) -> str:
        return ""

    def start(self, s: Started, env: dict) -> None:
        raise NotImplementedError

    def reload(self, s: Started, how: str = "") -> None:
        raise NotImplementedError

    def manager_pid(self, s: Started) -> int | None:
        raise NotImplementedError

    def stop(self, s: Started) -> None:
        for p in s.procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in s.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left in the sessions this run started.
        for p in s.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for c in s.cli:
            if c.poll() is None:
                c.kill()
            c.wait()
        for pid in s.extra_pids:
            if alive(pid) and is_ours(pid, s):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


class Spawned:
    """A command run as an operator's shell runs it (posix_spawn, no
    Python-side set-up to delay it), reaped later."""

    def __init__(self, pid: int) -> None:
        self.pid, self.status = pid, None

    def poll(self):
        if self.status is None:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = st
        return self.status

    def wait(self, timeout: float = 60):
        if wait_for(lambda: self.poll() is not None, timeout, 0.005) is None and self.poll() is None:
            raise subprocess.TimeoutExpired(str(self.pid), timeout)
        return self.status

    def kill(self):
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)


def spawn(argv, env=None) -> Spawned:
    null = [(os.POSIX_SPAWN_OPEN, fd, "/dev/null", os.O_RDWR, 0) for fd in (0, 1, 2)]
    path = argv[0] if "/" in argv[0] else shutil.which(argv[0])
    return Spawned(os.posix_spawn(path, argv, env if env is not None else os.environ, file_actions=null))


def is_ours(pid: int, s: Started) -> bool:
    """pid still runs an app of this run (its environment names our version file)."""
    try:
        return str(s.tmp).encode() in open(f"/proc/{pid}/environ", "rb").read()
    except OSError:
        return False


class Supervisor(Tool):
    def __init__(self, bin_dir: Path, pair: str, workers: int, ready: str = "", rolling: bool = False) -> None:
        self.bin = bin_dir / "supervisor"
        self.pair, self.workers, self.rolling = pair, workers, rolling
        self.ready = ready or ("notify" if pair == "go" else "http:/")
        self.name = "supervisor" if pair == "go" else f"supervisor --workers {workers}"
        if rolling:
            self.name += " --reload rolling"
        if ready:
            self.name += f" --ready {ready}"
        self.probe_us = 1000 if pair == "go" else 5000

    def missing(self):
        if self.pair == "express" and not (OUT / "node_modules" / "express").exists():
            return f"express is not installed: {SETUP_CMD}"
        return None if self.bin.exists() else f"no {self.bin}: cargo build --release"

    def version(self):
        return run_out([str(self.bin), "--version"])

    def start(self, s, env):
        cmd = [str(self.bin), "-l", f"127.0.0.1:{s.port}", "--control", str(s.tmp / "ctl")]
        if self.pair == "go" and self.ready == "tcp":
            # A server that cannot send READY=1 (the probe alone proves it ready).
            env = dict(env, PEER_NO_NOTIFY="1")
            cmd += ["--ready", "tcp", "--", str(OUT / "peer-inherit")]
        elif self.pair == "go":
            cmd += ["--ready", self.ready, "--", str(OUT / "peer-inherit")]
        else:
            cmd += ["--workers", str(self.workers), "--ready", self.ready]
            if self.rolling:
                cmd += ["--reload", "rolling"]
            cmd += ["--", "node",
                    str(PEERS / "express" / "server.js")]
        s.sup = s.popen(cmd, env=env)

    def reload(self, s, how=""):
        if how == "cli":
            s.cli.append(spawn([str(self.bin), "reload", "--control", str(s.tmp / "ctl")]))
        elif how == "control":
            # What `echo reload | socat - UNIX-CONNECT:...` or a deploy
            # script does (docs/control.md): one line, the answer read later.
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(str(s.tmp / "ctl"))
            c.sendall(b"reload\n")
            s.conns.append(c)
        else:
            os.kill(s.sup.pid, signal.SIGHUP)

    def manager_pid(self, s):
        return s.sup.pid


class Pm2(Tool):
    name = "PM2 cluster"
    pair = "express"
    probe_us = 5000

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.cli = OUT / "node_modules" / ".bin" / "pm2"

    def missing(self):
        if not self.cli.exists() or not (OUT / "node_modules" / "express").exists():
            return f"PM2 and express are not installed in target/peers: {SETUP_CMD}"
        return None

    def version(self):
        return f"PM2 {npm_version('pm2')}, Node {run_out(['node', '--version'])}, express {npm_version('express')}"

    def env(self, s):
        e = dict(s.env)
        e["PM2_HOME"] = str(s.tmp / "pm2")
        return e

    def start(self, s, env):
        s.env = env
        eco = {"apps": [{
            "name": "peer",
            "script": str(PEERS / "express" / "server.js"),
            "exec_mode": "cluster",
            "instances": self.workers,
            "wait_ready": True,
            "listen_timeout": 30000,
            "kill_timeout": 30000,
            "autorestart": True,
            "env": {k: env[k] for k in ("PORT", "PEER_VERSION_FILE", "NODE_PATH")},
        }]}
        (s.tmp / "ecosystem.json").write_text(json.dumps(eco))
        r = subprocess.run([str(self.cli), "start", str(s.tmp / "ecosystem.json")], env=self.env(s),
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"pm2 start failed: {r.stdout}{r.stderr}")
        # How long PM2's own command takes to reach its daemon and back,
        # which every `pm2 reload` pays first.
        took = []
        for _ in range(3):
            t = time.monotonic()
            spawn([str(self.cli), "ping"], env=self.env(s)).wait(60)
            took.append((time.monotonic() - t) * 1e3)
        s.note = {"pm2_ping_ms": statistics.median(took)}

    def reload(self, s, how=""):
        s.cli.append(spawn([str(self.cli), "reload", "peer"], env=self.env(s)))

    def manager_pid(self, s):
        try:
            return int((s.tmp / "pm2" / "pm2.pid").read_text())
        except (OSError, ValueError):
            return None

    def stop(self, s):
        daemon = self.manager_pid(s)
        for c in s.cli:
            try:
                c.wait(timeout=60)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
        subprocess.run([str(self.cli), "kill"], env=self.env(s), capture_output=True, timeout=120)
        if daemon and alive(daemon) and not wait_for(lambda: not alive(daemon), 10, 0.05):
            os.kill(daemon, signal.SIGKILL)
        super().stop(s)


class Tableflip(Tool):
    name = "tableflip"
    pair = "go"

    def missing(self):
        if not shutil.which("go"):
            return "Go is missing: apt-get install golang-go (or " + SETUP_CMD + ")"
        if not Path(GOPATH, "src/github.com/cloudflare/tableflip").exists():
            return "tableflip is missing: apt-get install golang-github-cloudflare-tableflip-dev golang-golang-x-sys-dev (or " + SETUP_CMD + ")"
        return None

    def version(self):
        return f"tableflip {dpkg_version('golang-github-cloudflare-tableflip-dev')} (Debian), {run_out(['go', 'version'])}"

    def start(self, s, env):
        e = dict(env)
        e["PEER_LISTEN"] = f"127.0.0.1:{s.port}"
        e["PEER_PID_FILE"] = str(s.tmp / "tableflip.pid")
        s.popen([str(OUT / "peer-tableflip")], env=e)

    def serving_pid(self, s):
        try:
            return int((s.tmp / "tableflip.pid").read_text())
        except (OSError, ValueError):
            return None

    def reload(self, s, how=""):
        os.kill(self.serving_pid(s), signal.SIGHUP)

    def manager_pid(self, s):
        return self.serving_pid(s)

    def stop(self, s):
        pid = self.serving_pid(s)
        if pid and alive(pid) and is_ours(pid, s):
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not alive(pid), 15, 0.01)
        super().stop(s)


class ServerStarter(Tool):
    name = "Server::Starter"
    pair = "go"

    def missing(self):
        if not shutil.which("start_server"):
            return "start_server is missing: apt-get install libserver-starter-perl (or " + SETUP_CMD + ")"
        if not shutil.which("go"):
            return "Go is missing: apt-get install golang-go"
        return None

    def version(self):
        return f"Server::Starter {dpkg_version('libserver-starter-perl')} (Debian), perl {run_out(['perl', '-e', 'print $^V'])}"

    def start(self, s, env):
        s.ss = s.popen(["start_server", f"--port=127.0.0.1:{s.port}", "--", str(OUT / "peer-inherit")], env=env)

    def reload(self, s, how=""):
        os.kill(s.ss.pid, signal.SIGHUP)

    def manager_pid(self, s):
        return s.ss.pid


# ---------------------------------------------------------------- loads


def wrk_cmd(port, conns, seconds, close):
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s"]
    if close:
        cmd += ["-H", "Connection: close"]
    return cmd + [f"http://127.0.0.1:{port}/"]


def parse_wrk(out: str) -> dict:
    def num(pat):
        m = re.search(pat, out)
        return int(m.group(1)) if m else 0

    requests = num(r"(\d+) requests in")
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(x) for x in m.groups()) if m else 0
    non2xx = num(r"Non-2xx or 3xx responses: (\d+)")
    return {"requests": requests, "failed": socket_errors + non2xx}


LOADS = ["close", "keepalive", "retry"]
LOAD_NAMES = {"close": "wrk, Connection: close", "keepalive": "wrk, keep-alive", "retry": "Go client, retries"}


def one_run(tool: Tool, load: str, args, run_dir: Path, reloads: int, idle_reloads: int) -> dict:
    """Start the tool, put one load on it with `reloads` reloads, measure;
    then idle reloads for the CPU figure; stop it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    vfile = run_dir / "version"
    vfile.write_text("1\n")
    env = dict(os.environ)
    for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
        env.pop(k, None)
    env.update({"PEER_VERSION_FILE": str(vfile), "PORT": str(port),
                "NODE_PATH": str(OUT / "node_modules"), "RUST_LOG": "info"})
    s = Started(tool, port, run_dir)
    res: dict = {"tool": tool.name, "load": load, "reloads": []}
    try:
        tool.start(s, env)
        if not wait_for(lambda: (get(port) or ("",))[0] == "1", 60, 0.02):
            raise RuntimeError(f"{tool.name} did not serve in 60 s (log: {run_dir})")
        seconds = args.seconds
        probe_out = run_dir / "probe.txt"
        probe = subprocess.Popen([str(OUT / "peer-client"), "probe", f"127.0.0.1:{port}", str(seconds + 2),
                                  str(tool.probe_us), str(probe_out)], stdout=subprocess.DEVNULL)
        samples = run_dir / "samples.txt"
        if load == "retry":
            lcmd = [str(OUT / "peer-client"), "load", f"http://127.0.0.1:{port}/", str(args.conns), str(seconds),
                    str(samples)]
        else:
            lcmd = wrk_cmd(port, args.conns, seconds, load == "close")
        t_load = time.time()
        loader = subprocess.Popen(lcmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(min(1.5, seconds / 6))
        span = (seconds - 3) / max(reloads, 1)
        for i in range(reloads):
            slot = time.monotonic() + span
            res["reloads"].append(reload_once(tool, s, i + 2, port))
            left = slot - time.monotonic()
            if left > 0 and i + 1 < reloads:
                time.sleep(left)
        out, _ = loader.communicate(timeout=seconds + 60)
        probe.wait(timeout=seconds + 60)
        if load == "retry":
            m = re.search(r"ok (\d+) failed (\d+)", out)
            res["requests"] = int(m.group(1)) + int(m.group(2)) if m else 0
            res["failed"] = int(m.group(2)) if m else None
            res.update(windows_p99(samples, res["reloads"]))
            samples.unlink(missing_ok=True)
        else:
            res.update(parse_wrk(out))
        res["load_start"] = t_load
        probe_times(probe_out, res["reloads"])
        mp = tool.manager_pid(s)
        res["rss_kb"] = rss_kb(mp) if mp else None
        # CPU per reload, idle: the manager's own CPU time.
        if idle_reloads and not isinstance(tool, Tableflip):
            before = cpu_ns(mp)
            v = reloads + 2
            for i in range(idle_reloads):
                reload_once(tool, s, v + i, port)
            after = cpu_ns(mp)
            if before is not None and after is not None:
                res["cpu_ms_per_reload"] = (after - before) / 1e6 / idle_reloads
        res.update(s.note)
        if tool.name.startswith("supervisor"):
            res["log"] = supervisor_log_times(run_dir / "manager.log")
    finally:
        tool.stop(s)
    return res


def reload_once(tool: Tool, s: Started, version: int, port: int, how: str = "") -> dict:
    """Write the next version, request a reload, wait for the new version to
    answer and for every old process to be gone."""
    old = set()
    for _ in range(8):
        a = get(port)
        if a:
            old.add(a[1])
    s.extra_pids |= old
    (s.tmp / "version").write_text(f"{version}\n")
    t = time.time()
    tool.reload(s, how)
    new = wait_for(lambda: (lambda a: a if a and a[0] == str(version) else None)(get(port, 2)), 60, 0.002)
    t_new = time.time()
    if new:
        s.extra_pids.add(new[1])
    gone = wait_for(lambda: not any(alive(p) for p in old), 60, 0.001)
    t_gone = time.time()
    for c in s.cli:
        if c.poll() is None:
            try:
                c.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
    for c in s.conns:
        c.settimeout(60)
        try:
            c.recv(4096)
        except OSError:
            pass
        c.close()
    s.conns.clear()
    return {"version": version, "t": t, "seen_new": t_new if new else None, "old_gone": t_gone if gone else None}


def probe_times(path: Path, reloads: list) -> None:
    """From the probe's lines: per reload, the first answer of the new
    version, and the first one after the last answer of an older one."""
    rows = []
    try:
        for line in open(path):
            f = line.split()
            if len(f) >= 3 and f[2] != "-":
                rows.append((int(f[0]) / 1e9, int(f[1]) / 1e9, int(f[2]) if f[2].isdigit() else -1))
    except OSError:
        return
    for r in reloads:
        v, t = r["version"], r["t"]
        after = [x for x in rows if x[0] >= t]
        first = next((x for x in after if x[2] == v), None)
        last_old = max((x[0] for x in after if x[2] < v), default=None)
        switched = next((x for x in after if x[2] == v and (last_old is None or x[0] > last_old)), None)
        r["first_new_ms"] = (first[1] - t) * 1e3 if first else None
        r["last_old_ms"] = (last_old - t) * 1e3 if last_old is not None else None
        r["reload_ms"] = (switched[1] - t) * 1e3 if switched else None


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def windows_p99(path: Path, reloads: list) -> dict:
    wins = [(r["t"], r["old_gone"] or r["t"] + 1) for r in reloads]
    inside, outside = [], []
    for line in open(path):
        f = line.split()
        if len(f) != 3 or f[2] != "1":
            continue
        start, lat = int(f[0]) / 1e9, int(f[1]) / 1e9
        end = start + lat
        (inside if any(start < b and end > a for a, b in wins) else outside).append(lat * 1e3)
    pin, pout = pct(inside, 0.99), pct(outside, 0.99)
    return {"p99_in_ms": pin, "p99_steady_ms": pout, "p99_ratio": pin / pout if pin and pout else None}


TS = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d+)Z")


def log_time(line: str) -> float | None:
    m = TS.match(line)
    if not m:
        return None
    import calendar
    y, mo, d, h, mi, s, frac = m.groups()
    return calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s))) + int(frac) / 10 ** len(frac)


def supervisor_log_times(path: Path) -> list:
    """Per reload, from the supervisor's log: request -> started -> ready."""
    out, cur = [], None
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return out
    for line in lines:
        t = log_time(line)
        if "reload requested" in line:
            cur = {"requested": t}
            out.append(cur)
        elif cur is not None and re.search(r"generation \d+ \(pid \d+\) started", line) and "started" not in cur:
            cur["started"] = t
        elif cur is not None and " ready in " in line and "ready" not in cur:
            cur["ready"] = t
    return out


# ---------------------------------------------------------------- the breakdown


def breakdown(tools: dict, args, base: Path) -> dict:
    """The Go pair's reload time taken apart, idle and under keep-alive load:
    tableflip, the supervisor by SIGHUP and by `supervisor reload`, with the
    supervisor's own log times (request seen, child started, child ready)."""
    res = {}
    n = args.breakdown_reloads
    cases = [("tableflip: SIGHUP", tools.get("tableflip"), ""),
             ("supervisor: SIGHUP", tools.get("supervisor"), ""),
             ("supervisor: `reload` line on the control socket", tools.get("supervisor"), "control"),
             ("supervisor: `supervisor reload` command", tools.get("supervisor"), "cli"),
             ("supervisor --ready tcp, the server sending no READY=1: SIGHUP",
              tools.get("supervisor --ready tcp"), "")]
    for r in range(args.runs):
        order = cases if r % 2 == 0 else list(reversed(cases))
        for label, tool, how in order:
            if tool is None:
                continue
            d = base / f"breakdown-{r}-{re.sub(r'[^A-Za-z0-9]+', '_', label)}"
            d.mkdir(parents=True, exist_ok=True)
            port = free_port()
            (d / "version").write_text("1\n")
            env = dict(os.environ)
            env.update({"PEER_VERSION_FILE": str(d / "version"), "PORT": str(port), "RUST_LOG": "info"})
            s = Started(tool, port, d)
            try:
                tool.start(s, env)
                if not wait_for(lambda: (get(port) or ("",))[0] == "1", 60, 0.02):
                    raise RuntimeError(f"{label} did not serve")
                secs = n * 0.4 + 2
                probe = subprocess.Popen([str(OUT / "peer-client"), "probe", f"127.0.0.1:{port}", str(secs),
                                          "500", str(d / "probe.txt")], stdout=subprocess.DEVNULL)
                time.sleep(0.5)
                rel = []
                for i in range(n):
                    rel.append(reload_once(tool, s, i + 2, port, how))
                    time.sleep(0.1)
                probe.wait(timeout=secs + 30)
                probe_times(d / "probe.txt", rel)
                logt = supervisor_log_times(d / "manager.log") if tool.name.startswith("supervisor") else []
                for x, lt in zip(rel, logt):
                    x.update({"sup_" + k: (v - x["t"]) * 1e3 for k, v in lt.items() if v is not None})
                res.setdefault(label, []).extend(rel)
            finally:
                tool.stop(s)
    return res


# ---------------------------------------------------------------- report


def fmt(x, unit="", digits=0):
    if x is None:
        return "-"
    if digits == 0:
        return f"{x:,.0f}{unit}"
    return f"{x:,.{digits}f}{unit}"


def summarise(results: list, tools: list) -> list:
    rows = []
    for t in tools:
        mine = [r for r in results if r["tool"] == t.name]
        row = {"tool": t.name, "pair": t.pair}
        for load in LOADS:
            rs = [r for r in mine if r["load"] == load]
            row[f"{load}_failed"] = median([r.get("failed") for r in rs])
            row[f"{load}_failed_runs"] = [r.get("failed") for r in rs]
            row[f"{load}_requests"] = median([r.get("requests") for r in rs])
        rel = [x for r in mine for x in r["reloads"]]
        row["reload_ms"] = median([x.get("reload_ms") for x in rel])
        ok = [x["reload_ms"] for x in rel if x.get("reload_ms") is not None]
        row["reload_ms_range"] = (min(ok), max(ok)) if ok else None
        row["first_new_ms"] = median([x.get("first_new_ms") for x in rel])
        rr = [r for r in mine if r["load"] == "retry"]
        row["p99_in_ms"] = median([r.get("p99_in_ms") for r in rr])
        row["p99_steady_ms"] = median([r.get("p99_steady_ms") for r in rr])
        row["p99_ratio"] = median([r.get("p99_ratio") for r in rr])
        row["rss_mb"] = median([r["rss_kb"] / 1024 if r.get("rss_kb") else None for r in mine])
        row["cpu_ms_per_reload"] = median([r.get("cpu_ms_per_reload") for r in mine])
        row["reloads"] = len(rel)
        row["pm2_ping_ms"] = median([r.get("pm2_ping_ms") for r in mine])
        row["ready_log_ms"] = median([(x["ready"] - x["requested"]) * 1e3 for r in mine for x in r.get("log", [])
                                      if x.get("ready") and x.get("requested")])
        rows.append(row)
    return rows


def table(rows: list, runs: int, missing: dict) -> str:
    head = ("| tool (same app in each pair) | failed, `Connection: close` | failed, keep-alive (wrk) | "
            "failed, Go client that retries | reload time: median (min-max) | first answer of the new code | "
            "p99 in reload windows / steady | manager's RSS | manager's CPU per reload |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        rng = r["reload_ms_range"]
        reload = f"{fmt(r['reload_ms'], ' ms', 1 if (r['reload_ms'] or 0) < 100 else 0)}"
        if rng:
            d = 1 if rng[1] < 100 else 0
            reload += f" ({rng[0]:,.{d}f}-{rng[1]:,.{d}f})"

        def failed(load):
            f, n = r[f"{load}_failed"], r[f"{load}_requests"]
            return "-" if f is None else f"{fmt(f, digits=1 if f != int(f) else 0)} of {fmt(n)}"

        ratio = "-" if r["p99_ratio"] is None else (
            f"{r['p99_ratio']:.1f} ({r['p99_in_ms']:.1f} / {r['p99_steady_ms']:.1f} ms)")
        rss = fmt(r["rss_mb"], " MB", 1)
        if r["tool"] == "tableflip":
            rss += " (whole server)"
        elif r["tool"] == "PM2 cluster":
            rss += " (daemon)"
        cpu = "in the server" if r["tool"] == "tableflip" else fmt(r["cpu_ms_per_reload"], " ms", 1)
        lines.append(f"| {r['tool']} | {failed('close')} | {failed('keepalive')} | {failed('retry')} | {reload} | "
                     f"{fmt(r['first_new_ms'], ' ms', 1)} | {ratio} | {rss} | {cpu} |")
    for name, why in missing.items():
        lines.append(f"| {name} | not run: {why} | | | | | | | |")
    lines.append("| einhorn | not installable here (not a Debian package; its registry is not reachable): "
                 "its documentation describes the same hand-off on inherited sockets, readiness by a timer "
                 "unless the worker ACKs (`-m manual`) | | | | | | | |")
    return "\n".join(lines)


def breakdown_table(bd: dict) -> str:
    lines = ["| reload request by | reload time: median (min-max) | request seen by the supervisor | "
             "new child started (fork + exec) | READY=1 received | first answer of the new code |",
             "|---|---|---|---|---|---|"]
    for label, rel in bd.items():
        ok = [x["reload_ms"] for x in rel if x.get("reload_ms") is not None]
        rng = f" ({min(ok):.1f}-{max(ok):.1f})" if ok else ""

        def col(k):
            return fmt(median([x.get(k) for x in rel]), " ms", 2)

        lines.append(f"| {label} | {fmt(median(ok), ' ms', 1)}{rng} | {col('sup_requested')} | {col('sup_started')} | "
                     f"{col('sup_ready')} | {col('first_new_ms')} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- the picture


def svg(rows: list, path: Path, meta: str) -> None:
    """Two bar charts side by side: failed requests per load, and reload
    time (log scale), one bar group per tool. Standard library only."""
    from xml.sax.saxutils import escape

    W, H = 960, 420
    colors = {"close": "#3b6ea8", "keepalive": "#e08a2c", "retry": "#2a9d5c", "reload": "#7b3294"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             f'font-family="sans-serif" font-size="12">', f'<rect width="{W}" height="{H}" fill="white"/>']

    def text(x, y, s, anchor="start", size=12, weight="normal", fill="#222"):
        parts.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
                     f'font-weight="{weight}" fill="{fill}">{escape(s)}</text>')

    text(16, 24, "Peers on the same app: failed requests over a run with reloads, and reload time", size=15,
         weight="bold")
    text(16, 42, meta, size=11, fill="#555")
    top, bottom = 70, H - 80
    ph = bottom - top
    names = [r["tool"] for r in rows]
    # Left: failed requests (linear).
    lx, lw = 70, 400
    fmax = max([r[f"{l}_failed"] or 0 for r in rows for l in LOADS] + [1])
    ticks = [m * 10 ** e for e in range(8) for m in (1, 2, 5)]
    fmax = 4 * next(t for t in ticks if 4 * t >= fmax)
    text(lx, top - 10, "failed requests per run (median)", weight="bold")
    for k in range(5):
        v = fmax * k / 4
        y = bottom - ph * k / 4
        parts.append(f'<line x1="{lx}" y1="{y:.1f}" x2="{lx + lw}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        text(lx - 6, y + 4, f"{v:,.0f}", anchor="end", size=10)
    gw = lw / max(len(rows), 1)
    for i, r in enumerate(rows):
        for j, l in enumerate(LOADS):
            v = r[f"{l}_failed"]
            bw = gw * 0.8 / 3
            x = lx + i * gw + gw * 0.1 + j * bw
            if v is None:
                text(x + bw / 2, bottom - 4, "-", anchor="middle", size=10)
                continue
            h = ph * v / fmax
            parts.append(f'<rect x="{x:.1f}" y="{bottom - h:.1f}" width="{bw - 1:.1f}" height="{max(h, 0.5):.1f}" '
                         f'fill="{colors[l]}"/>')
            text(x + bw / 2, bottom - h - 3, f"{v:,.0f}", anchor="middle", size=9)
        label(parts, lx + i * gw + gw / 2, bottom + 14, names[i])
    # Right: reload time (log scale, 1 ms .. 10 s).
    rx, rw = 540, 400
    text(rx, top - 10, "reload time, request to the new code answering (ms, log)", weight="bold")
    lo, hi = 0.0, 4.0
    for k in range(5):
        y = bottom - ph * k / 4
        parts.append(f'<line x1="{rx}" y1="{y:.1f}" x2="{rx + rw}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        text(rx - 6, y + 4, f"{10 ** k:,}", anchor="end", size=10)
    gw = rw / max(len(rows), 1)
    for i, r in enumerate(rows):
        v = r["reload_ms"]
        x = rx + i * gw + gw * 0.25
        if v:
            h = ph * (min(max(__import__("math").log10(max(v, 1)), lo), hi) - lo) / (hi - lo)
            parts.append(f'<rect x="{x:.1f}" y="{bottom - h:.1f}" width="{gw * 0.5:.1f}" height="{max(h, 0.5):.1f}" '
                         f'fill="{colors["reload"]}"/>')
            text(x + gw * 0.25, bottom - h - 3, f"{v:,.1f}" if v < 100 else f"{v:,.0f}", anchor="middle", size=10)
        label(parts, rx + i * gw + gw / 2, bottom + 14, names[i])
    # Legend.
    lxp = 70
    for l in LOADS:
        parts.append(f'<rect x="{lxp}" y="{H - 22}" width="12" height="12" fill="{colors[l]}"/>')
        text(lxp + 16, H - 12, LOAD_NAMES[l], size=11)
        lxp += 190
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


SHORT = {
    "PM2 cluster": "PM2|cluster",
    "tableflip": "tableflip|(Go)",
    "supervisor": "supervisor|(Go)",
    "Server::Starter": "Server::|Starter (Go)",
}


def label(parts, x, y, name):
    from xml.sax.saxutils import escape

    if name in SHORT:
        words = SHORT[name].split("|")
    elif "rolling" in name:
        words = ["supervisor", "rolling"]
    elif name.startswith("supervisor --workers"):
        words = ["supervisor", f"{name.split()[-1]} workers"]
    else:
        words = name.split(" ", 1)
    for k, w in enumerate(words):
        parts.append(f'<text x="{x:.1f}" y="{y + 13 * k:.1f}" text-anchor="middle" font-size="10">{escape(w)}</text>')


# ---------------------------------------------------------------- main


BEGIN = "<!-- bench_peers: begin (generated by scripts/bench_peers.py --docs) -->"
END = "<!-- bench_peers: end -->"


def write_docs(block: str) -> None:
    p = ROOT / "docs" / "performance.md"
    text = p.read_text()
    if BEGIN in text and END in text:
        a, rest = text.split(BEGIN, 1)
        _, b = rest.split(END, 1)
        text = a + BEGIN + "\n" + block + "\n" + END + b
    else:
        raise SystemExit(f"docs/performance.md has no {BEGIN} marker")
    p.write_text(text)


def build(args) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.bin_dir:
        log("building the supervisor (release)")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "hot-supervisor", "--bin", "supervisor"],
                       cwd=ROOT, check=True)
    if shutil.which("go"):
        env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOFLAGS="")
        subprocess.run(["go", "build", "-o", str(OUT / "peer-inherit"), "."], cwd=PEERS / "go", env=env, check=True)
        subprocess.run(["go", "build", "-o", str(OUT / "peer-client"), "."], cwd=PEERS / "client", env=env,
                       check=True)
        if Path(GOPATH, "src/github.com/cloudflare/tableflip").exists():
            subprocess.run(["go", "build", "-tags", "tableflip", "-o", str(OUT / "peer-tableflip"), "."],
                           cwd=PEERS / "go", env=env, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setup", action="store_true", help="install the peers (apt-get; npm into target/peers) and exit")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1 run of 4 s per load, 1 reload each")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reloads", type=int, default=5, help="reloads under each load (default 5)")
    ap.add_argument("--seconds", type=float, default=12, help="length of each load (default 12)")
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="Express workers under PM2 and the supervisor")
    ap.add_argument("--idle-reloads", type=int, default=5, help="idle reloads per run for the CPU figure")
    ap.add_argument("--breakdown-reloads", type=int, default=20, help="reloads per breakdown case per run")
    ap.add_argument("--only", default="", help="comma-separated pairs to run: express,go")
    ap.add_argument("--bin-dir", type=Path, help="use DIR/supervisor instead of building")
    ap.add_argument("--docs", action="store_true", help="write the table into docs/performance.md and docs/peers.svg")
    ap.add_argument("--replot", action="store_true",
                    help="draw the picture again from target/peers/results.json (with --docs: docs/peers.svg) and exit")
    args = ap.parse_args()
    if args.replot:
        data = json.loads((OUT / "results.json").read_text())
        path = (ROOT / "docs" / "peers.svg") if args.docs else (OUT / "peers.svg")
        svg(data["rows"], path, data["meta"])
        log(f"picture: {path}")
        return 0
    if args.setup:
        setup()
        return 0
    if args.quick:
        args.runs, args.reloads, args.seconds, args.idle_reloads, args.breakdown_reloads = 1, 1, 4, 1, 3
    if not shutil.which("wrk"):
        log(f"wrk is missing: apt-get install wrk (or {SETUP_CMD})")
        return 1
    build(args)
    bin_dir = args.bin_dir or ROOT / "target" / "release"
    pairs = set(args.only.split(",")) if args.only else {"express", "go"}
    candidates = []
    if "express" in pairs:
        candidates += [Pm2(args.workers), Supervisor(bin_dir, "express", args.workers),
                       Supervisor(bin_dir, "express", args.workers, rolling=True)]
    if "go" in pairs:
        candidates += [Tableflip(), Supervisor(bin_dir, "go", args.workers), ServerStarter()]
    missing, tools = {}, []
    for t in candidates:
        why = t.missing()
        if why is None and t.pair == "go" and not (OUT / "peer-inherit").exists():
            why = "Go is missing: apt-get install golang-go"
        if why:
            log(f"skipped {t.name}: {why}")
            missing[t.name] = why
        else:
            tools.append(t)
    if not (OUT / "peer-client").exists():
        log("the Go client is missing (apt-get install golang-go): nothing can be measured")
        return 1
    versions = {t.name: t.version() for t in tools}
    versions["wrk"] = run_out(["wrk", "-v"]).splitlines()[0] if run_out(["wrk", "-v"]) else "?"
    versions["Go (client, servers)"] = run_out(["go", "version"])
    versions["kernel"] = f"Linux {platform.release().split('-')[0]}, {os.cpu_count()} CPUs"
    for k, v in versions.items():
        log(f"version: {k}: {v}")

    base = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    results = []
    t0 = time.monotonic()
    try:
        for run in range(args.runs):
            loads = LOADS[run % 3:] + LOADS[:run % 3]
            for pair in ("express", "go"):
                pt = [t for t in tools if t.pair == pair]
                if run % 2:
                    pt.reverse()
                for load in loads:
                    for t in pt:
                        log(f"run {run + 1}/{args.runs}: {t.name}, {LOAD_NAMES[load]}")
                        d = base / f"r{run}-{pair}-{load}-{t.name.replace(' ', '_').replace(':', '')}"
                        r = one_run(t, load, args, d, args.reloads, args.idle_reloads if load == "retry" else 0)
                        rl = [x.get("reload_ms") for x in r["reloads"]]
                        log(f"  failed {r.get('failed')} of {r.get('requests')}, reload ms {rl}, "
                            f"rss {r.get('rss_kb')} kB, cpu/reload {r.get('cpu_ms_per_reload')}")
                        results.append(r)
        bd = {}
        go_tools = {t.name: t for t in tools if t.pair == "go"}
        if "supervisor" in go_tools:
            go_tools["supervisor --ready tcp"] = Supervisor(bin_dir, "go", args.workers, "tcp")
        if "tableflip" in go_tools and "supervisor" in go_tools:
            log("breakdown: tableflip against the supervisor, idle")
            bd = breakdown(go_tools, args, base)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        shutil.rmtree(base, ignore_errors=True)
    took = time.monotonic() - t0
    rows = summarise(results, tools)
    plural = lambda n, w: f"{n} {w}" + ("" if n == 1 else "s")  # noqa: E731
    meta = (f"{plural(args.runs, 'run')}, {plural(args.reloads, 'reload')} under each load, {args.conns} connections, "
            f"{args.seconds:g} s; {versions['kernel']}")
    main_table = table(rows, args.runs, missing)
    bd_table = breakdown_table(bd) if bd else ""
    ver_lines = "\n".join(f"- {k}: {v}" for k, v in versions.items())
    notes = []
    for r in rows:
        if r.get("pm2_ping_ms"):
            notes.append(f"- `pm2 ping` (PM2's command to its daemon and back, which `pm2 reload` pays first): "
                         f"{r['pm2_ping_ms']:,.0f} ms")
        if r.get("ready_log_ms"):
            notes.append(f"- {r['tool']}: reload request to the new generation ready, from its log, under load: "
                         f"{r['ready_log_ms']:,.1f} ms")
    note_lines = "\n".join(notes)
    print(f"Peers ({meta}; {took:.0f} s)\n")
    print(main_table)
    if note_lines:
        print("\n" + note_lines)
    if bd_table:
        print("\nReload time taken apart (Go server, idle; times from the reload request):\n")
        print(bd_table)
    print("\nVersions:\n" + ver_lines)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps({"versions": versions, "meta": meta, "rows": rows,
                                                  "runs": results, "breakdown": bd}, indent=1, default=str))
    svg_path = (ROOT / "docs" / "peers.svg") if args.docs else (OUT / "peers.svg")
    svg(rows, svg_path, meta)
    log(f"picture: {svg_path}; data: {OUT / 'results.json'}")
    if args.docs:
        block = (f"Measured by `scripts/bench_peers.py --docs` ({meta}; {took / 60:.0f} minutes):\n\n{main_table}\n")
        if note_lines:
            block += f"\n{note_lines}\n"
        if bd_table:
            block += f"\nReload time taken apart (Go server, idle, times from the reload request):\n\n{bd_table}\n"
        block += f"\nVersions:\n\n{ver_lines}\n"
        write_docs(block)
        log("docs/performance.md updated")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        sys.exit(1)
