"""Server-side SVG charts: line, scatter, bar, stacked bar and timeline, as inline ``<svg>`` markup.

No chart library and no JavaScript: every chart is computed here and sent inside the page, so pages
load with no network access, read without scripts and scale on a phone (``viewBox`` plus CSS width).
Each chart draws its thresholds as dashed lines (class ``threshold``, with a label) and carries a
``<title>`` on each mark for hover details; the numbers themselves are also in the tables beside
the charts, for screen readers and copying.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from markupsafe import Markup, escape

__all__ = [
    "PALETTE",
    "Bar",
    "Segment",
    "Series",
    "Threshold",
    "bar_chart",
    "line_chart",
    "nice_ticks",
    "stacked_bar_chart",
    "timeline_chart",
]

PALETTE = ("#2f6fde", "#e07b1a", "#2a9d5c", "#c2410c", "#7c3aed", "#0891b2", "#be185d", "#65a30d")
STATUS_COLORS = {"ok": "#2a9d5c", "warn": "#d4a72c", "alert": "#cf222e"}

X = float | datetime


@dataclass
class Series:
    name: str
    points: list[tuple[X, float | None]]
    color: str | None = None
    dashed: bool = False
    markers: bool = True


@dataclass
class Threshold:
    value: float
    label: str
    color: str = "#cf222e"
    axis: str = "y"  # "y": a horizontal line at y=value; "x": a vertical line at x=value


@dataclass
class Bar:
    label: str
    value: float | None
    color: str | None = None
    note: str = ""


@dataclass
class Segment:
    lane: str
    start: datetime
    end: datetime
    label: str
    color: str | None = None
    note: str = ""


@dataclass
class _Frame:
    """The plot area inside the SVG and the data ranges it maps."""

    width: int
    height: int
    left: int = 52
    right: int = 14
    top: int = 14
    bottom: int = 30
    x0: float = 0.0
    x1: float = 1.0
    y0: float = 0.0
    y1: float = 1.0
    parts: list[str] = field(default_factory=list)

    def px(self, x: float) -> float:
        span = self.x1 - self.x0 or 1.0
        return self.left + (x - self.x0) / span * (self.width - self.left - self.right)

    def py(self, y: float) -> float:
        span = self.y1 - self.y0 or 1.0
        return self.height - self.bottom - (y - self.y0) / span * (self.height - self.top - self.bottom)


def _num(value: X) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10000 or magnitude < 0.001:
        return f"{value:.2g}"
    if magnitude >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        if value >= lo - step * 1e-9:
            ticks.append(round(value, 12))
        value += step
    return ticks


def _time_ticks(lo: float, hi: float, count: int = 5) -> list[tuple[float, str]]:
    span = max(hi - lo, 1.0)
    steps = [60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400, 30 * 86400]
    step = next((s for s in steps if span / s <= count), steps[-1])
    if span < 60:
        step = max(1, int(span / count) or 1)
    first = math.ceil(lo / step) * step
    fmt = "%H:%M:%S" if step < 60 else "%H:%M" if step < 86400 and span < 2 * 86400 else "%m-%d %H:%M"
    if step >= 86400:
        fmt = "%Y-%m-%d"
    out: list[tuple[float, str]] = []
    t = float(first)
    while t <= hi:
        out.append((t, datetime.fromtimestamp(t, UTC).strftime(fmt)))
        t += step
    return out


def _beside(frame: _Frame, x: float, text: str) -> str:
    """x and anchor of a label next to ``x``: to its left when it would run off the right edge."""
    if x + 3 + 6 * len(text) > frame.width - 2:
        return f'x="{x - 3:.1f}" text-anchor="end"'
    return f'x="{x + 3:.1f}"'


def _open(frame: _Frame, label: str, css: str = "chart") -> None:
    frame.parts.append(
        f'<svg class="{css}" viewBox="0 0 {frame.width} {frame.height}" role="img" '
        f'style="max-width:{frame.width}px" '
        f'aria-label="{escape(label)}" preserveAspectRatio="xMidYMid meet" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>'
    )


def _axes(
    frame: _Frame, *, time_x: bool, x_label: str, y_label: str, x_ticks: list[float] | None = None
) -> None:
    p = frame.parts
    bottom = frame.height - frame.bottom
    for tick in nice_ticks(frame.y0, frame.y1):
        y = frame.py(tick)
        p.append(
            f'<line class="grid" x1="{frame.left}" x2="{frame.width - frame.right}" '
            f'y1="{y:.1f}" y2="{y:.1f}"/><text class="tick" x="{frame.left - 4}" y="{y + 3:.1f}" '
            f'text-anchor="end">{_fmt(tick)}</text>'
        )
    if time_x:
        labels = _time_ticks(frame.x0, frame.x1)
    else:
        labels = [(t, _fmt(t)) for t in (x_ticks if x_ticks is not None else nice_ticks(frame.x0, frame.x1))]
    for value, text in labels:
        x = frame.px(value)
        p.append(
            f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}"/>'
            f'<text class="tick" x="{x:.1f}" y="{bottom + 15}" text-anchor="middle">{escape(text)}</text>'
        )
    p.append(
        f'<line class="axis" x1="{frame.left}" x2="{frame.width - frame.right}" y1="{bottom}" y2="{bottom}"/>'
        f'<line class="axis" x1="{frame.left}" x2="{frame.left}" y1="{frame.top}" y2="{bottom}"/>'
    )
    if y_label:
        p.append(
            f'<text class="label" x="10" y="{(frame.top + bottom) / 2:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 10 {(frame.top + bottom) / 2:.1f})">{escape(y_label)}</text>'
        )
    if x_label:
        p.append(
            f'<text class="label" x="{frame.width - frame.right}" y="{frame.height - 2}" '
            f'text-anchor="end">{escape(x_label)}</text>'
        )


def _thresholds(frame: _Frame, thresholds: Sequence[Threshold]) -> None:
    for t in thresholds:
        if t.axis == "x":
            x = frame.px(t.value)
            frame.parts.append(
                f'<g class="threshold" data-value="{t.value}"><line x1="{x:.1f}" x2="{x:.1f}" '
                f'y1="{frame.top}" y2="{frame.height - frame.bottom}" stroke="{t.color}"/>'
                f'<text {_beside(frame, x, t.label)} y="{frame.top + 10}" fill="{t.color}">'
                f"{escape(t.label)}</text></g>"
            )
            continue
        y = frame.py(t.value)
        frame.parts.append(
            f'<g class="threshold" data-value="{t.value}"><line x1="{frame.left}" '
            f'x2="{frame.width - frame.right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{t.color}"/>'
            f'<text x="{frame.width - frame.right - 2}" y="{y - 3:.1f}" text-anchor="end" '
            f'fill="{t.color}">{escape(t.label)}</text></g>'
        )


def _legend(frame: _Frame, names: Sequence[tuple[str, str]]) -> str:
    if len(names) < 2:
        return ""
    items = "".join(
        f'<span class="key"><i style="background:{color}"></i>{escape(name)}</span>' for name, color in names
    )
    return f'<div class="legend">{items}</div>'


def _range(values: Sequence[float], pad: float = 0.06) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    if hi == lo:
        return (lo - 1, hi + 1) if lo == 0 else (lo - abs(lo) * 0.1, hi + abs(hi) * 0.1)
    margin = (hi - lo) * pad
    return lo - margin, hi + margin


def line_chart(
    series: Sequence[Series],
    *,
    label: str,
    thresholds: Sequence[Threshold] = (),
    x_label: str = "",
    y_label: str = "",
    y_range: tuple[float | None, float | None] = (None, None),
    x_range: tuple[float | None, float | None] = (None, None),
    width: int = 640,
    height: int = 240,
    markers: Sequence[tuple[float, float, str]] = (),
    scatter: bool = False,
) -> Markup:
    """Lines (or, with ``scatter``, dots) over time or numbers; ``markers`` are labelled red points."""
    frame = _Frame(width, height)
    points = [(x, y) for s in series for x, y in s.points if y is not None]
    time_x = any(isinstance(x, datetime) for x, _ in points)
    xs = [_num(x) for x, _ in points]
    ys = [float(y) for _, y in points]
    ys += [t.value for t in thresholds if t.axis == "y"] + [m[1] for m in markers]
    xs += [t.value for t in thresholds if t.axis == "x"] + [m[0] for m in markers]
    frame.x0, frame.x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if frame.x1 == frame.x0:
        frame.x0, frame.x1 = frame.x0 - (60 if time_x else 1), frame.x1 + (60 if time_x else 1)
    frame.y0, frame.y1 = _range(ys)
    if x_range[0] is not None:
        frame.x0 = x_range[0]
    if x_range[1] is not None:
        frame.x1 = x_range[1]
    if y_range[0] is not None:
        frame.y0 = y_range[0]
    if y_range[1] is not None:
        frame.y1 = y_range[1]
    _open(frame, label)
    _axes(frame, time_x=time_x, x_label=x_label, y_label=y_label)
    _thresholds(frame, thresholds)
    keys = []
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        keys.append((s.name, color))
        coords = [(frame.px(_num(x)), frame.py(float(y)), x, y) for x, y in s.points if y is not None]
        if not coords:
            continue
        group = [f'<g class="series" data-name="{escape(s.name)}" data-points="{len(coords)}">']
        if not scatter:
            path = " ".join(
                f"{'M' if j == 0 else 'L'}{cx:.1f},{cy:.1f}" for j, (cx, cy, _, _) in enumerate(coords)
            )
            dash = ' stroke-dasharray="5 4"' if s.dashed else ""
            group.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        if scatter or (s.markers and len(coords) <= 60):
            radius = 2 if scatter else 3
            for cx, cy, x, y in coords:
                shown = x.strftime("%Y-%m-%d %H:%M") if isinstance(x, datetime) else _fmt(float(x))
                group.append(
                    f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{radius}" fill="{color}">'
                    f"<title>{escape(s.name)}: {_fmt(float(y))} at {escape(shown)}</title></circle>"
                )
        group.append("</g>")
        frame.parts.append("".join(group))
    for mx, my, text in markers:
        cx, cy = frame.px(mx), frame.py(my)
        frame.parts.append(
            f'<g class="marker"><circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="#cf222e"/>'
            f'<text {_beside(frame, cx + 4, text)} y="{cy - 6:.1f}" fill="#cf222e">{escape(text)}</text></g>'
        )
    frame.parts.append("</svg>")
    return Markup(f'<figure class="fig">{"".join(frame.parts)}{_legend(frame, keys)}</figure>')


def bar_chart(
    bars: Sequence[Bar],
    *,
    label: str,
    thresholds: Sequence[Threshold] = (),
    value_label: str = "",
    width: int = 640,
    bar_height: int = 22,
    x_range: tuple[float | None, float | None] = (None, None),
) -> Markup:
    """Horizontal bars (one per label, long labels fit on a phone), thresholds as vertical lines."""
    left = min(180, 16 + 7 * max((len(b.label) for b in bars), default=4))
    frame = _Frame(width, 24 + bar_height * max(len(bars), 1) + 30, left=left, bottom=30, top=8)
    values = [b.value for b in bars if b.value is not None] + [t.value for t in thresholds]
    lo = min([0.0, *values])
    hi = max([*values, 0.0]) or 1.0
    frame.x0 = x_range[0] if x_range[0] is not None else lo
    frame.x1 = x_range[1] if x_range[1] is not None else hi * 1.08
    frame.y0, frame.y1 = 0.0, float(max(len(bars), 1))
    _open(frame, label)
    p = frame.parts
    bottom = frame.height - frame.bottom
    for tick in nice_ticks(frame.x0, frame.x1):
        x = frame.px(tick)
        p.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top}" y2="{bottom}"/>'
            f'<text class="tick" x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">{_fmt(tick)}</text>'
        )
    p.append(f'<line class="axis" x1="{frame.left}" x2="{frame.left}" y1="{frame.top}" y2="{bottom}"/>')
    if value_label:
        p.append(
            f'<text class="label" x="{width - frame.right}" y="{frame.height - 2}" '
            f'text-anchor="end">{escape(value_label)}</text>'
        )
    for i, b in enumerate(bars):
        y = frame.top + i * bar_height + 3
        color = b.color or PALETTE[0]
        p.append(
            f'<text class="tick" x="{frame.left - 6}" y="{y + bar_height / 2 + 1:.1f}" '
            f'text-anchor="end">{escape(b.label)}</text>'
        )
        if b.value is None:
            continue
        x0, x1 = frame.px(max(frame.x0, 0.0)), frame.px(b.value)
        note = f" ({b.note})" if b.note else ""
        p.append(
            f'<rect class="bar" data-label="{escape(b.label)}" data-value="{b.value}" x="{min(x0, x1):.1f}" '
            f'y="{y:.1f}" width="{max(abs(x1 - x0), 1):.1f}" height="{bar_height - 6}" fill="{color}">'
            f"<title>{escape(b.label)}: {_fmt(b.value)}{escape(note)}</title></rect>"
            f'<text class="tick" x="{max(x0, x1) + 3:.1f}" y="{y + bar_height / 2 + 1:.1f}">'
            f"{_fmt(b.value)}</text>"
        )
    for t in thresholds:
        x = frame.px(t.value)
        p.append(
            f'<g class="threshold" data-value="{t.value}"><line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top}" '
            f'y2="{bottom}" stroke="{t.color}"/><text {_beside(frame, x, t.label)} y="{bottom - 4}" '
            f'fill="{t.color}">{escape(t.label)}</text></g>'
        )
    p.append("</svg>")
    return Markup(f'<figure class="fig">{"".join(p)}</figure>')


def stacked_bar_chart(
    categories: Sequence[str],
    stacks: Sequence[tuple[str, Sequence[float], str]],
    *,
    label: str,
    y_label: str = "",
    width: int = 640,
    height: int = 240,
    notes: Sequence[str] = (),
) -> Markup:
    """Vertical stacked bars, one per category (a batch), one colour per stack (clean, quarantined...)."""
    frame = _Frame(width, height)
    n = max(len(categories), 1)
    totals = [sum(s[1][i] for s in stacks) for i in range(len(categories))]
    frame.x0, frame.x1 = 0.0, float(n)
    frame.y0, frame.y1 = 0.0, (max(totals, default=1.0) or 1.0) * 1.08
    _open(frame, label)
    every = max(1, math.ceil(len(categories) / 8))
    ticks = [i + 0.5 for i in range(0, len(categories), every)]
    _axes(frame, time_x=False, x_label="", y_label=y_label, x_ticks=[])
    p = frame.parts
    bottom = frame.height - frame.bottom
    for t in ticks:
        p.append(
            f'<text class="tick" x="{frame.px(t):.1f}" y="{bottom + 15}" text-anchor="middle">'
            f"{escape(categories[int(t)])}</text>"
        )
    slot = (frame.px(1) - frame.px(0)) * 0.72
    for i, category in enumerate(categories):
        base = 0.0
        x = frame.px(i + 0.5) - slot / 2
        note = f" {notes[i]}" if i < len(notes) and notes[i] else ""
        p.append(f'<g class="stack" data-category="{escape(category)}">')
        for name, values, color in stacks:
            value = float(values[i])
            if value <= 0:
                continue
            y_top, y_bottom = frame.py(base + value), frame.py(base)
            p.append(
                f'<rect class="bar" data-stack="{escape(name)}" data-value="{value:g}" x="{x:.1f}" '
                f'y="{y_top:.1f}" width="{slot:.1f}" height="{max(y_bottom - y_top, 0.5):.1f}" '
                f'fill="{color}">'
                f"<title>{escape(category)}{escape(note)}: {value:g} {escape(name)}</title></rect>"
            )
            base += value
        p.append("</g>")
    p.append("</svg>")
    keys = [(name, color) for name, _, color in stacks]
    return Markup(f'<figure class="fig">{"".join(p)}{_legend(frame, keys)}</figure>')


def timeline_chart(
    segments: Sequence[Segment],
    *,
    label: str,
    events: Sequence[tuple[datetime, str, str]] = (),
    now: datetime | None = None,
    width: int = 960,
) -> Markup:
    """Lanes (champion, challenger) of labelled segments over time, with event ticks under them."""
    lanes = list(dict.fromkeys(s.lane for s in segments)) or ["champion"]
    lane_height = 30
    frame = _Frame(width, 20 + lane_height * len(lanes) + 44, left=84, top=10, bottom=40)
    stamps = (
        [_num(s.start) for s in segments] + [_num(s.end) for s in segments] + [_num(e[0]) for e in events]
    )
    if now is not None:
        stamps.append(_num(now))
    frame.x0, frame.x1 = (min(stamps), max(stamps)) if stamps else (0.0, 1.0)
    if frame.x1 - frame.x0 < 1:
        frame.x1 = frame.x0 + 60
    frame.y0, frame.y1 = 0.0, 1.0
    _open(frame, label, "chart timeline")
    p = frame.parts
    bottom = frame.height - frame.bottom
    for value, text in _time_ticks(frame.x0, frame.x1):
        x = frame.px(value)
        p.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top}" y2="{bottom}"/>'
            f'<text class="tick" x="{x:.1f}" y="{bottom + 28}" text-anchor="middle">{escape(text)}</text>'
        )
    for i, lane in enumerate(lanes):
        y = frame.top + i * lane_height
        p.append(
            f'<text class="tick" x="{frame.left - 6}" y="{y + 18}" text-anchor="end">{escape(lane)}</text>'
        )
    colors: dict[str, str] = {}
    for s in segments:
        color = s.color or colors.setdefault(s.label, PALETTE[len(colors) % len(PALETTE)])
        y = frame.top + lanes.index(s.lane) * lane_height + 4
        x0, x1 = frame.px(_num(s.start)), frame.px(_num(s.end))
        w = max(x1 - x0, 2.0)
        text = (
            f'<text class="seg" x="{x0 + w / 2:.1f}" y="{y + 15}" text-anchor="middle">'
            f"{escape(s.label)}</text>"
            if w > 8 * len(s.label)
            else ""
        )
        p.append(
            f'<g class="segment" data-lane="{escape(s.lane)}" data-label="{escape(s.label)}">'
            f'<rect x="{x0:.1f}" y="{y}" width="{w:.1f}" height="{lane_height - 8}" rx="3" fill="{color}">'
            f"<title>{escape(s.lane)} {escape(s.label)}: {s.start:%Y-%m-%d %H:%M:%S} to "
            f"{s.end:%Y-%m-%d %H:%M:%S}{(' - ' + escape(s.note)) if s.note else ''}</title></rect>{text}</g>"
        )
    for when, kind, text in events:
        x = frame.px(_num(when))
        color = {"rollback": "#cf222e", "promote_refused": "#d4a72c", "retire": "#6b7280"}.get(
            kind, "#334155"
        )
        p.append(
            f'<g class="event" data-action="{escape(kind)}"><path d="M{x:.1f},{bottom - 2} l-5,9 h10 z" '
            f'fill="{color}"><title>{when:%Y-%m-%d %H:%M:%S} {escape(kind)}: {escape(text)}</title>'
            "</path></g>"
        )
    p.append(f'<line class="axis" x1="{frame.left}" x2="{width - frame.right}" y1="{bottom}" y2="{bottom}"/>')
    p.append("</svg>")
    return Markup(f'<figure class="fig">{"".join(p)}</figure>')
