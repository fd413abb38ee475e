"""The job's dependency graph as inline SVG, when it is small enough to read.

One box per task name (spec) with its tasks' states, an arrow from each upstream to what
waits for it (task 0, `setup`, is upstream of every other spec). Boxes are placed in
columns by their longest path from a spec with no upstream, so every arrow points right.
"Small": at most `MAX_SPECS` task names and `MAX_EDGES` arrows; past that a picture is a
hairball, and the report says so instead. Every name is escaped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from html import escape

from labrun.states import TaskState
from labrun.views.svg import COLOURS

MAX_SPECS = 30
MAX_EDGES = 60
BOX_W, BOX_H, GAP_X, GAP_Y = 170, 36, 60, 14
NAME_CHARS = 22
_ARROW = 'fill="none" stroke="#888" marker-end="url(#arrow)"'

# The colour of a box: its worst state wins.
_WORST = (
    (TaskState.FAILED, COLOURS["failed"]),
    (TaskState.RUNNING, COLOURS["running"]),
    (TaskState.READY, "#9ec5ef"),
    (TaskState.WAITING, "#dddddd"),
    (TaskState.CANCELLED, COLOURS["killed"]),
    (TaskState.SKIPPED, COLOURS["superseded"]),
    (TaskState.SUCCEEDED, COLOURS["succeeded"]),
)


def small(upstream: Mapping[str, Sequence[str]]) -> bool:
    edges = sum(len(ups) for ups in upstream.values())
    return len(upstream) <= MAX_SPECS and edges <= MAX_EDGES


def columns(upstream: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each spec's column: 0 without upstream, else one past its furthest upstream."""
    found: dict[str, int] = {}

    def column(name: str) -> int:
        if name not in found:
            ups = [u for u in upstream.get(name, ()) if u in upstream]
            found[name] = 1 + max(column(u) for u in ups) if ups else 0
        return found[name]

    for name in upstream:  # acyclic: the job file was refused otherwise; depth <= MAX_SPECS
        column(name)
    return found


def _summary(states: Counter[TaskState]) -> tuple[str, str]:
    """(fill colour, "3 succeeded, 1 failed") of a spec's tasks."""
    colour = next((c for state, c in _WORST if states.get(state)), "#dddddd")
    text = ", ".join(f"{n} {state.value}" for state, _ in _WORST if (n := states.get(state, 0)))
    return colour, text or "no task yet"


def _edge(start: tuple[float, float], end: tuple[float, float], skips: bool) -> str:
    """An arrow from a box's right side to another's left; one that skips a column bends
    below the boxes between, so it is not hidden behind them."""
    x1, y1 = start[0] + BOX_W, start[1] + BOX_H / 2
    x2, y2 = end[0], end[1] + BOX_H / 2
    if not skips:
        return f'<path d="M{x1:.0f},{y1:.0f}L{x2:.0f},{y2:.0f}" {_ARROW}/>'
    low = max(y1, y2) + BOX_H  # the curve reaches about 3/4 of the way: just under the boxes
    bend = f"C{x1 + GAP_X:.0f},{low:.0f} {x2 - GAP_X:.0f},{low:.0f} {x2:.0f},{y2:.0f}"
    return f'<path d="M{x1:.0f},{y1:.0f}{bend}" {_ARROW}/>'


def graph(upstream: Mapping[str, Sequence[str]], states: Mapping[str, Counter[TaskState]]) -> str:
    """The SVG; call only when `small(upstream)`."""
    cols = columns(upstream)
    rows: dict[int, int] = Counter()
    where: dict[str, tuple[float, float]] = {}
    for name in upstream:  # the job file's order within a column
        col = cols[name]
        where[name] = (4 + col * (BOX_W + GAP_X), 4 + rows[col] * (BOX_H + GAP_Y))
        rows[col] += 1
    parts = [
        '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="8" markerHeight="8" '
        'orient="auto"><path d="M0,0L8,4L0,8z" fill="#888"/></marker></defs>'
    ]
    for name, ups in upstream.items():
        x2, y2 = where[name]
        for up in ups:
            if up in where:
                parts.append(_edge(where[up], (x2, y2), cols[name] - cols[up] > 1))
    for name, (x, y) in where.items():
        colour, text = _summary(states.get(name, Counter()))
        shown = name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"
        parts.append(
            f'<g class="spec"><title>{escape(name)}: {escape(text)}</title>'
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{BOX_W}" height="{BOX_H}" rx="4" fill="#fff" '
            f'stroke="{colour}" stroke-width="3"/>'
            f'<text x="{x + 8:.0f}" y="{y + 15:.0f}">{escape(shown)}</text>'
            f'<text x="{x + 8:.0f}" y="{y + 29:.0f}" class="n">{escape(text)}</text></g>'
        )
    width = 8 + (1 + max(cols.values(), default=0)) * (BOX_W + GAP_X)
    height = 8 + max(rows.values(), default=1) * (BOX_H + GAP_Y) + BOX_H // 2  # room for bends
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        'role="img" aria-label="dependency graph of the task names">' + "".join(parts) + "</svg>"
    )
