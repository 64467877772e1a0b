#!/usr/bin/env python3
"""The supervisor's benchmark (run it through scripts/bench.sh, which builds
the binaries and installs wrk and Server::Starter first).

Everything runs on loopback against the demo server (examples/demo_server.rs,
2 ms per request) and measures, in one run on one machine:

1. Failures under reload: wrk, 64 connections, 21 reloads paced 1.15 s
   apart during a 28 s run: requests, non-2xx, socket errors by kind,
   latency. (start_server needs 1 s a reload; the same pace for all.)
2. The same workload against the alternatives, run for run: a naive restart
   (stop the server, wait for its exit, start a new one that binds the port
   itself: scripts/bench/naive_launcher.py, started ahead so that Python's
   start-up is not counted) and Server::Starter's start_server (through
   scripts/bench/starter_adapter.sh); ratios of failures and of p99.
3. Latency cost of a reload, from the per-request samples of
   examples/load --samples: p99 of the requests that overlap a reload window
   (from "reload requested (SIGHUP)" to the old generation's "drained" line
   in the supervisor's log) over p99 of all others; and, timed alike for
   the supervisor and start_server, p99 during the handover (stop signal to
   the old server -> its exit).
4. Reload overhead: SIGHUP-to-ready from the supervisor's log, minus the
   same child's own spawn-to-READY=1 when this script starts it directly
   (posix_spawn); start_server's effective reload time (SIGHUP to its TERM
   to the old worker) beside it.
5. Footprint: the supervisor's RSS, CPU time and context switches over 30 s
   of idling (three supervisors idle at once, while the wrk runs go on), and
   its fd count after 1 and after 100 reloads.
6. Scale: reload time with 1, 100 and 1,000 listeners; 100 back-to-back
   reloads under load (total time, failures).
7. Hand-off modes (a build with --handoff): steer against shared, back to
   back in each run, on a naive-drain child (bench_children/naive_drain.py)
   and on the demo server, with keep-alive and with Connection: close
   (bench/hload.py, every request recorded): failed requests per reload, p99
   inside reload windows over steady p99. Run 1 of the naive child with
   Connection: close is drawn as --svg (bench/handoff_plot.py).
8. The same runs' reload timings from the supervisor's log (SIGHUP -> new
   generation ready, -> stop signal to the old one, -> its exit), and reload
   time with 1, 100 and 1,000 listeners in each mode (steer binds a new
   socket per listener per reload).

--handoff-only runs items 7-8 alone, --no-handoff leaves them out; a build
without --handoff gets items 1-6. --bin-dir measures another build.

Each figure is the median of several runs (or reloads) with min and max. The
table goes to stdout, the same rows as CSV (figure, unit, median, min, max,
runs) to --csv (default target/bench/results.csv); progress goes to stderr.
Every process it starts is stopped by pid at the end, also on Ctrl+C or an
error. Waits are on log lines, READY=1 datagrams, process exits and /proc
conditions, each with a deadline; the only plain sleeps pace the reloads.
Without wrk the load generator is examples/load; without start_server that
comparison is skipped. Python 3 standard library only; Linux only.

Exit status: 0 when every figure was measured, 1 on an error, 130 when
interrupted. A missed goal (a failed request under the supervisor, an idle
wake-up, fd growth) is reported as MISSED in the output, not by the status.
"""

from __future__ import annotations

import argparse
import bisect
import calendar
import csv
import json
import math
import os
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
HELPERS = Path(__file__).resolve().parent / "bench"
CHILDREN = Path(__file__).resolve().parent / "bench_children"

CONNECTIONS = 64
# The hand-off runs (items 7-8): scripts/bench/hload.py with this many
# connections against the naive child's pool of NAIVE_WORKERS threads, so
# that accepted connections wait in its queue, as they do in a busy server.
HCONNECTIONS = 32
NAIVE_WORKERS = 4
HANDOFF_MODES = ("steer", "shared")
# Reloads are paced this far apart (s): start_server needs 1 s for each (its
# --interval), and a gap after that keeps its next spawn out of the handover.
PERIOD = 1.15
DELAY = "2ms"  # the demo server's processing time per request
CONTROL_ROOT: str | None = None  # where supervisors' control sockets go (the run's temp dir)
STOP_TIMEOUT = 20.0  # longest wait for a stopped process to exit


class BenchError(Exception):
    """A measurement could not be taken."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived."""


class Interrupts:
    """SIGINT/SIGTERM raise Interrupted in the main thread, except while
    `hold` is set: then at the end of the held section."""

    def __init__(self) -> None:
        self.hold = 0
        self.pending: str | None = None

    def handler(self, signum: int, _frame) -> None:
        self.pending = signal.Signals(signum).name
        if not self.hold:
            self.raise_pending()

    def raise_pending(self) -> None:
        if self.pending and not self.hold:
            raise Interrupted(self.pending)


INTERRUPTS = Interrupts()


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# processes


class Registry:
    """Every process this script starts, so that all of them are stopped by
    pid at the end, whatever happens."""

    def __init__(self) -> None:
        self.procs: list[tuple[subprocess.Popen, str]] = []
        # Processes that are not our children (start_server's workers) or
        # that we forked ourselves: pid -> a word their cmdline must hold.
        self.others: dict[int, str] = {}
        self.forked: set[int] = set()

    def popen(self, argv: list[str], label: str, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        # Own session: a Ctrl+C on the terminal reaches this script only,
        # which then stops everything in order. An interrupt waits until the
        # process is registered. (Blocking the signals instead would pass the
        # blocked mask on to the child.)
        INTERRUPTS.hold += 1
        try:
            proc = subprocess.Popen(argv, start_new_session=True, close_fds=True, **kwargs)
            self.procs.append((proc, label))
        finally:
            INTERRUPTS.hold -= 1
        INTERRUPTS.raise_pending()
        return proc

    def stop_all(self) -> None:
        for pid in list(self.forked):
            stop_forked(self, pid)
        for proc, label in reversed(self.procs):
            if proc.poll() is None:
                log(f"stopping {label} (pid {proc.pid})")
                stop_popen(proc)
        for pid, word in list(self.others.items()):
            if process_matches(pid, word):
                log(f"stopping leftover {word} (pid {pid})")
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                deadline = time.monotonic() + 5
                while process_matches(pid, word) and time.monotonic() < deadline:
                    time.sleep(0.02)
                if process_matches(pid, word):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


def stop_popen(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int | None:
    """Sends `sig`, waits for the exit (SIGKILL after STOP_TIMEOUT)."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} still running {STOP_TIMEOUT:.0f}s after signal {sig}: SIGKILL")
            proc.kill()
            proc.wait()
    return proc.returncode


def stop_forked(reg: Registry, pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_TIMEOUT
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.005)
    reg.forked.discard(pid)


def process_matches(pid: int, word: str) -> bool:
    """Whether `pid` is alive (not a zombie) and its cmdline holds `word`."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rindex(")") + 2] == "Z":
            return False
        return word.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return False


class LogReader:
    """Reads a process's output line by line in a thread, stamping each line
    with its arrival time on the monotonic clock."""

    def __init__(self, stream, on_line: Callable[[str], None] | None = None) -> None:
        self.lines: list[tuple[float, str]] = []
        self.eof = False
        self.cond = threading.Condition()
        self._stream = stream
        self._on_line = on_line
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for raw in iter(self._stream.readline, b""):
            now = time.monotonic()
            text = raw.decode("utf-8", "replace").rstrip("\n")
            if self._on_line:
                self._on_line(text)
            with self.cond:
                self.lines.append((now, text))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def __len__(self) -> int:
        with self.cond:
            return len(self.lines)

    def wait_for(
        self, pattern: str | re.Pattern, timeout: float, since: int = 0, what: str = ""
    ) -> tuple[int, float, re.Match]:
        """The first line from index `since` on that matches: (index,
        arrival time, match). Raises BenchError at the deadline or EOF."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        pos = since
        with self.cond:
            while True:
                while pos < len(self.lines):
                    found = regex.search(self.lines[pos][1])
                    if found:
                        return pos, self.lines[pos][0], found
                    pos += 1
                if self.eof:
                    raise BenchError(f"{what or regex.pattern}: the process ended first")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"{what or regex.pattern}: not seen within {timeout:.0f}s")
                self.cond.wait(left)

    def find(self, pattern: str, since: int = 0) -> tuple[int, float, re.Match] | None:
        regex = re.compile(pattern)
        with self.cond:
            for pos in range(since, len(self.lines)):
                found = regex.search(self.lines[pos][1])
                if found:
                    return pos, self.lines[pos][0], found
        return None

    def tail(self, count: int = 15) -> str:
        with self.cond:
            return "\n".join(text for _, text in self.lines[-count:])


def child_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LISTEN_", "NOTIFY_SOCKET", "WATCHDOG_", "SERVER_STARTER_"))
    }
    env.update(extra)
    return env


def clock_pair() -> tuple[int, int]:
    """(CLOCK_MONOTONIC, CLOCK_REALTIME) in ns, read as close together as
    possible: converts the supervisor's log timestamps (realtime) to the
    load generator's clock (monotonic)."""
    real1 = time.time_ns()
    mono = time.monotonic_ns()
    real2 = time.time_ns()
    return mono, (real1 + real2) // 2


LOG_LINE = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z supervisor\[\d+\] \w+: "
)


def log_time_us(line: str) -> int | None:
    """The realtime timestamp of a supervisor log line, in µs since the epoch.
    Searched, not matched: the children share the supervisor's stderr, and a
    child's line written in pieces may end up in front of it."""
    m = LOG_LINE.search(line)
    if not m:
        return None
    seconds = calendar.timegm(tuple(int(m.group(i)) for i in range(1, 7)) + (0, 0, 0))
    fraction = (m.group(7) or "0").ljust(6, "0")[:6]
    return seconds * 1_000_000 + int(fraction)


def parse_human_duration(text: str) -> float:
    """Seconds from the supervisor's durations: 850us, 3.2ms, 85ms, 1.2s, 2m30s."""
    m = re.fullmatch(r"(\d+)m(\d+)s", text)
    if m:
        return int(m.group(1)) * 60 + int(m.group(2))
    m = re.fullmatch(r"([\d.]+)(us|µs|ms|s)", text)
    if not m:
        raise BenchError(f"cannot read the duration {text!r}")
    scale = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
    return float(m.group(1)) * scale


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# the three ways to run (and reload) the demo server


class ExitWatch:
    """Notes when a process exits (its pidfd turns readable), in a thread:
    the end of a handover, the same way for every contender."""

    def __init__(self, pid: int) -> None:
        self.time: float | None = None
        self.thread: threading.Thread | None = None
        try:
            fd = os.pidfd_open(pid)
        except (OSError, AttributeError):  # gone already, or no pidfd
            return
        self.thread = threading.Thread(target=self._run, args=(fd,), daemon=True)
        self.thread.start()

    def _run(self, fd: int) -> None:
        try:
            ready, _, _ = select.select([fd], [], [], 60)
            if ready:
                self.time = time.monotonic()
        finally:
            os.close(fd)

    def result(self, timeout: float = 35) -> float | None:
        if self.thread:
            self.thread.join(timeout)
        return self.time


@dataclass
class Reload:
    ok: bool
    hup_mono: float  # when this script sent the signal (monotonic s)
    pair: tuple[int, int]  # clock_pair() at that moment
    index: int  # log length before the signal
    # supervisor: from its log (realtime µs); start_server and naive: arrival
    # or observation times on the monotonic clock (s).
    requested_us: int | None = None
    ready_us: int | None = None
    drained_us: int | None = None
    stop_us: int | None = None  # the old generation's "draining: sent SIG..." line
    spawn_to_ready: float | None = None  # as the supervisor reports it (s)
    old_gen: int | None = None
    old_pid: int | None = None
    effective_s: float | None = None  # start_server: HUP -> TERM to old
    old_exit_s: float | None = None  # start_server: HUP -> old worker exited
    # the handover, on the monotonic clock (s): the line announcing the stop
    # signal to the old server arrives; the old server exits
    stop_mono: float | None = None
    old_exit: ExitWatch | None = None
    restart_s: float | None = None  # naive: TERM -> new READY=1
    gap_s: float | None = None  # naive: old exited -> new READY=1

    @property
    def hup_to_ready_s(self) -> float | None:
        if self.requested_us is None or self.ready_us is None:
            return None
        return (self.ready_us - self.requested_us) / 1e6

    @property
    def hup_to_drained_s(self) -> float | None:
        if self.requested_us is None or self.drained_us is None:
            return None
        return (self.drained_us - self.requested_us) / 1e6


def drained_line(r: Reload) -> str:
    """The old generation's "drained in" line. Its pid is optional: a
    generation reaped in the same SIGCHLD as another one is logged without
    it (`generation 8 drained in 1ms`), the pid being forgotten by then.
    Generation numbers are unique within a supervisor."""
    return rf"generation {r.old_gen}(?: \(pid {r.old_pid}\))? drained in"


class Supervisor:
    name = "supervisor"

    def __init__(
        self,
        reg: Registry,
        bins: Path,
        listeners: int = 1,
        watch_exits: bool = False,
        handoff: str | None = None,
        child: str = "demo",
    ) -> None:
        """`handoff`: steer or shared (None: the binary's default, and the
        only choice of a binary without --handoff). `child`: demo (the demo
        server, graceful drain) or naive (bench_children/naive_drain.py)."""
        self.watch_exits = watch_exits
        argv = [str(bins / "supervisor")]
        for _ in range(listeners):
            argv += ["-l", "127.0.0.1:0"]
        # Its own control socket: several supervisors run at once here, and
        # they must not meet on the default path. The directory goes with
        # the supervisor's socket file when it exits; what is left (the
        # lock file) is removed at the end of the run with the temp tree.
        control = Path(tempfile.mkdtemp(prefix="ctl.", dir=CONTROL_ROOT)) / "c.sock"
        argv += ["--control", str(control)]
        argv += ["--ready", "notify", "--ready-timeout", "10s", "--drain-timeout", "10s"]
        if handoff:
            argv += ["--handoff", handoff]
        argv += ["--"]
        if child == "naive":
            argv += [sys.executable, str(CHILDREN / "naive_drain.py"), "--workers", str(NAIVE_WORKERS)]
        else:
            argv += [str(bins / "examples" / "demo_server"), "--delay", DELAY]
        self.proc = reg.popen(argv, "supervisor", stderr=subprocess.PIPE, env=child_env(RUST_LOG="info"))
        self.pid = self.proc.pid
        self.log = LogReader(self.proc.stderr)
        self.gen = 1
        timeout = 10 + listeners / 50
        try:
            _, _, m = self.log.wait_for(r"listening on 127\.0\.0\.1:(\d+) ", timeout, what="supervisor's first listener")
            self.port = int(m.group(1))
            _, _, m = self.log.wait_for(
                r"generation 1 \(pid (\d+)\) ready in (\S+?)(;|$)", timeout, what="generation 1 ready"
            )
            self.child_pid = int(m.group(1))
            self.start_to_ready = parse_human_duration(m.group(2))
        except BenchError as err:
            raise BenchError(f"{err}; supervisor log:\n{self.log.tail()}") from None

    def reload(self, timeout: float = 15.0) -> Reload:
        self.gen += 1
        gen = self.gen
        index = len(self.log)
        old_exit = ExitWatch(self.child_pid) if self.watch_exits else None
        pair = clock_pair()
        hup = time.monotonic()
        os.kill(self.pid, signal.SIGHUP)
        r = Reload(ok=False, hup_mono=hup, pair=pair, index=index, old_exit=old_exit)
        pos, arrived, m = self.log.wait_for(
            rf"generation {gen} \(pid (\d+)\) ready in (\S+?)(?:; generation (\d+) \(pid (\d+)\) (?:draining|quiescing)|$)"
            rf"|reload failed: generation {gen} ",
            timeout,
            since=index,
            what=f"outcome of reload to generation {gen}",
        )
        req = self.log.find(r"reload requested \(SIGHUP\)", index)
        if req:
            r.requested_us = log_time_us(req[2].string)
        if m.group(1) is None:
            log(f"supervisor reload failed: {m.string}")
            return r
        r.ok = True
        r.stop_mono = arrived
        self.child_pid = int(m.group(1))
        r.spawn_to_ready = parse_human_duration(m.group(2))
        r.ready_us = log_time_us(m.string)
        if m.group(3):
            r.old_gen, r.old_pid = int(m.group(3)), int(m.group(4))
        return r

    def wait_drained(self, r: Reload, timeout: float = 15.0) -> None:
        if r.old_gen is None:
            return
        try:
            _, _, m = self.log.wait_for(
                drained_line(r),
                timeout,
                since=r.index,
                what=f"generation {r.old_gen} drained",
            )
        except BenchError as err:
            with self.log.cond:
                about = [t for _, t in self.log.lines if f"pid {r.old_pid}" in t or f"[{r.old_pid}]" in t]
            raise BenchError(f"{err}; its lines in the log:\n" + "\n".join(about[-12:])) from None
        r.drained_us = log_time_us(m.string)
        self._fill_stop(r)

    def _fill_stop(self, r: Reload) -> None:
        """When the old generation got its stop signal (a binary without
        that line sends it as the new generation is ready)."""
        found = self.log.find(rf"generation {r.old_gen} \(pid {r.old_pid}\) draining: sent", r.index)
        r.stop_us = log_time_us(found[2].string) if found else r.ready_us

    def fill_drained(self, reloads: list[Reload]) -> None:
        for r in reloads:
            if r.old_gen is not None and r.drained_us is None:
                found = self.log.find(drained_line(r), r.index)
                if found:
                    r.drained_us = log_time_us(found[2].string)
                    self._fill_stop(r)

    def stop(self) -> int | None:
        return stop_popen(self.proc)


class Naive:
    """Stop the server, wait for its exit, start a new one that binds the
    port itself (naive_launcher.py). The next server is started ahead of
    time and waits for a go line before it binds, so that Python's start-up
    is not counted: this is the best case for a naive restart."""

    name = "naive restart"

    def __init__(self, reg: Registry, bins: Path, tmp: Path) -> None:
        self.reg = reg
        self.port = free_port()
        self.notify_path = tmp / f"naive-{self.port}.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.setblocking(False)
        self.argv = [
            sys.executable, "-I", "-S", str(HELPERS / "naive_launcher.py"), "--wait", str(self.port),
            str(bins / "examples" / "demo_server"), "--delay", DELAY,
        ]  # fmt: skip
        self.gen = 0
        self.proc: subprocess.Popen | None = None
        self.next: tuple[subprocess.Popen, LogReader] | None = None
        self.next = self._arm()
        self._go()
        self.next = self._arm()

    def _arm(self) -> tuple[subprocess.Popen, LogReader]:
        """Starts the next server, waiting for its go line."""
        self.gen += 1
        env = child_env(NOTIFY_SOCKET=str(self.notify_path), SUPERVISOR_GENERATION=str(self.gen))
        proc = self.reg.popen(self.argv, "naive server", stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        reader = LogReader(proc.stderr)
        reader.wait_for(r"naive_launcher: armed", 10, what="naive launcher armed")
        return proc, reader

    def _go(self) -> float:
        """Lets the armed server bind and start; returns when it is ready."""
        assert self.next is not None
        proc, reader = self.next
        self.next = None
        while True:  # drop what the old server said (STOPPING=1)
            try:
                self.notify.recv(4096)
            except BlockingIOError:
                break
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        deadline = time.monotonic() + 10
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"naive restart: no READY=1 within 10s:\n{reader.tail()}")
            ready, _, _ = select.select([self.notify], [], [], min(left, 0.05))
            if ready:
                if b"READY=1" in self.notify.recv(4096).split(b"\n"):
                    self.proc = proc
                    return time.monotonic()
            elif proc.poll() is not None:
                raise BenchError(f"naive server exited with {proc.returncode} before READY=1:\n{reader.tail()}")

    def reload(self) -> Reload:
        assert self.proc is not None
        r = Reload(ok=False, hup_mono=time.monotonic(), pair=clock_pair(), index=0)
        stop_popen(self.proc)
        exited = time.monotonic()
        ready = self._go()
        r.ok = True
        r.restart_s = ready - r.hup_mono
        r.gap_s = ready - exited
        self.next = self._arm()  # not timed: the next one waits ahead
        return r

    def stop(self) -> int | None:
        status = stop_popen(self.proc) if self.proc else None
        if self.next:
            proc, _ = self.next
            proc.stdin.close()  # EOF: it exits without binding
            stop_popen(proc)
        self.notify.close()
        self.notify_path.unlink(missing_ok=True)
        return status


class Starter:
    """Server::Starter's start_server running the demo server."""

    name = "start_server"

    def __init__(self, reg: Registry, bins: Path, start_server: str) -> None:
        self.reg = reg
        self.port = free_port()
        argv = [
            start_server, f"--port=127.0.0.1:{self.port}=3", "--interval=1", "--signal-on-hup=TERM", "--",
            str(HELPERS / "starter_adapter.sh"), str(bins / "examples" / "demo_server"), "--delay", DELAY,
        ]  # fmt: skip
        self.proc = reg.popen(argv, "start_server", stderr=subprocess.PIPE, env=child_env())
        self.pid = self.proc.pid
        self.log = LogReader(self.proc.stderr, on_line=self._track)
        try:
            _, _, m = self.log.wait_for(r"starting new worker (\d+)", 10, what="start_server's first worker")
            self.worker = int(m.group(1))
            self.log.wait_for(r"generation \d+ serving on fd 3", 10, what="start_server's first worker serving")
        except BenchError as err:
            raise BenchError(f"{err}; start_server's log:\n{self.log.tail()}") from None

    def _track(self, line: str) -> None:
        m = re.search(r"starting new worker (\d+)", line)
        if m:
            self.reg.others[int(m.group(1))] = "demo_server"

    def reload(self, timeout: float = 15.0) -> Reload:
        index = len(self.log)
        # not from its log: start_server may reap the old worker a second late
        old_exit = ExitWatch(self.worker)
        r = Reload(ok=False, hup_mono=time.monotonic(), pair=clock_pair(), index=index, old_exit=old_exit)
        os.kill(self.pid, signal.SIGHUP)
        try:
            _, _, m = self.log.wait_for(r"starting new worker (\d+)", timeout, since=index, what="new worker")
            _, killed, _ = self.log.wait_for(r"killing old workers", timeout, since=index, what="start_server reload")
        except BenchError as err:
            raise BenchError(f"{err}; start_server's log:\n{self.log.tail()}") from None
        r.ok = self.log.find(r"seems to have failed to start", index) is None
        r.old_pid = self.worker
        self.worker = int(m.group(1))
        r.effective_s = killed - r.hup_mono
        r.stop_mono = killed
        return r

    @staticmethod
    def fill_exits(reloads: list[Reload]) -> None:
        for r in reloads:
            exited = r.old_exit.result() if r.old_exit else None
            if exited is not None:
                r.old_exit_s = exited - r.hup_mono

    def stop(self) -> int | None:
        status = stop_popen(self.proc)
        for pid in [p for p, word in self.reg.others.items() if word == "demo_server"]:
            if process_matches(pid, "demo_server"):
                log(f"start_server left worker {pid} running: stopping it")
                os.kill(pid, signal.SIGTERM)
            else:
                del self.reg.others[pid]
        return status


def reload_loop(target, start: float, count: int, first: float, period: float, stop_by: float) -> list[Reload]:
    """`count` reloads, the i-th at start + first + i * period or as soon as
    the previous one's outcome is known, whichever is later; none after
    `stop_by`."""
    reloads = []
    for i in range(count):
        slot = start + first + i * period
        now = time.monotonic()
        if slot > now:
            time.sleep(slot - now)  # pacing, not synchronisation
        if time.monotonic() > stop_by:
            log(f"{target.name}: only {i} of {count} reloads fitted in the load run")
            break
        reloads.append(target.reload())
    return reloads


# --------------------------------------------------------------------------
# load generators


@dataclass
class LoadResult:
    requests: int
    non_2xx: int
    errors: dict[str, int]  # connect, read, write, timeout (+ protocol for load)
    p50_ms: float
    p99_ms: float
    raw: str = ""

    @property
    def failures(self) -> int:
        return self.non_2xx + sum(self.errors.values())


WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(text: str) -> LoadResult:
    m = re.search(r"^\s*(\d+) requests in ", text, re.M)
    if not m:
        raise BenchError(f"cannot read wrk's output:\n{text}")
    requests = int(m.group(1))
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors = dict(zip(errors, map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non_2xx = int(m.group(1)) if m else 0
    pct = {}
    for q, value, unit in re.findall(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M):
        pct[q] = float(value) * WRK_UNITS[unit]
    if "50" not in pct or "99" not in pct:
        raise BenchError(f"no latency distribution in wrk's output (--latency):\n{text}")
    return LoadResult(requests, non_2xx, errors, pct["50"], pct["99"], text)


def parse_load(text: str) -> LoadResult:
    try:
        data = json.loads(text.strip().splitlines()[-1])
        return LoadResult(
            data["requests"],
            data["non_2xx"],
            {k: int(v) for k, v in data["failures"].items()},
            float(data["latency_ms"]["p50"]),
            float(data["latency_ms"]["p99"]),
            text,
        )
    except (ValueError, KeyError, IndexError) as err:
        raise BenchError(f"cannot read the load generator's report ({err}):\n{text}") from None


class LoadRun:
    """wrk, or examples/load, running against a port."""

    def __init__(self, reg: Registry, cfg: Config, port: int, seconds: float, use_wrk: bool, samples: Path | None = None):
        self.use_wrk = use_wrk
        self.seconds = seconds
        if use_wrk:
            argv = [cfg.wrk, "-t2", f"-c{CONNECTIONS}", f"-d{seconds:.0f}s", "--latency", f"http://127.0.0.1:{port}/"]
        else:
            argv = [
                str(cfg.bins / "examples" / "load"), "--addr", f"127.0.0.1:{port}",
                "--connections", str(CONNECTIONS), "--duration", f"{seconds:g}s", "--json",
            ]  # fmt: skip
            if samples:
                argv += ["--samples", str(samples)]
        self.proc = reg.popen(argv, "wrk" if use_wrk else "load", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.start = time.monotonic()

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def finish(self) -> LoadResult:
        try:
            out, err = self.proc.communicate(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            raise BenchError("the load generator did not end") from None
        text = out.decode("utf-8", "replace")
        if not text.strip():
            raise BenchError(f"the load generator printed nothing: {err.decode('utf-8', 'replace')}")
        return parse_wrk(text) if self.use_wrk else parse_load(text)


# --------------------------------------------------------------------------
# results


@dataclass
class Row:
    section: str
    figure: str
    unit: str
    values: list[float]
    note: str = ""

    @property
    def stats(self) -> tuple[float, float, float] | None:
        if not self.values:
            return None
        return statistics.median(self.values), min(self.values), max(self.values)


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    goals: list[tuple[str, bool, str]] = field(default_factory=list)
    # figures measured in each hand-off mode, shown side by side
    pairs: list[tuple[str, str, str, dict[str, list[float]]]] = field(default_factory=list)

    def pair(self, section: str, figure: str, unit: str, values: dict[str, list]) -> None:
        clean = {mode: [float(v) for v in vs if v is not None] for mode, vs in values.items()}
        self.pairs.append((section, figure, unit, clean))

    def add(self, section: str, figure: str, unit: str, values, note: str = "") -> Row:
        row = Row(section, figure, unit, [float(v) for v in values if v is not None], note)
        self.rows.append(row)
        return row

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)

    def goal(self, name: str, met: bool, detail: str) -> None:
        self.goals.append((name, met, detail))


SECTIONS = [
    "1. Failures under reload",
    "2. Against the alternatives",
    "3. Latency cost of a reload",
    "4. Reload overhead",
    "5. Footprint",
    "6. Scale",
    "7. Hand-off modes: failures and latency under reload (steer vs shared, same runs)",
    "8. Hand-off modes: reload timing (steer vs shared)",
]


def fmt(value: float, unit: str) -> str:
    if value == 0:
        return "0"
    if unit in ("count", "fds", "kB"):
        return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
    if unit == "ratio":
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.4f}"


def print_table(results: Results) -> None:
    width = max([len(r.figure) for r in results.rows] + [40]) + 2
    for section in SECTIONS:
        rows = [r for r in results.rows if r.section == section]
        notes = results.notes.get(section, [])
        pairs = [p for p in results.pairs if p[0] == section]
        if pairs:
            print_pairs(section, pairs, notes)
            continue
        if not rows and not notes:
            continue
        print()
        print(section)
        if rows:
            print(f"  {'figure':<{width}}{'unit':<7}{'median':>10}{'min':>10}{'max':>10}{'runs':>6}")
            for r in rows:
                s = r.stats
                if s is None:
                    print(f"  {r.figure:<{width}}{r.unit:<7}{'n/a':>10}{'':>10}{'':>10}{0:>6}")
                else:
                    med, lo, hi = (fmt(v, r.unit) for v in s)
                    print(f"  {r.figure:<{width}}{r.unit:<7}{med:>10}{lo:>10}{hi:>10}{len(r.values):>6}")
        for text in notes:
            print(f"  {text}")


def print_pairs(section: str, pairs: list, notes: list[str]) -> None:
    """Both modes side by side: median [min-max] (runs), and shared/steer."""

    def cell(values: list[float], unit: str) -> str:
        if not values:
            return "n/a"
        med = statistics.median(values)
        return f"{fmt(med, unit)} [{fmt(min(values), unit)}-{fmt(max(values), unit)}] ({len(values)})"

    width = max(len(p[1]) for p in pairs) + 2
    print()
    print(section)
    print(f"  {'figure':<{width}}{'unit':<7}" + "".join(f"{m + ': median [min-max] (n)':<36}" for m in HANDOFF_MODES)
          + "shared/steer")  # fmt: skip
    for _, figure, unit, values in pairs:
        a, b = values.get("steer", []), values.get("shared", [])
        ratio = ""
        if a and b:
            ma, mb = statistics.median(a), statistics.median(b)
            ratio = f"{mb / ma:.3g}" if ma > 0 else ("both 0" if mb == 0 else "steer 0")
        print(f"  {figure:<{width}}{unit:<7}" + "".join(f"{cell(values.get(m, []), unit):<36}" for m in HANDOFF_MODES)
              + ratio)  # fmt: skip
    for text in notes:
        print(f"  {text}")


def write_csv(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["figure", "unit", "median", "min", "max", "runs"])
        for r in results.rows:
            s = r.stats
            name = f"{r.section.split('.')[0]}. {r.figure}"
            if s is None:
                out.writerow([name, r.unit, "", "", "", 0])
            else:
                out.writerow([name, r.unit, *(f"{v:.6g}" for v in s), len(r.values)])
        for section, figure, unit, values in results.pairs:
            for mode, vs in values.items():
                name = f"{section.split('.')[0]}. {figure} [{mode}]"
                if vs:
                    stats = (statistics.median(vs), min(vs), max(vs))
                    out.writerow([name, unit, *(f"{v:.6g}" for v in stats), len(vs)])
                else:
                    out.writerow([name, unit, "", "", "", 0])


# --------------------------------------------------------------------------
# the measurements


@dataclass
class Config:
    bins: Path
    tmp: Path
    runs: int
    wrk: str | None
    start_server: str | None
    load_seconds: float  # items 1-2
    reloads: int  # items 1-2
    window_seconds: float  # item 3
    window_reloads: int
    overhead_reloads: int  # item 4
    idle_seconds: float  # item 5
    idle_supervisors: int
    scale_reloads: int  # item 6
    back_to_back: int
    handoff: bool = False  # the binary has --handoff: items 7-8
    handoff_seconds: float = 10.0  # item 7
    handoff_reloads: int = 6
    handoff_period: float = 1.2
    svg: Path = ROOT / "target" / "bench" / "handoff.svg"


def proc_snapshot(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text()
    after = stat[stat.rindex(")") + 2 :].split()
    # fields 14 and 15 of stat; `after` starts at field 3
    ticks = int(after[11]) + int(after[12])
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "cpu_ms": ticks * 1000 // os.sysconf("SC_CLK_TCK"),
        "switches": int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def wait_quiescent(pid: int, timeout: float = 5.0) -> None:
    """Waits until `pid` sleeps and stays asleep for 10 ms (no context
    switch, no CPU time): it has finished handling the last event (a drained
    line is logged just before that generation's fds are closed)."""
    deadline = time.monotonic() + timeout

    def sample() -> tuple[str, int, int]:
        stat = Path(f"/proc/{pid}/stat").read_text()
        snap = proc_snapshot(pid)
        return stat[stat.rindex(")") + 2], snap["switches"], snap["cpu_ms"]

    before = sample()
    while time.monotonic() < deadline:
        time.sleep(0.01)  # the polling interval of this condition
        now = sample()
        if now[0] == "S" and now == before:
            return
        before = now
    raise BenchError(f"pid {pid} did not settle within {timeout:.0f}s")


def direct_start(reg: Registry, cfg: Config) -> tuple[float, str]:
    """Spawn-to-READY=1 (seconds) of the demo server started directly by
    this script, with a listener at fd 3, LISTEN_FDS/LISTEN_PID and a
    NOTIFY_SOCKET of its own, and the method used.

    The leanest start is posix_spawn (vfork + exec). LISTEN_PID must be the
    child's pid, so it is predicted from /proc/sys/kernel/ns_last_pid; a
    child that got another pid refuses the listener and exits, and the start
    is retried. If that keeps failing, the child is forked from Python
    instead (Python's fork is far heavier than the supervisor's: a few ms on
    a small VM), timed from the moment just before its execve."""
    path = cfg.tmp / "direct.sock"
    argv = [str(cfg.bins / "examples" / "demo_server"), "--delay", DELAY]
    env = child_env(NOTIFY_SOCKET=str(path), SUPERVISOR_GENERATION="1", LISTEN_FDS="1")
    for attempt in range(6):
        path.unlink(missing_ok=True)
        with socket.socket() as listener, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            listener.bind(("127.0.0.1", 0))
            listener.listen(socket.SOMAXCONN)
            notify.bind(str(path))
            fd = listener.fileno()
            if fd == 3:  # dup2 onto itself would leave close-on-exec set
                fd = os.dup(3)
            stamp_r = -1
            try:
                if attempt < 5:
                    method = "posix_spawn"
                    try:
                        last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
                    except (OSError, ValueError):
                        continue
                    env["LISTEN_PID"] = str(last + 1)
                    start = time.monotonic_ns()
                    INTERRUPTS.hold += 1
                    try:
                        actions = [
                            (os.POSIX_SPAWN_DUP2, fd, 3),
                            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),  # its log: not wanted
                        ]
                        pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
                        reg.forked.add(pid)
                    finally:
                        INTERRUPTS.hold -= 1
                    INTERRUPTS.raise_pending()
                    if pid != last + 1:
                        stop_forked(reg, pid)
                        continue
                else:
                    method = "fork"
                    stamp_r, stamp_w = os.pipe()  # the child's exec time; close-on-exec
                    INTERRUPTS.hold += 1
                    try:
                        pid = os.fork()
                        if pid == 0:  # the child: only dup2, write the time and exec
                            try:
                                os.dup2(fd, 3)  # the copy is inheritable
                                null = os.open(os.devnull, os.O_WRONLY)
                                os.dup2(null, 2)
                                env["LISTEN_PID"] = str(os.getpid())
                                os.write(stamp_w, str(time.monotonic_ns()).encode())
                                os.execve(argv[0], argv, env)
                            finally:
                                os._exit(127)
                        reg.forked.add(pid)
                    finally:
                        INTERRUPTS.hold -= 1
                    os.close(stamp_w)
                    INTERRUPTS.raise_pending()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    ready, _, _ = select.select([notify], [], [], 0.05)
                    if ready:
                        if b"READY=1" in notify.recv(4096).split(b"\n"):
                            now = time.monotonic_ns()
                            if method == "fork":
                                start = int(os.read(stamp_r, 64) or b"0")
                            return (now - start) / 1e9, method
                    elif os.waitpid(pid, os.WNOHANG)[0]:
                        reg.forked.discard(pid)
                        raise BenchError("the directly started demo server exited before READY=1")
                raise BenchError("directly started demo server: no READY=1 within 10s")
            finally:
                if fd != listener.fileno():
                    os.close(fd)
                if stamp_r >= 0:
                    os.close(stamp_r)
                for child in list(reg.forked):
                    stop_forked(reg, child)
                path.unlink(missing_ok=True)
    raise BenchError("cannot start the demo server directly")


def measure_overhead(reg: Registry, cfg: Config, res: Results) -> None:
    sec = SECTIONS[3]
    log(f"reload overhead: {cfg.overhead_reloads} direct starts and {cfg.overhead_reloads} reloads, alternating")
    sup = Supervisor(reg, cfg.bins)
    direct, hup, spawn, diff, methods = [], [], [], [], set()
    try:
        for _ in range(cfg.overhead_reloads):
            d, method = direct_start(reg, cfg)
            methods.add(method)
            r = sup.reload()
            if not r.ok or r.hup_to_ready_s is None:
                raise BenchError("a reload failed during the overhead measurement")
            sup.wait_drained(r)
            direct.append(d)
            hup.append(r.hup_to_ready_s)
            spawn.append(r.spawn_to_ready)
            diff.append(r.hup_to_ready_s - d)
    finally:
        sup.stop()
    res.add(sec, "supervisor: SIGHUP -> new generation ready (log)", "ms", [v * 1e3 for v in hup])
    res.add(sec, "supervisor: spawn -> ready, as it reports", "ms", [v * 1e3 for v in spawn])
    how = "posix_spawn" if methods == {"posix_spawn"} else "fork+exec" if methods == {"fork"} else "posix_spawn or fork+exec"
    res.add(sec, f"same child started directly ({how}) -> READY=1", "ms", [v * 1e3 for v in direct])
    res.add(sec, "reload overhead (SIGHUP->ready minus direct start)", "ms", [v * 1e3 for v in diff])
    res.note(
        sec,
        f"overhead: {len(diff)} paired differences (reload i minus direct start i, alternating); "
        f"median(SIGHUP->ready) - median(direct) = {(statistics.median(hup) - statistics.median(direct)) * 1e3:.3f} ms",
    )
    if "fork" in methods:
        res.note(sec, "some direct starts were forked from Python (pid prediction failed), timed from their execve")


def measure_scale_listeners(reg: Registry, cfg: Config, res: Results, section6: bool = True) -> None:
    """Reload time with 1, 100 and 1,000 listeners, idle. With --handoff in
    both modes, alternating reload by reload between a steer and a shared
    supervisor (item 8); item 6 shows the binary's default mode."""
    sec = SECTIONS[5]
    modes: list[str | None] = list(HANDOFF_MODES) if cfg.handoff else [None]
    medians: dict[tuple[int, str], float] = {}
    for n in (1, 100, 1000):
        log(f"scale: {n} listener(s), {cfg.scale_reloads} reloads" + (" in each mode" if cfg.handoff else ""))
        sups = {}
        spawn: dict = {m: [] for m in modes}
        hup: dict = {m: [] for m in modes}
        fds: dict = {m: [] for m in modes}
        try:
            for m in modes:
                sups[m] = Supervisor(reg, cfg.bins, listeners=n, handoff=m)
            for _ in range(cfg.scale_reloads):
                for m in modes:
                    r = sups[m].reload()
                    if not r.ok:
                        raise BenchError(f"a reload failed with {n} listeners")
                    sups[m].wait_drained(r)
                    spawn[m].append(r.spawn_to_ready * 1e3)
                    hup[m].append(r.hup_to_ready_s * 1e3 if r.hup_to_ready_s is not None else None)
            for m in modes:
                wait_quiescent(sups[m].pid)
                fds[m].append(proc_snapshot(sups[m].pid)["fds"])
        finally:
            for sup in sups.values():
                sup.stop()
        label = f"{n:,} listener" + ("s" if n > 1 else "")
        default = modes[0]  # steer is the default of a binary with --handoff
        if section6:
            res.add(sec, f"{label}: spawn -> ready (supervisor's report)", "ms", spawn[default])
            res.add(sec, f"{label}: SIGHUP -> ready (log)", "ms", [v for v in hup[default] if v is not None])
        if cfg.handoff:
            res.pair(SECTIONS[7], f"{label}, idle: SIGHUP -> new generation ready", "ms", hup)
            res.pair(SECTIONS[7], f"{label}, idle: supervisor's open fds after the reloads", "fds", fds)
            for m in modes:
                medians[(n, m)] = statistics.median(v for v in hup[m] if v is not None)
    if cfg.handoff:
        for n in (1, 100, 1000):
            d = medians[(n, "steer")] - medians[(n, "shared")]
            res.note(SECTIONS[7], f"{n:,} listener(s): steer - shared = {d:.3f} ms a reload (medians)"
                     + (f", {d * 1e3 / n:.1f} us per listener" if n > 1 else ""))  # fmt: skip


class IdleWatch:
    """Several supervisors idling at once; /proc is read at the start and
    exactly `seconds` later by a timer thread, while other runs go on (an
    idle process is not woken by other processes' load: a wake-up of its
    own shows as a context switch)."""

    def __init__(self, reg: Registry, cfg: Config) -> None:
        self.seconds = cfg.idle_seconds
        self.sups = []
        for _ in range(cfg.idle_supervisors):
            sup = Supervisor(reg, cfg.bins)
            r = sup.reload()  # a reload first, so nothing is left to do
            sup.wait_drained(r)
            self.sups.append(sup)
        for sup in self.sups:
            wait_quiescent(sup.pid)
        self.before = [proc_snapshot(s.pid) for s in self.sups]
        self.start = time.monotonic()
        self.after: list[dict[str, int]] | None = None
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if not self._done.wait(self.seconds):
            try:
                self.after = [proc_snapshot(s.pid) for s in self.sups]
                self.elapsed = time.monotonic() - self.start
            except BaseException as err:  # noqa: BLE001 (reported by finish)
                self.error = err

    def finish(self, res: Results) -> None:
        left = self.start + self.seconds + 5 - time.monotonic()
        self._thread.join(max(left, 0))
        for sup in self.sups:
            sup.stop()
        if self.after is None:
            raise BenchError(f"idle snapshot not taken: {self.error}")
        sec = SECTIONS[4]
        n = len(self.sups)
        sw = [a["switches"] - b["switches"] for a, b in zip(self.after, self.before)]
        cpu = [a["cpu_ms"] - b["cpu_ms"] for a, b in zip(self.after, self.before)]
        res.add(sec, f"idle {self.seconds:.0f}s: context switches (vol+invol)", "count", sw)
        res.add(sec, f"idle {self.seconds:.0f}s: CPU time (utime+stime)", "ms", cpu)
        res.add(sec, "RSS (VmRSS), idle after a reload", "kB", [a["rss_kb"] for a in self.after])
        res.note(
            sec,
            f"idle: {n} supervisors (each after one reload) read from /proc {self.elapsed:.1f}s apart; "
            f"CPU time resolution {1000 // os.sysconf('SC_CLK_TCK')} ms",
        )
        res.goal("no wake-ups while idle", max(sw) == 0 and max(cpu) == 0, f"context switches {sw}, CPU ms {cpu}")


def run_contender(reg: Registry, cfg: Config, kind: str, use_wrk: bool):
    if kind == "supervisor":
        target = Supervisor(reg, cfg.bins)
    elif kind == "naive":
        target = Naive(reg, cfg.bins, cfg.tmp)
    else:
        target = Starter(reg, cfg.bins, cfg.start_server)
    status = None
    try:
        load = LoadRun(reg, cfg, target.port, cfg.load_seconds, use_wrk)
        reloads = reload_loop(target, load.start, cfg.reloads, 1.0, PERIOD, load.start + cfg.load_seconds - 1.5)
        result = load.finish()
    finally:
        status = target.stop()
    if isinstance(target, Supervisor):
        target.fill_drained(reloads)
        if status != 0:
            raise BenchError(f"the supervisor exited with status {status}:\n{target.log.tail()}")
    if isinstance(target, Starter):
        target.fill_exits(reloads)
    return result, reloads


def measure_alternatives(reg: Registry, cfg: Config, res: Results) -> None:
    s1, s2 = SECTIONS[0], SECTIONS[1]
    use_wrk = cfg.wrk is not None
    tool = "wrk -t2 -c64" if use_wrk else "examples/load --connections 64"
    if not use_wrk:
        res.note(s1, "wrk is not installed: the load generator is examples/load instead (its failure kinds)")
    kinds = ["supervisor", "naive"]
    if cfg.start_server:
        kinds.append("starter")
    else:
        res.note(s2, "start_server (Debian: libserver-starter-perl) is not installed: that comparison is skipped")
    names = {"supervisor": "supervisor", "naive": "naive restart", "starter": "start_server"}
    runs: dict[str, list[tuple[LoadResult, list[Reload]]]] = {k: [] for k in kinds}
    for i in range(cfg.runs):
        for kind in kinds:  # interleaved, so drifts of the machine hit all alike
            log(f"{tool}, {cfg.load_seconds:.0f}s, {cfg.reloads} reloads: {names[kind]} (run {i + 1}/{cfg.runs})")
            runs[kind].append(run_contender(reg, cfg, kind, use_wrk))
    for kind in kinds:
        name = names[kind]
        rr = [r for r, _ in runs[kind]]
        res.add(s1, f"{name}: requests", "count", [r.requests for r in rr])
        res.add(s1, f"{name}: non-2xx", "count", [r.non_2xx for r in rr])
        for err in rr[0].errors:
            res.add(s1, f"{name}: socket errors, {err}", "count", [r.errors[err] for r in rr])
        res.add(s1, f"{name}: failures (non-2xx + errors)", "count", [r.failures for r in rr])
        res.add(s1, f"{name}: latency p50", "ms", [r.p50_ms for r in rr])
        res.add(s1, f"{name}: latency p99", "ms", [r.p99_ms for r in rr])
        res.add(s1, f"{name}: reloads done (succeeded)", "count", [sum(x.ok for x in rl) for _, rl in runs[kind]])
    # reload timings seen during these runs
    sup_reloads = [x for _, rl in runs["supervisor"] for x in rl]
    res.add(s2, "supervisor: SIGHUP -> ready, under load", "ms", [x.hup_to_ready_s * 1e3 for x in sup_reloads if x.hup_to_ready_s])
    res.add(s2, "supervisor: SIGHUP -> old generation drained, under load", "ms",
            [x.hup_to_drained_s * 1e3 for x in sup_reloads if x.hup_to_drained_s])  # fmt: skip
    naive_reloads = [x for _, rl in runs["naive"] for x in rl]
    res.add(s2, "naive restart: TERM -> new server READY=1, under load", "ms", [x.restart_s * 1e3 for x in naive_reloads])
    res.add(s2, "naive restart: old server exited -> new READY=1", "ms", [x.gap_s * 1e3 for x in naive_reloads])
    if "starter" in runs:
        st = [x for _, rl in runs["starter"] for x in rl]
        res.add(s2, "start_server: SIGHUP -> TERM to old worker, under load", "ms", [x.effective_s * 1e3 for x in st])
        res.add(s2, "start_server: SIGHUP -> old worker exited, under load", "ms",
                [x.old_exit_s * 1e3 for x in st if x.old_exit_s is not None])  # fmt: skip
        res.add(SECTIONS[3], "start_server: effective reload (SIGHUP -> TERM to old)", "ms",
                [x.effective_s * 1e3 for x in st])  # fmt: skip
    # ratios, run by run (run i of each contender ran back to back)
    sup = [r for r, _ in runs["supervisor"]]
    for kind in kinds[1:]:
        name = names[kind]
        peer = [r for r, _ in runs[kind]]
        fr = [a.failures / b.failures for a, b in zip(sup, peer) if b.failures > 0]
        pr = [a.p99_ms / b.p99_ms for a, b in zip(sup, peer) if b.p99_ms > 0]
        res.add(s2, f"failures ratio, supervisor / {name}", "ratio", fr)
        res.add(s2, f"p99 ratio, supervisor / {name}", "ratio", pr)
        fs, fp = statistics.median(r.failures for r in sup), statistics.median(r.failures for r in peer)
        ps, pp = statistics.median(r.p99_ms for r in sup), statistics.median(r.p99_ms for r in peer)
        fratio = f"ratio {fs / fp:.3g}" if fp > 0 else "no ratio: no failures on either side" if fs == 0 else "no ratio"
        pratio = f"ratio {ps / pp:.3g}" if pp > 0 else "no ratio"
        res.note(s2, f"failures, median: supervisor {fs:g} vs {name} {fp:g} ({fratio})")
        res.note(s2, f"p99, median: supervisor {ps:.3g} ms vs {name} {pp:.3g} ms ({pratio})")
    total = [r.failures for r in sup]
    res.goal("zero failures under reload (" + tool.split()[0] + ")", max(total) == 0, f"failures per run {total}")


def measure_windows(reg: Registry, cfg: Config, res: Results) -> None:
    """Item 3, from examples/load --samples. For the supervisor: the
    issue's reload windows (SIGHUP -> old generation drained) and the
    handover windows (stop signal to the old generation -> it exited). For
    start_server only the handover windows compare (its reload window is
    over a second long, mostly its --interval wait)."""
    sec = SECTIONS[2]
    kinds = ["supervisor"] + (["starter"] if cfg.start_server else [])
    figures: dict[str, list[float]] = {}

    def put(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    failures: dict[str, list[int]] = {k: [] for k in kinds}
    for i in range(cfg.runs):
        for kind in kinds:
            count = cfg.window_reloads  # the same schedule for both: start_server needs 1 s a reload
            log(f"latency windows: examples/load --samples, {cfg.window_seconds:.0f}s, {count} reloads: "
                f"{'supervisor' if kind == 'supervisor' else 'start_server'} (run {i + 1}/{cfg.runs})")  # fmt: skip
            samples = cfg.tmp / "samples.txt"
            if kind == "supervisor":
                target = Supervisor(reg, cfg.bins, watch_exits=True)
            else:
                target = Starter(reg, cfg.bins, cfg.start_server)
            try:
                load = LoadRun(reg, cfg, target.port, cfg.window_seconds, use_wrk=False, samples=samples)
                reloads = reload_loop(target, load.start, count, 1.5, PERIOD, load.start + cfg.window_seconds - 1.3)
                if kind == "supervisor":
                    for r in reloads:
                        target.wait_drained(r)
                Starter.fill_exits(reloads)
                result = load.finish()
            finally:
                status = target.stop()
            if kind == "supervisor" and status != 0:
                raise BenchError(f"the supervisor exited with status {status}")
            failures[kind].append(result.failures)
            load_start, data = read_samples(samples)
            samples.unlink()
            handover = [
                (int(r.stop_mono * 1e9), int(r.old_exit.time * 1e9))
                for r in reloads
                if r.stop_mono is not None and r.old_exit and r.old_exit.time is not None
            ]
            if kind == "supervisor":

                def mono_ns(r: Reload, real_us: int) -> int:
                    return real_us * 1000 - r.pair[1] + r.pair[0]

                full = [(mono_ns(r, r.requested_us), mono_ns(r, r.drained_us)) for r in reloads
                        if r.requested_us and r.drained_us]  # fmt: skip
                inside, steady = cut_windows(data, load_start, full)
                if not inside or not steady:
                    raise BenchError("no samples inside or outside the reload windows")
                a, b = quantile(inside, 0.99), quantile(steady, 0.99)
                put("sup inside", a / 1e3)
                put("sup steady", b / 1e3)
                put("sup ratio", a / b)
                put("sup count", len(inside))
                inside, steady = cut_windows(data, load_start, handover)
                put("sup handover", quantile(inside, 0.99) / 1e3)
                put("sup handover ratio", quantile(inside, 0.99) / quantile(steady, 0.99))
            else:
                inside, steady = cut_windows(data, load_start, handover)
                if not inside or not steady:
                    raise BenchError("no samples inside or outside start_server's windows")
                a, b = quantile(inside, 0.99), quantile(steady, 0.99)
                put("st inside", a / 1e3)
                put("st steady", b / 1e3)
                put("st ratio", a / b)
    f = figures
    res.add(sec, "supervisor: p99 inside reload windows (SIGHUP -> old drained)", "ms", f["sup inside"])
    res.add(sec, "supervisor: p99 in steady state (outside the windows)", "ms", f["sup steady"])
    res.add(sec, "supervisor: reload latency cost, p99 inside / steady", "ratio", f["sup ratio"])
    res.add(sec, "supervisor: requests inside the windows", "count", f["sup count"])
    res.add(sec, "supervisor: p99 inside handover windows (TERM to old -> it exited)", "ms", f["sup handover"])
    res.add(sec, "supervisor: handover p99 / steady", "ratio", f["sup handover ratio"])
    if "st ratio" in f:
        res.add(sec, "start_server: p99 inside handover windows (TERM to old -> it exited)", "ms", f["st inside"])
        res.add(sec, "start_server: p99 in steady state", "ms", f["st steady"])
        res.add(sec, "start_server: handover p99 / steady", "ratio", f["st ratio"])
    for kind in kinds:
        name = "supervisor" if kind == "supervisor" else "start_server"
        res.add(sec, f"{name}: failed requests (examples/load)", "count", failures[kind])
    res.note(sec, f"{cfg.window_seconds:.0f}s runs, 64 connections; a request is inside when its time span overlaps a "
                  "window; the first second (warm-up) is left out. Handover windows are timed alike for both: from "
                  "the arrival of the log line announcing the stop signal to the old server's exit (pidfd)")  # fmt: skip
    sup_failures = failures["supervisor"]
    res.goal("zero failures under reload (examples/load, latency runs)", max(sup_failures) == 0,
             f"failures per run {sup_failures}")  # fmt: skip


def read_samples(path: Path) -> tuple[int, list[tuple[int, int]]]:
    """The load generator's start on CLOCK_MONOTONIC (ns) and its samples
    as (start offset µs, latency µs)."""
    with path.open() as f:
        m = re.search(r"monotonic_ns=(\d+)", f.readline())
        if not m:
            raise BenchError(f"{path}: no start line")
        data = []
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                data.append((int(parts[0]), int(parts[1])))
    return int(m.group(1)), data


def cut_windows(
    data: list[tuple[int, int]], load_start_ns: int, windows_ns: list[tuple[int, int]]
) -> tuple[list[int], list[int]]:
    """Latencies (µs) of the requests whose time span overlaps a window
    (CLOCK_MONOTONIC ns; the supervisor's log timestamps are realtime and
    carried over with the clock pair read at each SIGHUP), and of the
    others. Requests started in the first second are left out."""
    windows = sorted(((a - load_start_ns) / 1000, (b - load_start_ns) / 1000) for a, b in windows_ns)
    ends = [w[1] for w in windows]
    inside, outside = [], []
    for start, latency in data:
        if start < 1_000_000:
            continue
        i = bisect.bisect_right(ends, start)
        if i < len(windows) and windows[i][0] < start + latency:
            inside.append(latency)
        else:
            outside.append(latency)
    return inside, outside


def quantile(values: list[int], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return float(ordered[rank - 1])


def measure_back_to_back(reg: Registry, cfg: Config, res: Results) -> None:
    sec5, sec6 = SECTIONS[4], SECTIONS[5]
    n = cfg.back_to_back
    totals, drained_totals, failures, fds1, fdsn, rss1, rssn = [], [], [], [], [], [], []
    for i in range(cfg.runs):
        log(f"scale: {n} back-to-back reloads under load (run {i + 1}/{cfg.runs})")
        sup = Supervisor(reg, cfg.bins)
        try:
            load = LoadRun(reg, cfg, sup.port, 60, use_wrk=False)
            time.sleep(1.0)  # pacing: let the load reach its steady state
            first = sup.reload()
            sup.wait_drained(first)
            wait_quiescent(sup.pid)
            snap = proc_snapshot(sup.pid)
            fds1.append(snap["fds"])
            rss1.append(snap["rss_kb"])
            reloads = [first]
            for _ in range(n - 1):  # each SIGHUP as soon as the last one is ready
                r = sup.reload()
                if not r.ok:
                    raise BenchError("a back-to-back reload failed")
                reloads.append(r)
            for r in reloads:
                sup.wait_drained(r, timeout=30)
            wait_quiescent(sup.pid)
            snap = proc_snapshot(sup.pid)
            fdsn.append(snap["fds"])
            rssn.append(snap["rss_kb"])
            time.sleep(0.5)  # pacing: some steady load after the last drain
            load.interrupt()
            result = load.finish()
        finally:
            status = sup.stop()
        if status != 0:
            raise BenchError(f"the supervisor exited with status {status}")
        totals.append((reloads[-1].ready_us - first.requested_us) / 1e6)
        drained_totals.append((max(r.drained_us for r in reloads) - first.requested_us) / 1e6)
        failures.append(result.failures)
    res.add(sec6, f"{n} back-to-back reloads under load: 1st SIGHUP -> {n}th ready", "s", totals)
    res.add(sec6, f"{n} back-to-back reloads under load: until all drained", "s", drained_totals)
    res.add(sec6, f"{n} back-to-back reloads under load: failed requests", "count", failures)
    res.add(sec5, "fd count after 1 reload", "fds", fds1)
    res.add(sec5, f"fd count after {n} reloads", "fds", fdsn)
    res.add(sec5, "RSS after 1 reload (under load)", "kB", rss1)
    res.add(sec5, f"RSS after {n} reloads (under load)", "kB", rssn)
    res.goal(f"fd count after {n} reloads = after 1", fds1 == fdsn, f"after 1: {fds1}, after {n}: {fdsn}")
    res.goal(f"zero failures during {n} back-to-back reloads", max(failures) == 0, f"failures per run {failures}")


# --------------------------------------------------------------------------
# hand-off modes (items 7 and 8)


def supports_handoff(bins: Path) -> bool:
    """Whether this build has --handoff (builds before steering have one
    mode only, which is what `shared` is now)."""
    try:
        out = subprocess.run([str(bins / "supervisor"), "--help"], capture_output=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return b"--handoff" in out


CHILD_NAMES = {"naive": "naive-drain child", "demo": "demo server"}


def conn_name(close: bool) -> str:
    return "Connection: close" if close else "keep-alive"


def read_hsamples(path: Path) -> tuple[int, list[tuple[int, int, int]]]:
    """hload's start on CLOCK_MONOTONIC (ns) and its samples as (start
    offset µs, latency µs, code: HTTP status, or < 0 for a failure)."""
    with path.open() as f:
        m = re.search(r"monotonic_ns=(\d+)", f.readline())
        if not m:
            raise BenchError(f"{path}: no start line")
        data = []
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                data.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return int(m.group(1)), data


class HLoad:
    """scripts/bench/hload.py against a port: keep-alive or Connection:
    close, every request recorded."""

    def __init__(self, reg: Registry, port: int, seconds: float, close: bool, samples: Path) -> None:
        argv = [
            sys.executable, str(HELPERS / "hload.py"), "--port", str(port), "--connections", str(HCONNECTIONS),
            "--duration", f"{seconds:g}", "--samples", str(samples),
        ] + (["--close"] if close else [])  # fmt: skip
        self.seconds = seconds
        self.samples = samples
        self.proc = reg.popen(argv, "hload", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.start = time.monotonic()

    def finish(self) -> tuple[LoadResult, int, list[tuple[int, int, int]]]:
        try:
            out, err = self.proc.communicate(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            raise BenchError("hload did not end") from None
        text = out.decode("utf-8", "replace")
        try:
            data = json.loads(text.strip().splitlines()[-1])
            result = LoadResult(
                data["requests"], data["non_2xx"], {k: int(v) for k, v in data["failures"].items()},
                float(data["latency_ms"]["p50"]), float(data["latency_ms"]["p99"]), text,
            )  # fmt: skip
        except (ValueError, KeyError, IndexError) as e:
            raise BenchError(f"cannot read hload's report ({e}): {text} {err.decode('utf-8', 'replace')}") from None
        start, samples = read_hsamples(self.samples)
        self.samples.unlink()
        return result, start, samples


def measure_handoff(reg: Registry, cfg: Config, res: Results) -> None:
    """Item 7: each child (naive drain, demo server) x each connection
    style (Connection: close, keep-alive) x each mode (steer, shared), the
    two modes back to back within a run, `runs` times. Item 8's timings
    under load come from the same runs. Run 1's naive child with Connection:
    close is the picture."""
    s7, s8 = SECTIONS[6], SECTIONS[7]
    combos = [(child, close) for child in ("naive", "demo") for close in (True, False)]
    fig: dict[tuple[str, str], dict[str, list[float]]] = {}  # (what, mode) -> values
    kinds: dict[tuple[str, str], dict[str, int]] = {}

    def put(what: str, mode: str, value: float | None) -> None:
        if value is not None:
            fig.setdefault((what, mode), []).append(value)

    picture: dict[str, dict] = {}
    n = cfg.handoff_reloads
    for i in range(cfg.runs):
        for child, close in combos:
            for mode in HANDOFF_MODES:  # back to back: drifts of the machine hit both alike
                key = f"{CHILD_NAMES[child]}, {conn_name(close)}"
                log(f"hand-off: {key}, --handoff {mode}: hload {HCONNECTIONS} connections, "
                    f"{cfg.handoff_seconds:g}s, {n} reloads (run {i + 1}/{cfg.runs})")  # fmt: skip
                sup = Supervisor(reg, cfg.bins, handoff=mode, child=child)
                try:
                    load = HLoad(reg, sup.port, cfg.handoff_seconds, close, cfg.tmp / "hsamples.txt")
                    stop_by = load.start + cfg.handoff_seconds - 1.2
                    reloads = reload_loop(sup, load.start, n, 1.0, cfg.handoff_period, stop_by)
                    for r in reloads:
                        sup.wait_drained(r)
                    result, load_start, data = load.finish()
                finally:
                    status = sup.stop()
                if status != 0:
                    raise BenchError(f"the supervisor exited with status {status}:\n{sup.log.tail()}")
                done = [r for r in reloads if r.ok]
                if not done:
                    raise BenchError(f"no reload succeeded ({key}, {mode})")

                def mono_ns(r: Reload, real_us: int) -> int:
                    return real_us * 1000 - r.pair[1] + r.pair[0]

                windows = [(mono_ns(r, r.requested_us), mono_ns(r, r.drained_us)) for r in done
                           if r.requested_us and r.drained_us]  # fmt: skip
                ok = [(a, b) for a, b, c in data if 200 <= c < 300]
                inside, steady = cut_windows(ok, load_start, windows)
                put(f"{key}: failed requests per reload", mode, result.failures / len(done))
                put(f"{key}: failed requests per run", mode, result.failures)
                put(f"{key}: requests per run", mode, result.requests)
                if inside and steady:
                    a, b = quantile(inside, 0.99), quantile(steady, 0.99)
                    put(f"{key}: p99 inside reload windows", mode, a / 1e3)
                    put(f"{key}: p99 steady (outside)", mode, b / 1e3)
                    put(f"{key}: p99 inside / steady", mode, a / b)
                for r in done:
                    put(f"{CHILD_NAMES[child]}: SIGHUP -> new generation ready", mode, r.hup_to_ready_s * 1e3)
                    if r.stop_us and r.requested_us:
                        put(f"{CHILD_NAMES[child]}: SIGHUP -> stop signal to the old generation", mode,
                            (r.stop_us - r.requested_us) / 1e3)  # fmt: skip
                    put(f"{CHILD_NAMES[child]}: SIGHUP -> old generation exited", mode,
                        r.hup_to_drained_s * 1e3 if r.hup_to_drained_s is not None else None)  # fmt: skip
                k = kinds.setdefault((key, mode), {})
                for kind, count in result.errors.items():
                    k[kind] = k.get(kind, 0) + count
                k["non-2xx"] = k.get("non-2xx", 0) + result.non_2xx
                if i == 0 and child == "naive" and close:

                    def rel(real_us: int | None, r: Reload) -> float | None:
                        return None if real_us is None else (mono_ns(r, real_us) - load_start) / 1e9

                    picture[mode] = {
                        "samples": data,
                        "reloads": [{"hup": rel(r.requested_us, r), "ready": rel(r.ready_us, r),
                                     "stop": rel(r.stop_us, r), "exited": rel(r.drained_us, r)} for r in done],
                        "requests": result.requests, "failures": result.failures,
                    }  # fmt: skip
    seen: list[str] = []
    for what, _ in fig:
        if what not in seen:
            seen.append(what)
    for what in seen:
        unit = ("ratio" if what.endswith("/ steady") else "ms" if ("p99" in what or "SIGHUP" in what) else "count")
        res.pair(s8 if "SIGHUP" in what else s7, what, unit, {m: fig.get((what, m), []) for m in HANDOFF_MODES})
    for (key, mode), k in kinds.items():
        text = ", ".join(f"{kind} {count}" for kind, count in k.items() if count) or "none"
        res.note(s7, f"failures by kind, all runs, {key}, {mode}: {text}")
    res.note(s7, f"scripts/bench/hload.py, {HCONNECTIONS} connections, {cfg.handoff_seconds:g}s runs, {n} reloads "
                 f"{cfg.handoff_period:g}s apart; naive child: {NAIVE_WORKERS} worker threads, 1 ms a request; "
                 "demo server: 2 ms a request. A reload window runs from SIGHUP to the old generation's exit "
                 "(supervisor's log); the first second is left out of both p99s")  # fmt: skip
    res.note(s8, "timestamps of the supervisor's log lines (microseconds): 'reload requested', the new generation's "
                 "'ready in', the old one's 'draining: sent SIG...' and 'drained in'")  # fmt: skip
    if picture:
        write_picture(cfg, picture)


def write_picture(cfg: Config, picture: dict[str, dict]) -> None:
    sys.path.insert(0, str(HELPERS))
    import handoff_plot  # noqa: E402 (a helper next to this script)

    cfg.svg.parent.mkdir(parents=True, exist_ok=True)
    data_path = cfg.svg.with_suffix(".json")
    kernel = re.match(r"[\d.]+", os.uname().release)
    where = f"{os.cpu_count()} CPUs, Linux {kernel.group(0) if kernel else os.uname().release}"
    meta = {"machine": where, "connections": HCONNECTIONS, "workers": NAIVE_WORKERS,
            "seconds": cfg.handoff_seconds}  # fmt: skip
    data_path.write_text(json.dumps({"meta": meta, "modes": picture}))
    handoff_plot.render(data_path, cfg.svg)
    log(f"picture: {cfg.svg} (data: {data_path})")


# --------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Linux {os.uname().release}"


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark the supervisor against its alternatives (see the header).")
    parser.add_argument("--csv", type=Path, help="CSV output file (default target/bench/results.csv, "
                        "or target/bench/handoff.csv with --handoff-only)")
    parser.add_argument("--bin-dir", type=Path, default=ROOT / "target" / "release", help="where the release build is")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test of this script only")
    parser.add_argument("--handoff-only", action="store_true",
                        help="only items 7-8: steer against shared (and the listener scale in both modes)")
    parser.add_argument("--no-handoff", action="store_true", help="skip items 7-8")
    parser.add_argument("--svg", type=Path, default=ROOT / "target" / "bench" / "handoff.svg",
                        help="the picture of item 7 (default target/bench/handoff.svg; its data next to it as .json)")
    args = parser.parse_args()
    if args.csv is None:
        args.csv = ROOT / "target" / "bench" / ("handoff.csv" if args.handoff_only else "results.csv")

    started = time.monotonic()
    for name in ("supervisor", "examples/demo_server", "examples/load"):
        if not os.access(args.bin_dir / name, os.X_OK):
            print(f"bench: {args.bin_dir / name} is missing: build with scripts/bench.sh", file=sys.stderr)
            return 1
    # 1,000 listeners: the supervisor and each generation hold them all.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    reg = Registry()

    signal.signal(signal.SIGINT, INTERRUPTS.handler)
    signal.signal(signal.SIGTERM, INTERRUPTS.handler)
    tmp = Path(tempfile.mkdtemp(prefix="supervisor-bench."))
    global CONTROL_ROOT
    CONTROL_ROOT = str(tmp)
    quick = args.quick
    cfg = Config(
        bins=args.bin_dir,
        tmp=tmp,
        runs=max(1, args.runs),
        wrk=shutil.which("wrk"),
        start_server=shutil.which("start_server"),
        load_seconds=6 if quick else 28,
        reloads=4 if quick else 21,
        window_seconds=5 if quick else 15,
        window_reloads=3 if quick else 10,
        overhead_reloads=5 if quick else 30,
        idle_seconds=5 if quick else 30,
        idle_supervisors=3,
        scale_reloads=3 if quick else 11,
        back_to_back=10 if quick else 100,
        handoff=supports_handoff(args.bin_dir) and not args.no_handoff,
        handoff_seconds=6 if quick else 10,
        handoff_reloads=3 if quick else 6,
        handoff_period=1.2,
        svg=args.svg,
    )
    res = Results()
    status = 0
    try:
        print(f"supervisor benchmark on {machine()}")
        print(f"wrk: {cfg.wrk or 'not installed'}; start_server: {cfg.start_server or 'not installed'}")
        print(f"binaries: {args.bin_dir}; hand-off modes: "
              + ("steer (default) and shared" if cfg.handoff else "one (no --handoff: items 7-8 skipped)"))
        if args.handoff_only:
            if not cfg.handoff:
                raise BenchError(f"{args.bin_dir / 'supervisor'} has no --handoff (or --no-handoff was given)")
            measure_scale_listeners(reg, cfg, res, section6=False)
            measure_handoff(reg, cfg, res)
        else:
            measure_overhead(reg, cfg, res)
            measure_scale_listeners(reg, cfg, res)
            log(f"footprint: {cfg.idle_supervisors} supervisors idle for {cfg.idle_seconds:.0f}s, during the next runs")
            idle = IdleWatch(reg, cfg)
            measure_alternatives(reg, cfg, res)
            idle.finish(res)
            measure_windows(reg, cfg, res)
            measure_back_to_back(reg, cfg, res)
            if cfg.handoff:
                measure_handoff(reg, cfg, res)
    except Interrupted as sig:
        print(f"\nbench: interrupted ({sig}); stopping everything", file=sys.stderr)
        status = 130
    except BenchError as err:
        print(f"\nbench: error: {err}", file=sys.stderr)
        status = 1
    except Exception:  # a bug here: still stop everything, show the partial table
        traceback.print_exc()
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        reg.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    if res.rows or res.pairs:
        if status:
            print("\npartial results (no CSV written):")
        print_table(res)
        if not status:
            write_csv(res, args.csv)
            print(f"\nCSV: {args.csv}")
    if res.goals:
        print("\nGoals")
        for name, met, detail in res.goals:
            print(f"  {'met   ' if met else 'MISSED'}  {name}: {detail}")
    total = time.monotonic() - started
    print(f"\ntotal time of the benchmark: {total:.0f}s{' (over the 10-minute budget)' if total > 600 else ''}")
    if quick:
        print("(--quick: short runs, the figures are not comparable)")
    return status


if __name__ == "__main__":
    sys.exit(main())
