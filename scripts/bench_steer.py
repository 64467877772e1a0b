#!/usr/bin/env python3
"""What steer mode costs, against shared mode, and how it grows.

    scripts/bench_steer.py [--bin-dir DIR] [--base-bin-dir DIR] [--items 1,2,3,4,5]
                           [--svg FILE] [--csv FILE] [--quick]

Without --bin-dir it first runs `cargo build --release --quiet --bin
supervisor --example demo_server --example load`. It compiles the child most
items use, scripts/bench_children/ready_at_once.c (ready at once: READY=1, then
it waits for SIGTERM), with the system C compiler. Every figure of an item is
measured in one run, the two hand-off modes (or the two builds) alternating
reload by reload, so that both meet the same machine:

1. A reload with 1,000 listeners, steer against shared (9 alternating pairs):
   the supervisor's own `ready in` figure (from the reload request to the new
   generation's READY=1, as the `reload` answer says), and SIGHUP to its `ready
   in` log line (which comes after new connections are routed to it).
2. Takeover with 1,000 listeners (the demo server): from the new supervisor's
   start to its `told to let its generations go` line (it serves), idle, then
   under examples/load (16 keep-alive connections), with the steps from its log:
   the sockets received, its generation started, ready, serving; a reload
   (not timed) after each. Failed requests of the load (expected 0). The
   same ratio from the supervisor's own count on that line (from its start,
   so without the time this script takes to fork it), with its time on a CPU
   and waiting for one (the kernel's schedstat), and whether the kernel
   groups CPU weight by session (kernel.sched_autogroup_enabled).
3. Per-reload overhead with one listener: 41 alternating pairs, the same two
   figures as item 1.
4. Idle RSS (VmRSS) of this build against --base-bin-dir's (one listener, after
   a reload, 3 supervisors each, side by side), and the context switches of each
   in 10 s idle (expected 0).
5. Growth: reload time, the supervisor's CPU time per reload (user + system,
   from /proc, over the reload and everything it leads to: routing, the old
   generation's stop and release, the next reserve) and RSS against the number
   of listeners (1, 10, 100, 1,000, 5,000) and of workers (1, 4, 16, 64), both
   modes; drawn as an SVG (--svg, default target/bench/steer.svg).

A steered listener holds up to 3 sockets in the supervisor during a reload
(the old generation's, the new one's and the next reserve); the 5,000-listener
run needs about 15,100 fds in the supervisor and 5,000 in the child. The script
raises its soft limit on open files to the hard limit and says so if that is
not enough (the 5,000 run is then skipped). Python 3 stdlib only, Linux. Every
process started is stopped by pid at the end, also on error or Ctrl+C.
"""

import argparse, csv, json, os, re, resource, shutil, signal, statistics, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROCS: list[subprocess.Popen] = []
MODES = ("steer", "shared")


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[bench_steer {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 30.0) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout:g}s")
        time.sleep(0.002)


def line_time(line: str) -> float:
    """The Unix time of a log line (`2026-01-02T03:04:05.123456Z ...`)."""
    stamp = line.split(" ", 1)[0]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def duration_ms(text: str) -> float:
    mins = re.fullmatch(r"(\d+)m(\d+)s", text)
    if mins:
        return (int(mins.group(1)) * 60 + int(mins.group(2))) * 1e3
    m = re.fullmatch(r"([\d.]+)(ns|us|µs|ms|s)", text)
    if not m:
        raise BenchError(f"cannot read the duration {text!r}")
    return float(m.group(1)) * {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def cpu_ms(pid: int) -> float:
    """CPU time so far (ms), from the scheduler's nanosecond count
    (/proc/PID/schedstat; /proc/PID/stat counts clock ticks of 10 ms)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e6


def status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {name} for pid {pid}")


def switches(pid: int) -> int:
    return status_field(pid, "voluntary_ctxt_switches") + status_field(pid, "nonvoluntary_ctxt_switches")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sup:
    """One supervisor with its log in a file; the log is read by offset."""

    def __init__(self, exe: Path, tmp: Path, child: list[str], listeners: int = 1, mode: str | None = None,
                 extra: list[str] | None = None, level: str = "info") -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.exe = str(exe)
        self.control = str(tmp / "c.sock")
        self.args = ["--control", self.control, "--ready", "notify", "--ready-timeout", "60s",
                     "--drain-timeout", "10s"] + (extra or [])
        if mode:
            self.args += ["--handoff", mode]
        for _ in range(listeners):
            self.args += ["--listen", "127.0.0.1:0"]
        self.args += ["--", *child]
        self.level = level
        self.gen = 1
        self.proc, self.path = self.start()
        self.pid = self.proc.pid
        self.wait_line(r"generation 1 \(pids? [\d, ]+\) ready in", 120 + listeners / 20)

    def start(self, *extra: str) -> tuple[subprocess.Popen, Path]:
        path = self.tmp / f"sup-{len(PROCS)}.log"
        out = open(path, "wb")
        env = dict(os.environ, RUST_LOG=self.level)
        proc = subprocess.Popen([self.exe, *extra, *self.args], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
        PROCS.append(proc)
        self.proc, self.path = proc, path
        return proc, path

    def lines(self) -> list[str]:
        return self.path.read_text(errors="replace").splitlines()

    def wait_line(self, pattern: str, timeout: float = 60, since: int = 0) -> tuple[int, str]:
        rx = re.compile(pattern)

        def find():
            for i, line in enumerate(self.lines()[since:], since):
                if rx.search(line):
                    return (i, line)
            if self.proc.poll() is not None:
                raise BenchError(f"the supervisor exited ({self.proc.returncode}):\n" + "\n".join(self.lines()[-15:]))
            return None
        try:
            return wait_for(find, timeout, f"log line {pattern!r}")
        except BenchError as e:
            raise BenchError(f"{e}; the last lines:\n" + "\n".join(self.lines()[-15:])) from None

    def reload(self) -> dict:
        """SIGHUP, then wait for the new generation's ready line and the
        old one's exit, and for the loop to settle (the next reserve made):
        the figures of this reload."""
        self.gen += 1
        g = self.gen
        since = len(self.lines())
        cpu0 = cpu_ms(self.pid)
        os.kill(self.pid, signal.SIGHUP)
        _, ready = self.wait_line(rf"generation {g} \(pids? [\d, ]+\) ready in (\S+?)(;|$)", 60, since)
        _, asked = self.wait_line(r"reload requested \(SIGHUP\)", 5, since)
        self.wait_line(rf"generation {g - 1} (\(pids? [\d, ]+\) )?drained in", 60, since)
        settle(self.pid)
        m = re.search(r"ready in (\S+?)(;|$)", ready)
        return {
            "ready_in": duration_ms(m.group(1)),
            "hup_to_line": (line_time(ready) - line_time(asked)) * 1e3,
            "cpu": cpu_ms(self.pid) - cpu0,
        }

    def stop(self) -> None:
        stop(self.proc)


def settle(pid: int, quiet: float = 0.05, timeout: float = 60) -> None:
    """Wait until `pid` has not run for `quiet` seconds (its context switch
    counts and its CPU time stand still): its loop sleeps in poll. (A loop
    that polls without waiting, making sockets ahead of time, may run
    without a context switch on an idle CPU: its CPU time moves.)"""
    deadline = time.monotonic() + timeout
    last = (switches(pid), cpu_ms(pid))
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.01)
        now = (switches(pid), cpu_ms(pid))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
    raise BenchError(f"pid {pid} never went quiet")


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


class Results:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, item: str, figure: str, value: str, note: str = "") -> None:
        self.rows.append((item, figure, value, note))
        print(f"{item:4} {figure:64} {value:>22}  {note}", flush=True)


def pair_figures(res: Results, item: str, label: str, runs: dict[str, list[dict]]) -> dict[str, float]:
    out = {}
    for key, name in (("ready_in", "`ready in` (request -> READY=1)"), ("hup_to_line", "SIGHUP -> ready line (after routing)"),
                      ("cpu", "supervisor CPU per reload")):
        s = median([r[key] for r in runs["steer"]])
        h = median([r[key] for r in runs["shared"]])
        out[key] = s / h if h else float("nan")
        res.add(item, f"{label}: {name}, steer / shared", f"{s:.2f} / {h:.2f} ms",
                f"ratio {out[key]:.2f}; n={len(runs['steer'])} pairs")
    return out


def alternate(cfg, label: str, listeners: int, pairs: int, child: list[str], extra: list[str] | None = None) -> dict[str, list[dict]]:
    sups = {}
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    try:
        for m in MODES:
            sups[m] = Sup(cfg.exe, cfg.tmp / f"{label}-{m}", child, listeners, m, extra)
        # One reload each first: both in their steady state (reserves made).
        for m in MODES:
            sups[m].reload()
        for _ in range(pairs):
            for m in MODES:
                runs[m].append(sups[m].reload())
        for m in MODES:
            runs[m + "_rss"] = status_field(sups[m].pid, "VmRSS")
            runs[m + "_fds"] = fds(sups[m].pid)
    finally:
        for s in sups.values():
            s.stop()
    return runs


def item1(cfg, res: Results) -> None:
    n = 1000
    log(f"item 1: reloads with {n} listeners, {cfg.pairs1} alternating pairs")
    runs = alternate(cfg, "i1", n, cfg.pairs1, cfg.child)
    pair_figures(res, "1", f"reload, {n} listeners", runs)
    if cfg.strace:
        for m in MODES:
            sup = Sup(cfg.exe, cfg.tmp / f"i1-strace-{m}", cfg.child, n, m)
            try:
                sup.reload()
                for phase, text in strace_phases(cfg, sup):
                    res.add("1", f"strace, {m}, {phase}", "", text)
            finally:
                sup.stop()


PHASES = (
    ("write", "reload requested", "SIGHUP -> spawn"),
    ("clone", None, "spawn -> ready line (READY=1, routing)"),
    ("write", "ready in", "ready -> stop signal (quiesce)"),
    ("write", "draining: sent", "stop signal -> drained"),
    ("write", "drained in", "after (release, next reserves)"),
)


def strace_phases(cfg, sup: Sup) -> list[tuple[str, str]]:
    """One reload under `strace -ttt -T`: the system calls of each phase
    (their count, and their time as strace sees it: inflated by the tracing,
    so compare counts and shares, not absolute times)."""
    trace = sup.tmp / "strace.out"
    tracer = subprocess.Popen(["strace", "-ttt", "-T", "-s", "100", "-p", str(sup.pid), "-o", str(trace)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PROCS.append(tracer)
    time.sleep(0.5)  # pacing: strace attaches (it prints nothing while the supervisor sleeps)
    if tracer.poll() is not None:
        raise BenchError("strace could not attach (is it installed, and ptrace allowed?)")
    sup.reload()
    stop(tracer, signal.SIGINT)
    phase = None
    stats: dict[str, dict] = {}
    rx = re.compile(r"(\d+\.\d+) (\w+)\((.*)<([\d.]+)>$")
    for line in trace.read_text(errors="replace").splitlines():
        m = rx.match(line.strip())
        if not m:
            continue
        name, args, dur = m.group(2), m.group(3), float(m.group(4))
        for call, text, label in PHASES:
            if name.startswith(call) and (text is None or text in args):
                if text is None and phase != PHASES[0][2]:
                    continue
                phase = label
        if phase is None or name in ("poll", "ppoll", "restart_syscall"):
            continue
        st = stats.setdefault(phase, {})
        c, t = st.get(name, (0, 0.0))
        st[name] = (c + 1, t + dur)
    out = []
    for _, _, label in PHASES:
        st = stats.get(label, {})
        total = sum(c for c, _ in st.values())
        top = sorted(st.items(), key=lambda kv: -kv[1][0])[:7]
        out.append((label, f"{total} calls: " + ", ".join(f"{n} {c}" for n, (c, _) in top)))
    return out


def item3(cfg, res: Results) -> None:
    log(f"item 3: reloads with 1 listener, {cfg.pairs3} alternating pairs")
    runs = alternate(cfg, "i3", 1, cfg.pairs3, cfg.child)
    pair_figures(res, "3", "reload, 1 listener", runs)


def item4(cfg, res: Results) -> None:
    if not cfg.base:
        log("item 4: no --base-bin-dir: skipped")
        return
    log("item 4: idle RSS, this build against the base build, 3 each, side by side")
    builds = {"this": cfg.exe, "base": cfg.base / "supervisor"}
    rss: dict[str, list[int]] = {b: [] for b in builds}
    ctx: dict[str, list[int]] = {b: [] for b in builds}
    sups = []
    try:
        for i in range(3):
            for b, exe in builds.items():
                s = Sup(exe, cfg.tmp / f"i4-{b}-{i}", cfg.child, 1)
                s.reload()
                sups.append((b, s))
        for b, s in sups:
            settle(s.pid)
            rss[b].append(status_field(s.pid, "VmRSS"))
        before = {s.pid: switches(s.pid) for _, s in sups}
        cpu_before = {s.pid: cpu_ms(s.pid) for _, s in sups}
        time.sleep(cfg.idle)
        for b, s in sups:
            ctx[b].append(switches(s.pid) - before[s.pid] + round(cpu_ms(s.pid) - cpu_before[s.pid]))
    finally:
        for _, s in sups:
            s.stop()
    t, b = median(rss["this"]), median(rss["base"])
    res.add("4", "idle RSS (VmRSS, 1 listener, after a reload): this / base", f"{t:,.0f} / {b:,.0f} kB",
            f"ratio {t / b:.2f}; this {rss['this']}, base {rss['base']}")
    res.add("4", f"idle {cfg.idle:g} s: context switches + CPU ms, this / base", f"{sum(ctx['this'])} / {sum(ctx['base'])}",
            "summed over 3 supervisors each")


def item2(cfg, res: Results) -> None:
    n = 1000
    demo = [str(cfg.bins / "examples" / "demo_server")]
    log(f"item 2: takeovers with {n} listeners, {cfg.takeovers} idle then {cfg.takeovers} under load")
    sup = Sup(cfg.exe, cfg.tmp / "i2", demo, n, level="debug")
    port = None
    for line in sup.lines():
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        raise BenchError("no listening line")
    load = None
    steps: dict[str, dict[str, list[float]]] = {}
    try:
        for cond in ("idle", "under load"):
            if cond == "under load":
                out = open(cfg.tmp / "i2-load.json", "wb")
                load = subprocess.Popen([str(cfg.bins / "examples" / "load"), "--addr", f"127.0.0.1:{port}",
                                         "--connections", "16", "--duration", "900s", "--json"],
                                        stdin=subprocess.DEVNULL, stdout=out, start_new_session=True)
                PROCS.append(load)
                time.sleep(0.5)  # pacing: the load reaches its steady state
            for _ in range(cfg.takeovers):
                old = sup.proc
                t0 = time.time()
                sup.start("--takeover", sup.control)
                _, serving = sup.wait_line(r"told to let its generations go", 180)
                text = sup.lines()
                got = [l for l in text if "socket(s) received from" in l]
                started = [l for l in text if re.search(r"generation 1 \(pid \d+\) started", l)]
                ready = [l for l in text if re.search(r"generation 1 \(pid \d+\) ready in", l)]
                first = text[0] if text else serving
                try:
                    old.wait(180)
                except subprocess.TimeoutExpired:
                    raise BenchError("the old supervisor did not exit") from None
                gone = time.time()
                if old.returncode != 0:
                    raise BenchError(f"the old supervisor exited {old.returncode}")
                sup.pid = sup.proc.pid
                st = steps.setdefault(cond, {})
                marks = [("start -> first log line", t0, first)]
                if got:
                    marks.append(("-> sockets received", None, got[0]))
                if started:
                    marks.append(("-> generation started", None, started[0]))
                if ready:
                    marks.append(("-> generation ready", None, ready[0]))
                marks.append(("-> serving (old told to go)", None, serving))
                prev = t0
                for name, _, line in marks:
                    t = line_time(line)
                    st.setdefault(name, []).append((t - prev) * 1e3)
                    prev = t
                st.setdefault("start -> serving", []).append((line_time(serving) - t0) * 1e3)
                # The supervisor's own count, from its start (so without the
                # time this script takes to fork it), with its time on a CPU
                # and waiting for one.
                own = re.search(r"\((\S+) after this supervisor started(?:: (\S+) on a CPU, (\S+) waiting for one)?\)", serving)
                if own:
                    st.setdefault("own count: its start -> serving", []).append(duration_ms(own.group(1)))
                    if own.group(2):
                        st.setdefault("own count: on a CPU", []).append(duration_ms(own.group(2)))
                        st.setdefault("own count: waiting for a CPU", []).append(duration_ms(own.group(3)))
                st.setdefault("start -> old supervisor exited", []).append((gone - t0) * 1e3)
                st.setdefault("fds after (settled)", []).append(0)
                settle(sup.pid)
                st["fds after (settled)"][-1] = fds(sup.pid)
                # A reload before the next takeover, as scripts/bench_upgrade.py
                # does (a build that piles up spare sockets across takeovers
                # needs it; not timed).
                sup.gen = 1
                sup.reload()
    finally:
        if load is not None:
            stop(load, signal.SIGINT)
        sup.stop()
    failed = "?"
    if load is not None:
        try:
            report = json.loads((cfg.tmp / "i2-load.json").read_text().strip().splitlines()[-1])
            failed = report["failed"] + report["non_2xx"]
            res.add("2", "load during the takeovers: requests; failed", f"{report['requests']:,}; {failed}")
        except (OSError, ValueError, KeyError, IndexError) as e:
            log(f"no load report: {e}")
    idle = median(steps["idle"]["start -> serving"])
    loaded = median(steps["under load"]["start -> serving"])
    res.add("2", f"takeover, {n} listeners: start -> serving, under load / idle", f"{loaded:.0f} / {idle:.0f} ms",
            f"ratio {loaded / idle:.2f}; n={cfg.takeovers} each")
    key = "own count: its start -> serving"
    if key in steps["idle"] and key in steps["under load"]:
        idle, loaded = median(steps["idle"][key]), median(steps["under load"][key])
        res.add("2", f"takeover, {n} listeners: its own count, under load / idle", f"{loaded:.0f} / {idle:.0f} ms",
                f"ratio {loaded / idle:.2f}; from the new supervisor's start")
    res.add("2", "kernel.sched_autogroup_enabled", autogroup(),
            "1: each session's processes share one CPU weight")
    for cond in ("idle", "under load"):
        for name, xs in steps[cond].items():
            if name == "start -> serving":
                continue
            unit = "" if name.startswith("fds") else " ms"
            res.add("2", f"  {cond}: {name}", f"{median(xs):.1f}{unit}", f"min {min(xs):.1f}, max {max(xs):.1f}")


def autogroup() -> str:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        return "absent"


def item5(cfg, res: Results) -> dict:
    log("item 5: growth with listeners and workers, both modes")
    growth: dict = {"listeners": {}, "workers": {}}
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    for n in cfg.listener_counts:
        need = 3 * n + 100
        if need > limit:
            log(f"  {n} listeners need about {need} fds, the limit is {limit}: skipped")
            continue
        reloads = cfg.growth_reloads if n < 5000 else max(3, cfg.growth_reloads // 2)
        log(f"  {n} listener(s), {reloads} reloads each mode")
        runs = alternate(cfg, f"g-l{n}", n, reloads, cfg.child)
        for m in MODES:
            growth["listeners"][(m, n)] = {
                "ready_in": median([r["ready_in"] for r in runs[m]]),
                "hup_to_line": median([r["hup_to_line"] for r in runs[m]]),
                "cpu": median([r["cpu"] for r in runs[m]]),
                "rss": runs[m + "_rss"],
                "fds": runs[m + "_fds"],
            }
    for w in cfg.worker_counts:
        log(f"  {w} worker(s), {cfg.growth_reloads} reloads each mode")
        runs = alternate(cfg, f"g-w{w}", 1, cfg.growth_reloads, cfg.child, ["--workers", str(w)])
        for m in MODES:
            growth["workers"][(m, w)] = {
                "ready_in": median([r["ready_in"] for r in runs[m]]),
                "hup_to_line": median([r["hup_to_line"] for r in runs[m]]),
                "cpu": median([r["cpu"] for r in runs[m]]),
                "rss": runs[m + "_rss"],
                "fds": runs[m + "_fds"],
            }
    for kind in ("listeners", "workers"):
        for (m, n), v in sorted(growth[kind].items(), key=lambda kv: (kv[0][1], kv[0][0])):
            res.add("5", f"{n:>5} {kind}, {m}: ready in; SIGHUP->line; CPU/reload; RSS; fds",
                    f"{v['ready_in']:.2f}; {v['hup_to_line']:.2f}; {v['cpu']:.1f} ms; {v['rss']:,} kB; {v['fds']}")
    return growth


# --- the picture -------------------------------------------------------------

def svg_plot(growth: dict, path: Path, title: str) -> None:
    """Four panels, log-log: reload time and CPU per reload against
    listeners, RSS against listeners, reload time and CPU against workers."""
    W, H = 980, 640
    colors = {"steer": "#1f6fb4", "shared": "#d9661f"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>']
    import math

    def panel(x0, y0, w, h, series, xlabel, ylabel, name):
        pts = [(x, y) for s in series for (x, y) in s[2] if x > 0 and y > 0]
        if not pts:
            return
        lx = [math.log10(x) for x, _ in pts]
        ly = [math.log10(y) for _, y in pts]
        xa, xb = math.floor(min(lx)), math.ceil(max(lx))
        ya, yb = math.floor(min(ly)), math.ceil(max(ly))
        if xb == xa:
            xb += 1
        if yb == ya:
            yb += 1
        X = lambda v: x0 + (math.log10(v) - xa) / (xb - xa) * w
        Y = lambda v: y0 + h - (math.log10(v) - ya) / (yb - ya) * h
        out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>')
        out.append(f'<text x="{x0 + w / 2}" y="{y0 - 8}" text-anchor="middle" font-size="13">{name}</text>')
        for e in range(xa, xb + 1):
            xv = X(10 ** e)
            out.append(f'<line x1="{xv:.1f}" y1="{y0}" x2="{xv:.1f}" y2="{y0 + h}" stroke="#eee"/>')
            out.append(f'<text x="{xv:.1f}" y="{y0 + h + 15}" text-anchor="middle">{10 ** e:g}</text>')
        for e in range(ya, yb + 1):
            yv = Y(10 ** e)
            out.append(f'<line x1="{x0}" y1="{yv:.1f}" x2="{x0 + w}" y2="{yv:.1f}" stroke="#eee"/>')
            out.append(f'<text x="{x0 - 5}" y="{yv + 4:.1f}" text-anchor="end">{10 ** e:g}</text>')
        # A line of slope 1 (linear growth) through the last point of the
        # first series, for reference: a steeper series grows faster than
        # linearly there.
        if series and series[0][2]:
            bx, by = series[0][2][-1]
            sx = 10 ** xa
            sy = by * sx / bx
            clip = f"clip{len(out)}"
            out.append(f'<clipPath id="{clip}"><rect x="{x0}" y="{y0}" width="{w}" height="{h}"/></clipPath>')
            out.append(f'<line x1="{X(sx):.1f}" y1="{Y(sy):.1f}" x2="{X(bx):.1f}" y2="{Y(by):.1f}" '
                       f'stroke="#bbb" stroke-dasharray="4,4" clip-path="url(#{clip})"/>')
        out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 32}" text-anchor="middle">{xlabel}</text>')
        out.append(f'<text x="{x0 - 55}" y="{y0 + h / 2}" text-anchor="middle" '
                   f'transform="rotate(-90 {x0 - 55} {y0 + h / 2})">{ylabel}</text>')
        for k, (label, color, data, dash) in enumerate(series):
            data = [(x, y) for x, y in data if x > 0 and y > 0]
            d = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in data)
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"'
                       + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
            for x, y in data:
                out.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3" fill="{color}"/>')
            out.append(f'<text x="{x0 + 8}" y="{y0 + 16 + 14 * k}" fill="{color}">{label}</text>')

    def series(kind, key, modes=MODES, dash=""):
        out = []
        for m in modes:
            data = sorted((n, v[key]) for (mm, n), v in growth[kind].items() if mm == m)
            out.append((f"{m}: {KEYS[key]}", colors[m], data, dash))
        return out

    KEYS = {"hup_to_line": "SIGHUP -> ready line (ms)", "ready_in": "ready in (ms)", "cpu": "CPU per reload (ms)",
            "rss": "RSS (kB)"}
    pw, ph = 370, 200
    panel(90, 60, pw, ph, series("listeners", "hup_to_line") + series("listeners", "ready_in", dash="2,3"),
          "listeners", "ms", "reload time against listeners")
    panel(570, 60, pw, ph, series("listeners", "cpu"), "listeners", "ms of CPU", "supervisor CPU per reload")
    panel(90, 360, pw, ph, series("listeners", "rss"), "listeners", "kB", "supervisor RSS after the reloads")
    panel(570, 360, pw, ph, series("workers", "hup_to_line") + series("workers", "cpu", dash="2,3"),
          "workers", "ms", "reload time and CPU against workers")
    out.append(f'<text x="{W / 2}" y="{H - 10}" text-anchor="middle" fill="#666">log-log axes; dashed grey: '
               "linear growth (slope 1) into the last point of the first series; dotted: the second figure</text>")
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", type=Path, help="DIR/supervisor, DIR/examples/{demo_server,load}; default: build")
    ap.add_argument("--base-bin-dir", type=Path, help="the build to compare item 4 with")
    ap.add_argument("--items", default="1,2,3,4,5")
    ap.add_argument("--svg", type=Path, default=ROOT / "target" / "bench" / "steer.svg")
    ap.add_argument("--csv", type=Path, default=ROOT / "target" / "bench" / "steer.csv")
    ap.add_argument("--quick", action="store_true", help="few samples: a smoke test of the script")
    ap.add_argument("--strace", action="store_true", help="item 1: the system calls of each phase of a reload")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    cfg = ap.parse_args()
    items = {int(x) for x in cfg.items.split(",") if x}
    cfg.pairs1, cfg.pairs3, cfg.takeovers, cfg.growth_reloads, cfg.idle = (9, 41, 7, 5, 10.0)
    cfg.listener_counts, cfg.worker_counts = (1, 10, 100, 1000, 5000), (1, 4, 16, 64)
    if cfg.quick:
        cfg.pairs1, cfg.pairs3, cfg.takeovers, cfg.growth_reloads, cfg.idle = (2, 3, 1, 2, 1.0)
        cfg.listener_counts, cfg.worker_counts = (1, 100), (1, 4)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log(f"open files: soft limit raised from {soft} to {hard} (5,000 listeners need about 15,100)"
        if soft < hard else f"open files: limit {soft} (5,000 listeners need about 15,100)")
    bins = cfg.bin_dir
    if bins is None:
        log("building (release)")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "supervisor",
                        "--example", "demo_server", "--example", "load"], cwd=ROOT, check=True)
        bins = ROOT / "target" / "release"
    cfg.bins = bins
    cfg.exe = bins / "supervisor"
    cfg.base = cfg.base_bin_dir
    cfg.tmp = Path(tempfile.mkdtemp(prefix="bench-steer-"))
    child = cfg.tmp / "ready_at_once"
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        log("no C compiler (cc): cannot build the child")
        return 1
    subprocess.run([cc, "-O2", "-o", str(child), str(ROOT / "scripts" / "bench_children" / "ready_at_once.c")],
                   check=True)
    cfg.child = [str(child)]
    res = Results()
    ok = True
    growth = None
    began = time.monotonic()
    try:
        for k, fn in ((1, item1), (3, item3), (4, item4), (2, item2)):
            if k in items:
                fn(cfg, res)
        if 5 in items:
            growth = item5(cfg, res)
            svg_plot(growth, cfg.svg, "supervisor: what a reload costs, steer against shared "
                     f"(Linux {os.uname().release.split('-')[0]}, {os.cpu_count()} CPUs)")
            log(f"picture: {cfg.svg}")
    except (BenchError, subprocess.SubprocessError) as e:
        log(f"error: {e}")
        ok = False
    except KeyboardInterrupt:
        log("interrupted")
        ok = False
    finally:
        for p in PROCS:
            stop(p, signal.SIGKILL if p.poll() is None else signal.SIGTERM, 5)
        if cfg.keep:
            log(f"kept {cfg.tmp}")
        else:
            shutil.rmtree(cfg.tmp, ignore_errors=True)
    cfg.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(cfg.csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item", "figure", "value", "note"])
        w.writerows(res.rows)
    log(f"done in {time.monotonic() - began:.0f} s; CSV: {cfg.csv}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
