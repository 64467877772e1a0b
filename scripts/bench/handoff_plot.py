#!/usr/bin/env python3
"""The hand-off picture: per-request latency over time, one panel per mode.

    python3 handoff_plot.py DATA.json OUT.svg

DATA.json is what scripts/bench.py writes next to target/bench/handoff.svg:
{"meta": {...}, "modes": {"steer": {"samples": [[start_us, latency_us, code],
...], "reloads": [{"hup": s, "ready": s, "stop": s, "exited": s}, ...],
"requests": N, "failures": N}, "shared": {...}}}. Times are seconds from the
load generator's start; a code below 0 is a failed request.

Every request is a dot at (its start, its latency), on a log scale shared by
both panels; dots that fall on the same pixel are drawn once, so the file
stays small. Failed requests are red crosses in a strip above each panel.
Each reload is a shaded band from SIGHUP to the old generation's exit, with
a line where the new generation became ready (new connections go to it) and
one where the old generation got its stop signal. Standard library only: a
small SVG writer, no plotting library.
"""

import json
import math
import sys
from pathlib import Path
from xml.sax.saxutils import escape

WIDTH = 960
LEFT, RIGHT = 64, 16
PANEL_H = 230
STRIP_H = 22  # the failed-request strip above each panel
STRIP_GAP = 8
TOP = 74
GAP = 58

COLORS = {
    "dot": "#3b6ea8",
    "fail": "#d62728",
    "window": "#f4d9a6",
    "ready": "#2a9d5c",
    "stop": "#7b3294",
    "grid": "#e3e3e3",
    "axis": "#444",
}


class Svg:
    """Just enough SVG: elements as strings, written in order."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.parts: list[str] = []

    @staticmethod
    def _attrs(attrs: dict) -> str:
        return "".join(f' {k.replace("_", "-")}="{escape(str(v), {chr(34): "&quot;"})}"' for k, v in attrs.items())

    def add(self, tag: str, text: str | None = None, **attrs) -> None:
        if text is None:
            self.parts.append(f"<{tag}{self._attrs(attrs)}/>")
        else:
            self.parts.append(f"<{tag}{self._attrs(attrs)}>{escape(text)}</{tag}>")

    def line(self, x1, y1, x2, y2, **attrs) -> None:
        self.add("line", x1=f"{x1:.1f}", y1=f"{y1:.1f}", x2=f"{x2:.1f}", y2=f"{y2:.1f}", **attrs)

    def rect(self, x, y, w, h, **attrs) -> None:
        self.add("rect", x=f"{x:.1f}", y=f"{y:.1f}", width=f"{w:.1f}", height=f"{h:.1f}", **attrs)

    def text(self, x, y, text: str, **attrs) -> None:
        attrs.setdefault("font_size", 12)
        self.add("text", text, x=f"{x:.1f}", y=f"{y:.1f}", **attrs)

    def path(self, d: str, **attrs) -> None:
        self.add("path", d=d, **attrs)

    def render(self) -> str:
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
            f'viewBox="0 0 {self.width} {self.height}" font-family="Helvetica, Arial, sans-serif">'
        )
        return "\n".join([head, f'<rect width="{self.width}" height="{self.height}" fill="white"/>', *self.parts,
                          "</svg>"]) + "\n"  # fmt: skip


def nice_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks between lo and hi (log axis)."""
    ticks = []
    e = math.floor(math.log10(lo))
    while 10**e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10**e
            if lo * 0.9999 <= v <= hi * 1.0001:
                ticks.append(v)
        e += 1
    return ticks


def label_ms(v: float) -> str:
    return f"{v:g} ms" if v < 1000 else f"{v / 1000:g} s"


def render(data_path: Path, out: Path) -> None:
    data = json.loads(Path(data_path).read_text())
    meta, modes = data["meta"], data["modes"]
    order = [m for m in ("steer", "shared") if m in modes]
    seconds = float(meta.get("seconds", 10))
    lat = [s[1] / 1000 for m in order for s in modes[m]["samples"] if s[2] >= 0]
    lo = 10 ** math.floor(math.log10(max(min(lat), 0.05)))
    hi = max(lat)
    hi = next(m * 10**e for e in range(-1, 6) for m in (1, 2, 5) if m * 10**e >= hi)
    plot_w = WIDTH - LEFT - RIGHT
    height = TOP + len(order) * (STRIP_H + PANEL_H + GAP) + 16
    svg = Svg(WIDTH, height)
    svg.text(LEFT, 22, "Per-request latency across reloads: steer vs shared", font_size=16, font_weight="bold")
    svg.text(LEFT, 40, f"naive-drain child ({meta.get('workers', '?')} workers), Connection: close, "
                       f"{meta.get('connections', '?')} connections; {meta.get('machine', '')}",
             font_size=11, fill="#555")  # fmt: skip
    # legend
    lx = LEFT
    ly = 58
    svg.rect(lx, ly - 9, 18, 11, fill=COLORS["window"])
    svg.text(lx + 23, ly, "reload: SIGHUP to the old generation's exit", font_size=11)
    lx += 270
    svg.line(lx, ly - 10, lx, ly + 2, stroke=COLORS["ready"], stroke_width=2)
    svg.text(lx + 6, ly, "new generation ready", font_size=11)
    lx += 140
    svg.line(lx, ly - 10, lx, ly + 2, stroke=COLORS["stop"], stroke_width=1.5, stroke_dasharray="3,2")
    svg.text(lx + 6, ly, "stop signal to the old one", font_size=11)
    lx += 170
    svg.path(f"M{lx - 4} {ly - 8}l8 8m0 -8l-8 8", stroke=COLORS["fail"], stroke_width=1.6)
    svg.text(lx + 9, ly, "failed request", font_size=11)
    lx += 105
    svg.path(f"M{lx} {ly - 4}h0", stroke=COLORS["dot"], stroke_width=3, stroke_linecap="round")
    svg.text(lx + 7, ly, "answered request", font_size=11)

    def x_of(t: float) -> float:
        return LEFT + max(0.0, min(1.0, t / seconds)) * plot_w

    for i, mode in enumerate(order):
        d = modes[mode]
        top = TOP + i * (STRIP_H + PANEL_H + GAP) + 18
        ptop = top + STRIP_H + STRIP_GAP  # the plot area below the strip
        bottom = ptop + PANEL_H

        def y_of(ms: float) -> float:
            v = min(max(ms, lo), hi)
            return bottom - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * PANEL_H

        title = f"--handoff {mode}" + (" (the default)" if mode == "steer" else "")
        svg.text(LEFT, top - 6, f"{title}: {d['requests']:,} requests, {d['failures']:,} failed, "
                                f"{len(d['reloads'])} reloads", font_size=13, font_weight="bold")  # fmt: skip
        for r in d["reloads"]:
            if r.get("hup") is not None and r.get("exited") is not None:
                x1, x2 = x_of(r["hup"]), x_of(r["exited"])
                svg.rect(x1, top, max(x2 - x1, 1.0), bottom - top, fill=COLORS["window"])
                failed = sum(1 for s in d["samples"] if s[2] < 0 and r["hup"] <= s[0] / 1e6 <= r["exited"] + 0.05)
                if failed:
                    svg.text(x2 + 4, top + 15, f"{failed}", font_size=11, fill=COLORS["fail"], font_weight="bold")
        svg.rect(LEFT, top, plot_w, STRIP_H, fill="none", stroke=COLORS["grid"])
        svg.text(LEFT - 6, top + 15, "failed", font_size=10, text_anchor="end", fill=COLORS["fail"])
        if not d["failures"]:
            svg.text(LEFT + 6, top + 15, "no failed request", font_size=10, fill="#777")
        for v in nice_ticks(lo, hi):
            y = y_of(v)
            svg.line(LEFT, y, LEFT + plot_w, y, stroke=COLORS["grid"])
            svg.text(LEFT - 6, y + 4, label_ms(v), font_size=10, text_anchor="end")
        step = 1 if seconds <= 12 else 2 if seconds <= 30 else 5
        t = 0
        while t <= seconds + 1e-9:
            x = x_of(t)
            svg.line(x, bottom, x, bottom + 4, stroke=COLORS["axis"])
            svg.text(x, bottom + 16, f"{t:g} s", font_size=10, text_anchor="middle")
            t += step
        # answered requests: one dot per occupied pixel
        seen = set()
        for start, latency, code in d["samples"]:
            if code >= 0:
                seen.add((round(x_of(start / 1e6)), round(y_of(latency / 1000))))
        parts, last = [], None
        for x, y in sorted(seen):  # within a column, relative moves: a smaller file
            parts.append(f"m0 {y - last[1]}h0" if last and last[0] == x else f"M{x} {y}h0")
            last = (x, y)
        dots = "".join(parts)
        svg.path(dots, stroke=COLORS["dot"], stroke_width=2.2, stroke_linecap="round", stroke_opacity=0.75)
        # failed requests: crosses in the strip, spread vertically by order
        marks = []
        for k, (start, _latency, code) in enumerate(s for s in d["samples"] if s[2] < 0):
            x = x_of(start / 1e6)
            y = top + 5 + (k * 7 % 12)
            marks.append(f"M{x - 3:.1f} {y:.1f}l6 6m0 -6l-6 6")
        if marks:
            svg.path("".join(marks), stroke=COLORS["fail"], stroke_width=1.3, fill="none")
        for r in d["reloads"]:
            if r.get("ready") is not None:
                x = x_of(r["ready"])
                svg.line(x, top, x, bottom, stroke=COLORS["ready"], stroke_width=1.5)
            if r.get("stop") is not None:
                x = x_of(r["stop"])
                svg.line(x, top, x, bottom, stroke=COLORS["stop"], stroke_width=1.3, stroke_dasharray="3,2")
        svg.rect(LEFT, ptop, plot_w, PANEL_H, fill="none", stroke=COLORS["axis"])
        svg.text(14, (ptop + bottom) / 2, "latency", font_size=11, text_anchor="middle",
                 transform=f"rotate(-90 14 {(ptop + bottom) / 2:.0f})")  # fmt: skip
    svg.text(LEFT + plot_w / 2, height - 4, "time since the load started", font_size=11, text_anchor="middle")
    Path(out).write_text(svg.render())


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: handoff_plot.py DATA.json OUT.svg")
    render(Path(sys.argv[1]), Path(sys.argv[2]))
