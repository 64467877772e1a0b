#!/usr/bin/env python3
"""Benchmark of upgrading the supervisor itself: in place and by takeover.

    scripts/bench_upgrade.py [--runs 3] [--upgrades 10] [--bin-dir DIR]

Without --bin-dir it first runs `cargo build --release --quiet --bin supervisor
--example demo_server --example load`. Each run, for 1 and for 1,000 listeners
(the load goes to the first), with examples/load on 16 keep-alive connections
throughout:

1. In place: `supervisor upgrade` N times. Figures: the wall time of the client
   (spawn to exit: check, exec, restore, answer), and the time the new image
   reports in its answer (`... in X`: from the request to the new image serving
   the control socket).
2. Takeover: N times, a new supervisor `--takeover CONTROL` with the same
   options takes over from the running one. Figures: from the new supervisor's
   start to the control socket answering a `status` with its pid (sockets
   fetched, first generation ready, old one told to drain), and to the old
   supervisor's exit (its generation quiesced and drained).

Failed requests of the load over all of it (expected 0). The supervisor's pid
must not change across in-place upgrades. Medians of all samples, with min and
max; each run's median too. Python 3 stdlib only, Linux. Every process started
is stopped by pid at the end, also on error or Ctrl+C; the temp dir is removed.
Exit status: 0 when every upgrade worked and no request failed, else 1.
"""

import argparse, json, os, re, signal, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROCS: list[subprocess.Popen] = []


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[bench_upgrade {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|µs|ms|s)", text)
    if not m:
        raise BenchError(f"cannot read the duration {text!r}")
    return float(m.group(1)) * {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout:g}s")
        time.sleep(0.002)


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 20.0) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def client(exe: str, *args: str, timeout: float = 60.0) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    wall = (time.perf_counter() - t0) * 1e3
    if wall > 2000:
        log(f"slow: supervisor {args[0]} took {wall:.0f} ms")
    if out.returncode != 0:
        raise BenchError(f"supervisor {' '.join(args)}: exit {out.returncode}: {out.stderr.strip()}")
    return wall, out.stdout.strip()


class Run:
    def __init__(self, bins: Path, tmp: Path, listeners: int) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True)
        self.exe = str(tmp / "supervisor")
        shutil.copy(bins / "supervisor", self.exe)
        self.control = str(tmp / "c.sock")
        self.args = ["--control", self.control, "--drain-timeout", "10s"]
        for _ in range(listeners):
            self.args += ["--listen", "127.0.0.1:0"]
        self.args += ["--", str(bins / "examples" / "demo_server")]
        self.sup = self.start()
        status = self.status()
        self.port = int(status["listeners"][0]["address"].rsplit(":", 1)[1])

    def start(self, *extra: str) -> subprocess.Popen:
        out = open(self.tmp / f"sup-{len(PROCS)}.log", "wb")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "debug"))
        proc = subprocess.Popen([self.exe, *extra, *self.args], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
        PROCS.append(proc)
        return proc

    def status(self) -> dict:
        def ask():
            t0 = time.perf_counter()
            try:
                r = subprocess.run([self.exe, "status", "--json", "--control", self.control],
                                   capture_output=True, text=True, timeout=20)
            except subprocess.TimeoutExpired:
                log("slow: supervisor status took more than 20 s (asked again)")
                return None
            wall = (time.perf_counter() - t0) * 1e3
            if wall > 2000:
                log(f"slow: supervisor status took {wall:.0f} ms")
            return json.loads(r.stdout) if r.returncode == 0 else None
        return wait_for(ask, 90, "status")

    def in_place(self, n: int, res: dict, cond: str) -> None:
        pid = self.sup.pid
        for _ in range(n):
            wall, text = client(self.exe, "upgrade", "--control", self.control)
            m = re.search(r" in (\S+)$", text)
            if not m:
                raise BenchError(f"unexpected answer: {text!r}")
            res.setdefault(("in place", cond, "wall"), []).append(wall)
            res.setdefault(("in place", cond, "reported"), []).append(ms(m.group(1)))
        if self.status()["supervisor"]["pid"] != pid:
            raise BenchError("the supervisor's pid changed")

    def takeover(self, n: int, res: dict, cond: str) -> None:
        for _ in range(n):
            old = self.sup
            t0 = time.perf_counter()
            new = self.start("--takeover", self.control)
            def serving() -> bool:
                st = self.status()
                return st["supervisor"]["pid"] == new.pid and any(
                    g["state"] == "active" for g in st["generations"])
            wait_for(serving, 120, "the new supervisor serving")
            serving = (time.perf_counter() - t0) * 1e3
            try:
                old.wait(120)
            except subprocess.TimeoutExpired:
                raise BenchError("the old supervisor did not exit")
            gone = (time.perf_counter() - t0) * 1e3
            if old.returncode != 0:
                raise BenchError(f"the old supervisor exited {old.returncode}")
            res.setdefault(("takeover", cond, "serving"), []).append(serving)
            res.setdefault(("takeover", cond, "old gone"), []).append(gone)
            self.sup = new
            # A reload between takeovers, as a service may do. (Builds
            # before the sockets made ahead of time needed it: the old
            # generations' sockets stood in the groups as spares until the
            # next reload, one per listener per takeover.)
            client(self.exe, "reload", "--control", self.control)


def run_once(bins: Path, tmp: Path, cfg, res: dict) -> None:
    for listeners in (1, 1000):
        cond = f"{listeners} listener{'s' if listeners > 1 else ''}"
        log(f"{cond}: {cfg.upgrades} in-place upgrades, then {cfg.upgrades} takeovers, under load")
        run = Run(bins, tmp / f"l{listeners}", listeners)
        try:
            with open(tmp / f"load-{listeners}.json", "wb") as out:
                load = subprocess.Popen([str(bins / "examples" / "load"), "--addr", f"127.0.0.1:{run.port}",
                                         "--connections", "16", "--duration", "600s", "--json"],
                                        stdin=subprocess.DEVNULL, stdout=out, start_new_session=True)
            PROCS.append(load)
            time.sleep(0.5)  # pacing: the load reaches its steady state
            run.in_place(cfg.upgrades, res, cond)
            run.takeover(cfg.upgrades, res, cond)
            time.sleep(0.5)
            stop(load, signal.SIGINT)
            report = json.loads((tmp / f"load-{listeners}.json").read_text().strip().splitlines()[-1])
            res.setdefault(("load", cond, "requests"), []).append(report["requests"])
            res.setdefault(("load", cond, "failed"), []).append(report["failed"] + report["non_2xx"])
        finally:
            stop(run.sup)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--upgrades", type=int, default=10)
    ap.add_argument("--bin-dir", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    cfg = ap.parse_args()
    bins = cfg.bin_dir
    if bins is None:
        log("building (release)")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "supervisor",
                        "--example", "demo_server", "--example", "load"], cwd=ROOT, check=True)
        bins = ROOT / "target" / "release"
    tmp = Path(tempfile.mkdtemp(prefix="bench-upgrade-"))
    runs: list[dict] = []
    ok = True
    try:
        for i in range(cfg.runs):
            log(f"run {i + 1} of {cfg.runs}")
            res: dict = {}
            run_once(bins, tmp / f"run{i}", cfg, res)
            runs.append(res)
    except (BenchError, subprocess.SubprocessError) as e:
        log(f"error: {e}")
        for f in sorted(tmp.glob("**/sup-*.log"))[-2:]:
            lines = f.read_text(errors="replace").splitlines()
            lines = [l for l in lines if "listening on" not in l]
            log(f"the last lines of {f.name}:\n" + "\n".join(lines[-25:]))
        ok = False
    except KeyboardInterrupt:
        log("interrupted")
        ok = False
    finally:
        for p in PROCS:
            stop(p, signal.SIGKILL if p.poll() is None else signal.SIGTERM, 5)
        if cfg.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if not runs:
        return 1
    print(f"{'figure':58} {'median':>9} {'min':>9} {'max':>9}   per run")
    keys = sorted({k for r in runs for k in r}, key=lambda k: (k[0] == "load", k))
    failed = 0
    for k in keys:
        samples = [x for r in runs for x in r.get(k, [])]
        per_run = [statistics.median(r[k]) for r in runs if k in r]
        unit = "" if k[0] == "load" else " ms"
        name = f"{k[0]}, {k[1]}: {k[2]}{unit}"
        print(f"{name:58} {statistics.median(samples):9.1f} {min(samples):9.1f} {max(samples):9.1f}   "
              + " ".join(f"{x:.1f}" for x in per_run))
        if k[0] == "load" and k[2] == "failed":
            failed += sum(samples)
    print(f"failed requests in all: {failed:g} (expected 0)")
    return 0 if ok and failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
