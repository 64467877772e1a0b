#!/usr/bin/env python3
"""Benchmark of worker pools (`--workers N`) and the three reload strategies.

    scripts/bench_workers.py [--runs 3] [--seconds 5] [--quick] [--bin-dir DIR]

Without --bin-dir it first runs `cargo build --release --quiet --bin supervisor
--example load`. The child is a single-threaded Python stdlib server (below) on
the inherited fd 3 that spends about 1 ms of CPU on each request and answers
with `Connection: close`, so that each request is a new connection placed by
the kernel and the supervisor's BPF program. Each run starts a fresh
`supervisor -l 127.0.0.1:0 --ready notify --workers N` and measures, on
loopback, with examples/load (16 connections):

1. Requests per second with 1, 2 and 4 workers (no reload).
2. Failed requests during reloads of 4 workers under load: all at once
   (`supervisor reload`), rolling (`reload --rolling`), canary (`reload
   --canary 20`, then `promote`); expected 0.
3. The peak number of the supervisor's live children during a rolling reload
   of 4 workers (/proc/PID/task/PID/children sampled every millisecond);
   expected at most 5 (N+1).

Figures: the median over the runs (and each run's value). Table on stdout,
progress on stderr. Python 3 stdlib only, Linux. Every process started is
stopped by pid at the end, also on Ctrl+C or an error; the temp dir is removed.
Exit status: 0 all measured and every check met, 1 otherwise, 130 interrupted.
"""

import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys
import tempfile, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROCS: list[subprocess.Popen] = []

SERVER = r'''
import os, signal, socket, sys, time
gen = os.environ["SUPERVISOR_GENERATION"]
worker = os.environ["SUPERVISOR_WORKER"]
stopping = False
def stop(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, stop)
sock = socket.socket(fileno=3)
sock.settimeout(0.05)
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
n.close()
def work():
    # About 1 ms of CPU: what a request costs a small interpreted service.
    end = time.process_time() + 0.001
    while time.process_time() < end:
        pass
while not stopping:
    try:
        conn, _ = sock.accept()
    except (socket.timeout, BlockingIOError, InterruptedError):
        continue
    conn.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    work()
    body = ("generation %s worker %s pid %d\n" % (gen, worker, os.getpid())).encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    conn.close()
sys.exit(0)
'''


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[bench_workers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stop_proc(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in PROCS:
        PROCS.remove(proc)


def control(exe: str, sock: Path, *args: str, timeout: float = 60.0) -> str:
    out = subprocess.run([exe, *args, "--control", str(sock)], capture_output=True,
                         text=True, timeout=timeout)
    if out.returncode != 0:
        raise BenchError(f"supervisor {' '.join(args)}: exit {out.returncode}: {out.stderr.strip()}")
    return out.stdout.strip()


def status(exe: str, sock: Path) -> dict:
    return json.loads(control(exe, sock, "status", "--json"))


def wait_for(what: str, cond, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.02)
    raise BenchError(f"{what}: not within {timeout:.0f}s")


def start(exe: str, tmp: Path, workers: int) -> tuple[subprocess.Popen, Path, int]:
    sock = tmp / f"c{workers}.sock"
    script = tmp / "server.py"
    script.write_text(SERVER)
    logf = open(tmp / f"sv{workers}.log", "w")
    proc = subprocess.Popen([exe, "-l", "127.0.0.1:0", "--ready", "notify", "--workers", str(workers),
                             "--quiesce", "100ms", "--control", str(sock), "--",
                             sys.executable, str(script)],
                            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    PROCS.append(proc)

    def up():
        try:
            s = status(exe, sock)
        except Exception:
            return None
        g = [g for g in s["generations"] if g["state"] == "active"]
        if g and sum(w["state"] == "ready" for w in g[0]["workers"]) == workers:
            return int(s["listeners"][0]["address"].rsplit(":", 1)[1])
        return None

    port = wait_for("the supervisor up", up)
    return proc, sock, port


def load(load_exe: str, port: int, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([load_exe, "--addr", f"127.0.0.1:{port}", "--connections", "16",
                          "--duration", f"{seconds}s", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    PROCS.append(p)
    return p


def report(p: subprocess.Popen) -> dict:
    out, _ = p.communicate(timeout=120)
    PROCS.remove(p)
    return json.loads(out)


def children(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return 0
    live = 0
    for c in text.split():
        try:
            state = Path(f"/proc/{c}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        live += state != "Z"
    return live


def throughput(exe: str, load_exe: str, tmp: Path, workers: int, seconds: float) -> float:
    proc, sock, port = start(exe, tmp, workers)
    try:
        r = report(load(load_exe, port, seconds))
        if r["failed"]:
            raise BenchError(f"{workers} workers: {r['failed']} failed requests")
        return r["requests_per_s"]
    finally:
        stop_proc(proc)


def reloads(exe: str, load_exe: str, tmp: Path) -> dict:
    """Failed requests during each kind of reload of 4 workers; peak children."""
    proc, sock, port = start(exe, tmp, 4)
    out = {}
    try:
        for kind, steps in [("all at once", [["reload"]]),
                            ("rolling", [["reload", "--rolling"]]),
                            ("canary 20% + promote", [["reload", "--canary", "20"], ["promote"]])]:
            g_before = max(g["generation"] for g in status(exe, sock)["generations"])
            p = load(load_exe, port, 4.0)
            time.sleep(0.5)  # load under way before the reload (not a synchronisation)
            peak, done = [0], threading.Event()

            def sample():
                while not done.is_set():
                    peak[0] = max(peak[0], children(proc.pid))
                    time.sleep(0.001)

            t = threading.Thread(target=sample)
            t.start()
            for step in steps:
                control(exe, sock, *step, "--timeout", "30s")
            wait_for("the old generation gone",
                     lambda: all(g["generation"] > g_before for g in status(exe, sock)["generations"]))
            done.set()
            t.join()
            r = report(p)
            out[kind] = (r["failed"], r["requests"], peak[0])
    finally:
        stop_proc(proc)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--quick", action="store_true", help="1 run of 2 s each")
    ap.add_argument("--bin-dir", type=Path)
    a = ap.parse_args()
    if a.quick:
        a.runs, a.seconds = 1, 2.0
    if a.bin_dir is None:
        log("building release binaries")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "supervisor",
                        "--example", "load"], cwd=ROOT, check=True)
        a.bin_dir = ROOT / "target" / "release"
    exe, load_exe = str(a.bin_dir / "supervisor"), str(a.bin_dir / "examples" / "load")
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    ok = True
    try:
        rps = {n: [] for n in (1, 2, 4)}
        rel: dict[str, list] = {}
        for run in range(a.runs):
            for n in rps:
                log(f"run {run + 1}: {n} worker(s), {a.seconds:.0f}s of load")
                rps[n].append(throughput(exe, load_exe, tmp, n, a.seconds))
            log(f"run {run + 1}: reloads of 4 workers under load")
            for kind, v in reloads(exe, load_exe, tmp).items():
                rel.setdefault(kind, []).append(v)
        cores = os.cpu_count()
        print(f"worker pools: single-threaded Python child (~1 ms CPU per request), "
              f"Connection: close, 16 connections, {cores}-core machine, {a.runs} run(s)")
        print()
        print(f"{'workers':<10}{'req/s (median)':>16}   runs")
        for n, v in rps.items():
            print(f"{n:<10}{statistics.median(v):>16.0f}   {', '.join(f'{x:.0f}' for x in v)}")
        print()
        print(f"{'reload of 4 workers':<24}{'failed requests':>16}{'requests':>10}{'peak children':>15}")
        for kind, v in rel.items():
            failed = sum(x[0] for x in v)
            reqs = statistics.median(x[1] for x in v)
            peak = max(x[2] for x in v)
            print(f"{kind:<24}{failed:>16}{reqs:>10.0f}{peak:>15}")
            ok &= failed == 0
            if kind == "rolling":
                ok &= peak <= 5
        print()
        print("expected: 0 failed requests for every strategy; at most 5 (N+1) children during the rolling reload")
    except BenchError as e:
        log(f"error: {e}")
        ok = False
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        for p in list(PROCS):
            stop_proc(p)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
