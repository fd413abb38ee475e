"""One attempt's memory over time as a small inline SVG, against its limit.

Drawn from the series the executor sampled (labrun.memseries: at most 200 points, each
the largest size in its time bucket, so a spike is never smoothed away). The caption is
plain HTML with the facts (outcome, peak, limit, how many samples, how far apart), so
the chart only adds the shape. Every text from a run is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from labrun.units import format_duration, format_size
from labrun.views.digest import Charted

WIDTH, HEIGHT = 480, 150
LEFT, BOTTOM, TOP = 64, 18, 8  # margins: size labels on the left, time under


def figure(c: Charted, points: Sequence[tuple[float, int]]) -> str:
    """The attempt's figure: caption, and the chart when it was sampled."""
    peak = f"peak {format_size(c.peak)}" if c.peak is not None else "peak not measured"
    limit = f"limit {format_size(c.limit)}" if c.limit else "no limit"
    took = format_duration(None if c.ended is None else c.ended - c.started)
    head = f"{c.task} attempt {c.n}: {c.outcome.value} after {took}, {peak}, {limit}"
    if not points:
        note = "not sampled: it ended within its first second, or its runtime gives no source"
        return f'<figure class="series"><figcaption>{escape(head)}; {note}</figcaption></figure>'
    every = points[1][0] - points[0][0] if len(points) > 1 else None
    samples = f"{len(points)} samples" + (f", one per {format_duration(every)}" if every else "")
    return (
        f'<figure class="series"><figcaption>{escape(head)}; {samples}</figcaption>'
        f"{chart(c, points)}</figure>"
    )


def chart(c: Charted, points: Sequence[tuple[float, int]]) -> str:
    # a point sits at its bucket's middle, which may fall past the end: it is drawn at the end
    took = (c.ended - c.started) if c.ended is not None else points[-1][0]
    span = max(took, 1.0)
    points = [(min(t, span), size) for t, size in points]
    top = max(c.limit or 0, c.peak or 0, max(size for _, size in points)) * 1.1
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - BOTTOM - TOP

    def x_of(t: float) -> float:
        return LEFT + t / span * plot_w

    def y_of(size: float) -> float:
        return TOP + plot_h - size / top * plot_h

    line = " ".join(f"{x_of(t):.1f},{y_of(size):.1f}" for t, size in points)
    parts = [
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}" class="g"/>',
        f'<line x1="{LEFT}" x2="{WIDTH - 4}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" class="g"/>',
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" class="n" text-anchor="end">0</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 4}" class="n">start</text>',
        f'<text x="{WIDTH - 4}" y="{HEIGHT - 4}" class="n" text-anchor="end">+{format_duration(span)}</text>',
    ]
    if c.limit:
        y = y_of(c.limit)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - 4}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0342c" '
            'stroke-dasharray="4 3" class="limit"/>'
        )
        parts.append(
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" class="n" text-anchor="end">{format_size(c.limit)}</text>'
        )
    title = escape(f"{c.task} attempt {c.n}: memory over time")
    parts.append(
        f'<polyline points="{line}" fill="none" stroke="#2e86de" stroke-width="1.5" class="used">'
        f"<title>{title}</title></polyline>"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'role="img" aria-label="{title}">' + "".join(parts) + "</svg>"
    )
