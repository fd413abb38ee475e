"""The report's charts as inline SVG, drawn here (no library, nothing fetched): a timeline
of attempts per node (and per GPU, for attempts that held one), coloured by outcome, and
each drawn attempt's peak against its limit.

SVG is markup, so both show with JavaScript off; every text that comes from a run (task
names, nodes) is escaped. Each bar carries a <title>: hovering it names the attempt.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Sequence
from html import escape

from labrun.units import format_duration, format_size
from labrun.views.digest import Bar

COLOURS = {
    "succeeded": "#3a9a4a",
    "failed": "#d0342c",
    "oom": "#8e44ad",
    "timeout": "#e67e22",
    "no_output": "#a0522d",
    "config_error": "#e84393",
    "killed": "#7f8c8d",
    "lost": "#222222",
    "superseded": "#bdc3c7",
    "running": "#2e86de",
}
WIDTH = 1000
LABEL = 120  # the left margin holding node names
LANE = 5  # pixels per lane of a node
MAX_LANES = 40  # attempts that overlap more than this on one node share the last lane


def _lanes(bars: Sequence[Bar], now: float) -> list[tuple[Bar, int]]:
    """Each bar with a lane, so attempts that overlap in time on one node do not hide each other."""
    ends: list[tuple[float, int]] = []  # (end, lane) of the lanes in use
    free: list[int] = []
    placed = []
    for bar in sorted(bars, key=lambda b: b.start):
        while ends and ends[0][0] <= bar.start:
            heapq.heappush(free, heapq.heappop(ends)[1])
        lane = heapq.heappop(free) if free else min(len(ends), MAX_LANES - 1)
        heapq.heappush(ends, (bar.end if bar.end is not None else now, lane))
        placed.append((bar, lane))
    return placed


def _title(bar: Bar) -> str:
    took = format_duration(None if bar.end is None else bar.end - bar.start)
    memory = f", peak {format_size(bar.peak)} of {format_size(bar.limit)}" if bar.peak is not None else ""
    return escape(f"{bar.task} attempt {bar.n}: {bar.outcome}, {took}{memory}")


def bands(bars: Sequence[Bar]) -> list[tuple[str, list[Bar]]]:
    """(label, bars) per band: one per node, then one per GPU that an attempt held ("gpu1 GPU 0")."""
    by_node: dict[str, list[Bar]] = defaultdict(list)
    by_gpu: dict[tuple[str, int], list[Bar]] = defaultdict(list)
    for bar in bars:
        by_node[bar.node].append(bar)
        for gpu in bar.gpus:
            by_gpu[(bar.node, gpu)].append(bar)
    nodes = [(node, by_node[node]) for node in sorted(by_node)]
    return nodes + [(f"{node} GPU {gpu}", by_gpu[(node, gpu)]) for node, gpu in sorted(by_gpu)]


def timeline(bars: Sequence[Bar], first: float, last: float) -> str:
    """The Gantt chart: one band per node and per GPU held, one lane per overlapping attempt."""
    span = max(last - first, 1e-3)
    scale = (WIDTH - LABEL) / span
    parts, y = [], 0
    for label, band in bands(bars):
        placed = _lanes(band, last)
        lanes = 1 + max(lane for _, lane in placed)
        height = lanes * LANE + 4
        parts.append(f'<text x="2" y="{y + min(height, 14) - 3}" class="n">{escape(label)}</text>')
        parts.append(f'<line x1="{LABEL}" x2="{WIDTH}" y1="{y + height}" y2="{y + height}" class="g"/>')
        for bar, lane in placed:
            x = LABEL + (bar.start - first) * scale
            w = max(((bar.end if bar.end is not None else last) - bar.start) * scale, 1.0)
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 2 + lane * LANE}" width="{w:.1f}" height="{LANE - 1}" '
                f'fill="{COLOURS.get(bar.outcome, "#999")}"><title>{_title(bar)}</title></rect>'
            )
        y += max(height, 16)
    parts += _axis(first, span, y)
    return _svg(parts, y + 16, "timeline of attempts per node")


def _axis(first: float, span: float, y: int) -> list[str]:
    """Ticks under the chart: time since the first attempt started, at 0, 1/4 ... the end."""
    ticks = []
    for i in range(5):
        x = LABEL + i * (WIDTH - LABEL) / 4
        anchor = "end" if i == 4 else "start" if i == 0 else "middle"
        label = format_duration(span * i / 4)
        ticks.append(f'<text x="{x:.1f}" y="{y + 12}" class="n" text-anchor="{anchor}">+{label}</text>')
    return ticks


def memory(bars: Sequence[Bar], first: float, last: float) -> str:
    """Each drawn attempt's peak as a share of its limit over time; the red line is the limit."""
    height = 200
    span = max(last - first, 1e-3)
    top = 1.25  # the chart shows up to 125 % of the limit (an OOM sits at or above 100 %)
    scale_y = (height - 10) / top

    def y_of(share: float) -> float:
        return height - min(share, top) * scale_y

    parts = [
        f'<line x1="{LABEL}" x2="{WIDTH}" y1="{y_of(1):.1f}" y2="{y_of(1):.1f}" stroke="#d0342c"/>',
        f'<text x="2" y="{y_of(1) + 4:.1f}" class="n">limit (100 %)</text>',
        f'<text x="2" y="{y_of(0.5) + 4:.1f}" class="n">50 %</text>',
    ]
    for bar in bars:
        if bar.peak is None or not bar.limit:
            continue
        x = LABEL + (bar.start - first) * (WIDTH - LABEL) / span
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y_of(bar.peak / bar.limit):.1f}" r="2.5" '
            f'fill="{COLOURS.get(bar.outcome, "#999")}"><title>{_title(bar)}</title></circle>'
        )
    return _svg(parts, height, "peak memory against limit per attempt")


def legend() -> str:
    items = "".join(
        f'<span class="k"><i style="background:{colour}"></i>{name}</span>'
        for name, colour in COLOURS.items()
    )
    return f'<p class="legend">{items}</p>'


def _svg(parts: list[str], height: int, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'role="img" aria-label="{label}">' + "".join(parts) + "</svg>"
    )
