#!/usr/bin/env python3
"""Two builds of the supervisor, the same figures, side by side in one run.

    scripts/bench_builds.py --base-bin-dir DIR [--bin-dir DIR] [--pairs N] [--quick] [--keep]

For a change that must not regress the supervisor's own figures: the base
build (DIR/supervisor, e.g. an older commit's target/release) against this
tree's (--bin-dir, or else `cargo build --release --quiet --bin supervisor
--example demo_server --example load` first). Both binaries are copied into
the temporary directory, so a rebuild during the run changes nothing. The
child is scripts/bench_children/ready_at_once.c (READY=1 at once, then it
waits for SIGTERM), compiled with the system C compiler, so that what is timed
is the supervisor. The two builds alternate run for run (base, new, base,
new, ...), so that both meet the same machine:

1. Reload overhead with one listener, steer mode then shared mode: the
   supervisor's own `ready in` figure (from the reload request to the new
   generation's READY=1, the figure the `reload` answer carries), read from
   its log line after a SIGHUP as scripts/bench_steer.py does, and the
   supervisor's CPU time per reload (the reload and all it leads to: routing,
   the old generation's stop, the next reserve). --pairs pairs (21; 3 with
   --quick).
2. A reload with 1,000 listeners, steer mode, the same figures: 7 pairs (1).
3. In-place upgrade with 1,000 listeners, idle: `supervisor upgrade` of each
   build into itself (base to base, new to new), the time its answer reports
   (`... in X`: from the request to the new image serving the control
   socket) and the client's wall time: 5 pairs (1).
4. Idle: VmRSS of the supervisor (one listener, after one reload) and its
   voluntary + involuntary context switches over 10 s idle (3 s), 3
   supervisors per build side by side.

Every supervisor runs with `--ready notify` and, in items 1 and 2, an explicit
`--handoff`: options the base build must have too (checked in both builds'
--help first). Each supervisor reloads once before it is measured: its steady
state, the next reserve made. The
table gives, per figure and build, the median, min and max, and the ratio of
the medians (new / base). The soft limit on open files is raised to the hard
limit (1,000 steered listeners need about 3,100 fds). Python 3 stdlib only,
Linux. Every process started is stopped by pid at the end, also on error,
Ctrl+C or SIGTERM (each supervisor gets SIGTERM, and SIGKILL after 30 s, and
so do the children it leaves); the temporary directory is removed unless
--keep. Exit status 0 when every item ran, else 1.
"""

import argparse, os, re, resource, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_steer as steer  # noqa: E402  (Sup, settle, /proc readers, duration parsing)
from bench_steer import BenchError, Sup, median, settle  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BUILDS = ("base", "new")
# What the supervisors are started with (bench_steer.Sup) or asked:
# every build compared must know these.
NEEDED = ("--control", "--ready", "notify", "--ready-timeout", "--drain-timeout", "--handoff", "shared",
          "upgrade")


def log(msg: str) -> None:
    print(f"[bench_builds {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def check_help(name: str, exe: Path) -> None:
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise BenchError(f"{name}: {exe} --help: exit {out.returncode}: {out.stderr.strip()}")
    missing = [w for w in NEEDED if not re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", out.stdout)]
    if missing:
        raise BenchError(f"{name}: {exe} --help does not mention {', '.join(missing)}")


class Table:
    """Rows of figures, printed at the end (also after an error)."""

    HEAD = (f"{'item':4} {'figure':52} {'unit':4} {'n':>3}  {'base median':>11} {'min':>9} {'max':>9}  "
            f"{'new median':>11} {'min':>9} {'max':>9}  {'new/base':>8}")

    def __init__(self) -> None:
        self.rows: list[str] = []

    def add(self, item: str, figure: str, unit: str, samples: dict[str, list[float]], whole: bool = False) -> None:
        def num(x: float) -> str:
            if whole or abs(x) >= 1000:
                return f"{x:,.0f}"
            return f"{x:.1f}" if abs(x) >= 100 else f"{x:.2f}"
        cells = []
        for b in BUILDS:
            xs = samples[b]
            cells.append(f"{num(median(xs)):>11} {num(min(xs)):>9} {num(max(xs)):>9}")
        mb, mn = median(samples["base"]), median(samples["new"])
        ratio = f"{mn / mb:.3f}" if mb else "-"
        n = min(len(samples[b]) for b in BUILDS)
        row = f"{item:4} {figure:52} {unit:4} {n:>3}  {cells[0]}  {cells[1]}  {ratio:>8}"
        self.rows.append(row)


def reloads(cfg, table: Table, item: str, label: str, listeners: int, mode: str, pairs: int) -> None:
    """`pairs` reloads of each build, alternating, after a first one each."""
    log(f"item {item}: {label}, {pairs} alternating pair(s)")
    runs: dict[str, list[dict]] = {b: [] for b in BUILDS}
    sups: dict[str, Sup] = {}
    try:
        for b in BUILDS:
            sups[b] = Sup(cfg.exe[b], cfg.tmp / f"i{item}-{mode}-{listeners}-{b}", cfg.child, listeners, mode)
        for b in BUILDS:
            sups[b].reload()
        for _ in range(pairs):
            for b in BUILDS:
                runs[b].append(sups[b].reload())
    finally:
        for s in sups.values():
            s.stop()
    table.add(item, f"{label}: ready in", "ms", {b: [r["ready_in"] for r in runs[b]] for b in BUILDS})
    table.add(item, f"{label}: CPU per reload", "ms", {b: [r["cpu"] for r in runs[b]] for b in BUILDS})


def upgrade_once(exe: Path, sup: Sup) -> tuple[float, float]:
    """`supervisor upgrade`: the time its answer reports, and the client's wall time (ms)."""
    t0 = time.perf_counter()
    out = subprocess.run([str(exe), "upgrade", "--control", sup.control], capture_output=True, text=True,
                         timeout=120)
    wall = (time.perf_counter() - t0) * 1e3
    if out.returncode != 0:
        raise BenchError(f"supervisor upgrade: exit {out.returncode}: {out.stderr.strip()}")
    m = re.search(r" in (\S+)$", out.stdout.strip())
    if not m:
        raise BenchError(f"unexpected answer to upgrade: {out.stdout.strip()!r}")
    if sup.proc.poll() is not None:
        raise BenchError(f"the supervisor exited ({sup.proc.returncode}) after upgrading")
    settle(sup.pid)
    return steer.duration_ms(m.group(1)), wall


def upgrades(cfg, table: Table, n: int = 1000) -> None:
    log(f"item 3: in-place upgrades with {n:,} listeners, idle, {cfg.upgrade_pairs} alternating pair(s)")
    reported: dict[str, list[float]] = {b: [] for b in BUILDS}
    wall: dict[str, list[float]] = {b: [] for b in BUILDS}
    sups: dict[str, Sup] = {}
    try:
        for b in BUILDS:
            sups[b] = Sup(cfg.exe[b], cfg.tmp / f"i3-{b}", cfg.child, n)
        for b in BUILDS:
            sups[b].reload()
        for _ in range(cfg.upgrade_pairs):
            for b in BUILDS:
                r, w = upgrade_once(cfg.exe[b], sups[b])
                reported[b].append(r)
                wall[b].append(w)
    finally:
        for s in sups.values():
            s.stop()
    table.add("3", f"upgrade, {n:,} listeners, idle: reported", "ms", reported)
    table.add("3", f"upgrade, {n:,} listeners, idle: client wall", "ms", wall)


def idle(cfg, table: Table, each: int = 3) -> None:
    log(f"item 4: idle RSS and context switches over {cfg.idle:g} s, {each} supervisors per build")
    rss: dict[str, list[float]] = {b: [] for b in BUILDS}
    ctx: dict[str, list[float]] = {b: [] for b in BUILDS}
    sups: list[tuple[str, Sup]] = []
    try:
        for i in range(each):
            for b in BUILDS:
                s = Sup(cfg.exe[b], cfg.tmp / f"i4-{b}-{i}", cfg.child, 1)
                s.reload()
                sups.append((b, s))
        for b, s in sups:
            settle(s.pid)
            rss[b].append(steer.status_field(s.pid, "VmRSS"))
        before = {s.pid: steer.switches(s.pid) for _, s in sups}
        time.sleep(cfg.idle)  # the measurement itself: what the supervisors do when nothing happens
        for b, s in sups:
            ctx[b].append(steer.switches(s.pid) - before[s.pid])
    finally:
        for _, s in sups:
            s.stop()
    table.add("4", "idle RSS (VmRSS, 1 listener, after a reload)", "kB", rss, whole=True)
    table.add("4", f"idle {cfg.idle:g} s: context switches (vol. + invol.)", "", ctx, whole=True)


def descendants(pid: int) -> list[int]:
    """The children of `pid`, theirs, and so on (from /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                kids = [int(k) for k in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def stop_all() -> None:
    """Every process started (the supervisors, and through them their
    children): SIGTERM, which drains and stops their generations; SIGKILL
    after 30 s, then to the children they left, by pid."""
    for p in steer.PROCS:
        if p.poll() is None:
            kids = descendants(p.pid)
            steer.stop(p, signal.SIGTERM, 30)
            for k in kids:
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-bin-dir", type=Path, required=True, help="the base build: DIR/supervisor")
    ap.add_argument("--bin-dir", type=Path, help="the new build: DIR/supervisor; default: build this tree")
    ap.add_argument("--pairs", type=int, help="item 1: alternating pairs of reloads per mode (21; --quick 3)")
    ap.add_argument("--quick", action="store_true", help="few samples: a smoke test of the script")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    cfg = ap.parse_args()
    cfg.pairs1, cfg.pairs1000, cfg.upgrade_pairs, cfg.idle = (3, 1, 1, 3.0) if cfg.quick else (21, 7, 5, 10.0)
    if cfg.pairs is not None:
        if cfg.pairs < 1:
            ap.error("--pairs must be 1 or more")
        cfg.pairs1 = cfg.pairs
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 3200:
        log(f"open files: the hard limit is {hard}; 1,000 steered listeners need about 3,100")
    bins = cfg.bin_dir
    if bins is None:
        log("building (release)")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "supervisor",
                        "--example", "demo_server", "--example", "load"], cwd=ROOT, check=True)
        bins = ROOT / "target" / "release"
    dirs = {"base": cfg.base_bin_dir, "new": bins}
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        log("no C compiler (cc): cannot build the child")
        return 1
    def terminated(*_) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminated)
    cfg.tmp = Path(tempfile.mkdtemp(prefix="bench-builds-"))
    table = Table()
    ok = True
    began = time.monotonic()
    try:
        cfg.exe = {}
        for b in BUILDS:
            src = dirs[b] / "supervisor"
            if not src.is_file():
                raise BenchError(f"no {src}")
            cfg.exe[b] = cfg.tmp / f"bin-{b}" / "supervisor"
            cfg.exe[b].parent.mkdir()
            shutil.copy2(src, cfg.exe[b])
            check_help(b, cfg.exe[b])
            log(f"{b}: {src}")
        child = cfg.tmp / "ready_at_once"
        subprocess.run([cc, "-O2", "-o", str(child), str(ROOT / "scripts" / "bench_children" / "ready_at_once.c")],
                       check=True)
        cfg.child = [str(child)]
        for mode in ("steer", "shared"):
            reloads(cfg, table, "1", f"reload, 1 listener, {mode}", 1, mode, cfg.pairs1)
        reloads(cfg, table, "2", "reload, 1,000 listeners, steer", 1000, "steer", cfg.pairs1000)
        upgrades(cfg, table)
        idle(cfg, table)
    except (BenchError, OSError, subprocess.SubprocessError) as e:
        log(f"error: {e}")
        ok = False
    except KeyboardInterrupt:
        log("interrupted")
        ok = False
    finally:
        stop_all()
        if cfg.keep:
            log(f"kept {cfg.tmp}")
        else:
            shutil.rmtree(cfg.tmp, ignore_errors=True)
    if table.rows:
        print(f"base: {dirs['base']}\nnew:  {dirs['new']}")
        print(Table.HEAD)
        print("\n".join(table.rows))
    log(f"done in {time.monotonic() - began:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
