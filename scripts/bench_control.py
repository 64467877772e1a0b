#!/usr/bin/env python3
"""Benchmark of the control socket (`supervisor reload|status`), with SIGHUP beside it.

    scripts/bench_control.py [--runs 3] [--reloads 30] [--quick] [--bin-dir DIR]

Without --bin-dir it first runs `cargo build --release --quiet --bin supervisor
--example demo_server --example load`. Each run starts a fresh `supervisor -l
127.0.0.1:0 --ready notify --control TMP/c.sock -- demo_server --delay 2ms` and
measures, on loopback:

1. `supervisor reload`: wall time from spawning the client to its exit (exit 0
   required), the "ready in X" of its answer, and the paired difference (client
   + control overhead); idle and under examples/load (32 connections, 0 failed
   requests required).
2. SIGHUP: from `kill -HUP` to the timestamp of the log line `generation N (pid
   P) ready in X` (log file polled with a deadline), and minus X. Client and
   SIGHUP reloads alternate, each after the previous generation has drained.
3. `supervisor status` and `status --json`: wall time, JSON size; 1 and 1,000 listeners.
4. The supervisor's context switches over 10 s idle, control socket open (expect 0).

Figures: median and p90 of all samples of all runs, and each run's median. Table
on stdout, progress on stderr. Python 3 stdlib only, Linux. Every process started
is stopped by pid at the end, also on Ctrl+C or an error; the temp dir is removed.
Exit status: 0 all measured and both checks met, 1 otherwise, 130 interrupted.
"""

import argparse, calendar, json, math, os, re, resource, select, shutil, signal
import statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROCS: list[subprocess.Popen] = []  # long-lived processes: supervisors, load
CLIENTS: set[int] = set()  # client processes in flight (posix_spawn)
STAMP = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d+)Z supervisor\[\d+\] \w+: "


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[bench_control {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ms(text: str) -> float:
    """Milliseconds from the supervisor's durations: 850us, 2.1ms, 1.2s."""
    m = re.fullmatch(r"([\d.]+)(us|µs|ms|s)", text)
    if not m:
        raise BenchError(f"cannot read the duration {text!r}")
    return float(m.group(1)) * {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def run_client(exe: str, out: Path, args: list[str], timeout: float = 15.0) -> tuple[float, str]:
    """Runs `supervisor ARGS`: (ms from spawn to exit, its output). Exit status 0 required."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t0 = time.perf_counter()
        pid = os.posix_spawn(exe, [exe, *args], os.environ, setsid=True,
                             file_actions=[(os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2)])
        CLIENTS.add(pid)
        pidfd = os.pidfd_open(pid)  # readable at its exit: a bounded wait, timed to the exit
        exited = select.select([pidfd], [], [], timeout)[0]
        wall = (time.perf_counter() - t0) * 1e3
        os.close(pidfd)
        if not exited:
            raise BenchError(f"supervisor {' '.join(args)}: no exit within {timeout:.0f}s")
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        CLIENTS.discard(pid)
    finally:
        os.close(fd)
    text = out.read_text(errors="replace")
    if code != 0:
        raise BenchError(f"supervisor {' '.join(args)}: exit status {code}: {text}")
    return wall, text


def stop_proc(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} still running {timeout:.0f}s after signal {sig}: SIGKILL")
            proc.kill()
            proc.wait()


class Supervisor:
    def __init__(self, bins: Path, tmp: Path, listeners: int = 1) -> None:
        self.exe, self.tmp, self.sock, self.logpath = str(bins / "supervisor"), tmp, tmp / "c.sock", tmp / "log"
        tmp.mkdir()
        argv = [self.exe] + ["-l", "127.0.0.1:0"] * listeners + ["--ready", "notify", "--ready-timeout", "10s",
                "--drain-timeout", "10s", "--control", str(self.sock), "--", str(bins / "examples" / "demo_server"),
                "--delay", "2ms"]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_SOCKET", "WATCHDOG_"))}
        with open(self.logpath, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                         env=env | {"RUST_LOG": "info"}, start_new_session=True)
        PROCS.append(self.proc)
        self.pid, self.gen = self.proc.pid, 1
        self.port = int(self.wait(r"listening on 127\.0\.0\.1:(\d+) as", 0, 10 + listeners / 50).group(1))
        self.wait(r"generation 1 \(pid \d+\) ready in", 0, 10)

    def wait(self, pattern: str, since: int, timeout: float) -> re.Match:
        """Polls the log file from byte `since` on for `pattern`, until a deadline."""
        regex, deadline = re.compile(pattern), time.monotonic() + timeout
        while True:
            with open(self.logpath, "rb") as f:
                f.seek(since)
                m = regex.search(f.read().decode(errors="replace"))
            if m:
                return m
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.logpath.read_text(errors="replace")[-2000:]
                raise BenchError(f"{pattern!r} not in the supervisor's log (exit {self.proc.poll()}):\n{tail}")
            time.sleep(0.002)

    def client(self, *args: str) -> tuple[float, str]:
        return run_client(self.exe, self.tmp / "client.out", [*args, "--control", str(self.sock)])

    def reload(self, by_signal: bool) -> tuple[float, float]:
        """(ms from spawning the client or from kill -HUP to ready, the supervisor's 'ready in' ms)."""
        self.gen += 1
        since = self.logpath.stat().st_size
        if by_signal:
            t0 = time.time_ns() // 1000
            os.kill(self.pid, signal.SIGHUP)
            m = self.wait(STAMP + rf"(?:generation {self.gen} \(pid \d+\) ready in ([^;\s]+)|reload failed.*)", since, 15)
            if m.group(3) is None:
                raise BenchError(f"SIGHUP reload: {m.group(0)}")
            secs = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
            total, ready = (secs * 1_000_000 + int(m.group(2).ljust(6, "0")[:6]) - t0) / 1e3, m.group(3)
        else:
            total, text = self.client("reload", "--timeout", "10s")
            m = re.search(rf"generation {self.gen} \(pid \d+\) ready in ([^;\s]+)", text)
            if not m:
                raise BenchError(f"unexpected answer to reload: {text!r}")
            ready = m.group(1)
        # (pid N) is left out when two generations are reaped at once
        self.wait(rf"generation {self.gen - 1}(?: \(pid \d+\))? drained in", since, 15)
        time.sleep(0.02)  # pacing between reloads
        return total, ms(ready)

    def switches(self) -> tuple[int, int]:
        """(voluntary, nonvoluntary) context switches, all threads."""
        total = [0, 0]
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            for line in (task / "status").read_text().splitlines():
                for i, key in enumerate(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total[i] += int(line.split()[1]) if line.startswith(key) else 0
        return total[0], total[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.client("stop", "--timeout", "15s")
                self.proc.wait(5)
            except (BenchError, subprocess.TimeoutExpired) as err:
                log(f"supervisor stop: {err}; SIGTERM")
        stop_proc(self.proc)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.proc.returncode != 0:
            raise BenchError(f"the supervisor exited with status {self.proc.returncode}")


def reloads(sup: Supervisor, n: int, res: dict, cond: str) -> None:
    for _ in range(n):  # alternate, so that both see the same conditions
        for kind in ("client", "SIGHUP"):
            total, ready = sup.reload(by_signal=kind == "SIGHUP")
            for what, value in (("total", total), ("ready", ready), ("over", total - ready)):
                res.setdefault((cond, kind, what), []).append(value)


def statuses(sup: Supervisor, n: int, res: dict, cond: str, listeners: int) -> None:
    for _ in range(n):
        res.setdefault((cond, "status", "wall"), []).append(sup.client("status")[0])
        wall, text = sup.client("status", "--json")
        if len(json.loads(text)["listeners"]) != listeners:
            raise BenchError(f"status --json: not {listeners} listeners: {text[:300]}")
        res.setdefault((cond, "status --json", "wall"), []).append(wall)
        res.setdefault((cond, "status --json", "size"), []).append(len(text.encode()))


def run_once(bins: Path, tmp: Path, cfg: argparse.Namespace, res: dict) -> None:
    sup = Supervisor(bins, tmp / "one")
    try:
        log(f"{cfg.reloads} client + {cfg.reloads} SIGHUP reloads, idle")
        reloads(sup, cfg.reloads, res, "idle")
        log(f"{cfg.reloads} client + {cfg.reloads} SIGHUP reloads under load")
        with open(tmp / "load.json", "wb") as out:
            load = subprocess.Popen([str(bins / "examples" / "load"), "--addr", f"127.0.0.1:{sup.port}",
                                     "--connections", "32", "--duration", f"{10 + cfg.reloads}s", "--json"],
                                    stdin=subprocess.DEVNULL, stdout=out, start_new_session=True)
        PROCS.append(load)
        time.sleep(0.5)  # pacing: the load reaches its steady state
        reloads(sup, cfg.reloads, res, "load")
        if load.poll() is not None:
            raise BenchError("the load ended before the reloads did")
        time.sleep(0.5)
        stop_proc(load, signal.SIGINT)  # it reports; requests abandoned in flight are not failures
        report = json.loads((tmp / "load.json").read_text().strip().splitlines()[-1])
        res["load requests"], res["load failures"] = report["requests"], report["failed"] + report["non_2xx"]
        log(f"status x {cfg.status}, then {cfg.idle:g}s idle")
        statuses(sup, cfg.status, res, "1 listener", 1)
        time.sleep(1.0)  # settle: the load's connections are closed
        before = sup.switches()
        time.sleep(cfg.idle)
        after = sup.switches()
        res["idle voluntary"], res["idle nonvoluntary"] = after[0] - before[0], after[1] - before[1]
    finally:
        sup.stop()
    log("status with 1,000 listeners")
    sup = Supervisor(bins, tmp / "many", listeners=1000)
    try:
        statuses(sup, cfg.status, res, "1,000 listeners", 1000)
    finally:
        sup.stop()


NAMES = {("client", "total"): "`supervisor reload`: spawn -> exit (wall)",
         ("client", "over"): "  wall - ready in (client + control overhead)",
         ("SIGHUP", "total"): "SIGHUP: kill -HUP -> ready line's timestamp",
         ("SIGHUP", "over"): "  that - ready in (signal overhead)",
         "ready": "  the supervisor's 'ready in'", "wall": "{}: spawn -> exit (wall)", "size": "{}: answer size"}
SCALARS = {"load requests": "load: requests", "load failures": "load: failed requests (must be 0)",
           "idle voluntary": "voluntary ctxt switches, {}s idle (expect 0)",
           "idle nonvoluntary": "nonvoluntary ctxt switches, {}s idle"}  # fmt: skip


def print_table(runs: list[dict], cfg: argparse.Namespace) -> None:
    print(f"\n{'figure':<50} {'unit':<5} {'n':>4} {'median':>8} {'p90':>8}  per-run medians")
    last = None
    for key in [k for k in runs[0] if isinstance(k, tuple)]:
        cond, kind, what = key
        if cond != last:
            print(f"-- {cond}" + (" (examples/load, 32 connections)" if cond == "load" else ""))
            last = cond
        values = [v for r in runs for v in r.get(key, [])]
        meds = [statistics.median(r[key]) for r in runs if r.get(key)]
        p90 = sorted(values)[max(0, math.ceil(0.9 * len(values)) - 1)]
        fmt = "{:8.0f}" if what == "size" else "{:8.3f}"
        name = NAMES.get((kind, what), NAMES.get(what, "")).format(kind)
        print(f"{name:<50} {'bytes' if what == 'size' else 'ms':<5} {len(values):>4} {fmt.format(statistics.median(values))}"
              f" {fmt.format(p90)}  " + " / ".join(fmt.format(m).strip() for m in meds))
    print("-- per run (each run's value)")
    for key, name in SCALARS.items():
        print(f"{name.format(f'{cfg.idle:g}'):<50} {'':<5} {len(runs):>4}  " + " / ".join(str(r.get(key, "-")) for r in runs))


def main() -> int:
    ap = argparse.ArgumentParser(description="Benchmark supervisor reload/status over the control socket.")
    ap.add_argument("--bin-dir", type=Path, help="use this release build instead of running cargo build")
    ap.add_argument("--runs", type=int, default=3, help="runs, each with a fresh supervisor (default 3)")
    ap.add_argument("--reloads", type=int, default=30, help="reloads of each kind, idle and under load, per run")
    ap.add_argument("--quick", action="store_true", help="a smoke test: 1 run, 5 reloads, 5 status, 2 s idle")
    cfg = ap.parse_args()
    cfg.runs, cfg.reloads, cfg.status, cfg.idle = (1, 5, 5, 2.0) if cfg.quick else (cfg.runs, cfg.reloads, 30, 10.0)
    started = time.monotonic()
    bins = cfg.bin_dir
    if bins is None:
        log("cargo build --release --quiet --bin supervisor --example demo_server --example load")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "supervisor", "--example", "demo_server",
                        "--example", "load"], cwd=ROOT, check=True, timeout=900)  # fmt: skip
        bins = ROOT / "target" / "release"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # 1,000 listeners: as scripts/bench.py
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for sig in (signal.SIGINT, signal.SIGTERM):  # both stop everything, as Ctrl+C
        signal.signal(sig, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="supervisor-bench-control."))
    runs: list[dict] = []
    status = 0
    try:
        for i in range(cfg.runs):
            log(f"run {i + 1}/{cfg.runs}")
            runs.append({})
            run_once(bins, tmp, cfg, runs[-1])
    except KeyboardInterrupt:
        print("\nbench_control: interrupted; stopping everything", file=sys.stderr)
        status = 130
    except (BenchError, subprocess.SubprocessError, OSError, ValueError, KeyError) as err:
        print(f"\nbench_control: error: {err}", file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for pid in list(CLIENTS):
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        for proc in reversed(PROCS):
            stop_proc(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    if runs and runs[0]:
        print(f"supervisor control benchmark: {os.cpu_count()} CPUs, Linux {os.uname().release}, {len(runs)} run(s), "
              f"{cfg.reloads} reloads of each kind per condition" + (" (--quick: not comparable)" if cfg.quick else ""))
        print_table(runs, cfg)
    if status == 0:
        failures, idle = [r["load failures"] for r in runs], [r["idle voluntary"] for r in runs]
        met = max(failures) == 0 and max(idle) == 0
        print(f"\ncheck: 0 load failures {failures}, 0 idle voluntary switches {idle}: {'met' if met else 'MISSED'}")
        status = 0 if met else 1
    print(f"total time: {time.monotonic() - started:.0f}s")
    return status


if __name__ == "__main__":
    sys.exit(main())
