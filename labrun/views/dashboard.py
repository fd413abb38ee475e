"""The pages `labrun serve` adds to the report: the runs list, what runs now, one attempt.

Pure rendering: the server (labrun/serve.py) reads the store and the log tails and hands
them here. Pages carry the report's Content-Security-Policy (nothing fetched, no script
but the report's own) and refresh themselves while a run runs (a meta refresh: it works
with JavaScript off). Every text from a run is escaped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from labrun.states import RunState
from labrun.units import format_duration
from labrun.views import series_svg
from labrun.views.digest import Charted
from labrun.views.html import CSP, CSS
from labrun.views.model import AttemptView, RunView, TaskView

REFRESH = 5  # seconds between reloads of a page that shows something running


@dataclass(frozen=True)
class Running:
    """An attempt that runs now, with the ends of its logs (masked, already read)."""

    task: TaskView
    attempt: AttemptView
    stdout: str
    stderr: str


def refresh_tag(live: bool) -> str:
    return f'<meta http-equiv="refresh" content="{REFRESH}">' if live else ""


def page(title: str, body: str, live: bool = False) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">{refresh_tag(live)}'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def runs_page(runs: Sequence[RunView], state_dir: str, now: float) -> str:
    live = any(r.state is RunState.RUNNING for r in runs)
    rows = []
    for r in runs:
        took = (r.ended if r.ended is not None else now) - r.created
        rows.append(
            f'<tr><td><a href="/runs/{r.id}">{r.id}</a><td>{escape(r.job)}<td>{r.state.value}'
            f"<td>{_when(r.created)}<td>{format_duration(took)}<td>{escape(r.count_text())}"
        )
    head = '<table id="runs"><tr><th>run<th>job<th>state<th>started<th>took<th>tasks'
    none = "<p>No runs yet: start one with labrun run JOB.toml.</p>"
    table = head + "".join(rows) + "</table>" if rows else none
    note = f"<p>Reloads every {REFRESH} s while a run runs.</p>" if live else ""
    body = f"<h1>labrun: runs</h1><p>State directory {escape(state_dir)}; read-only.</p>{note}{table}"
    return page("labrun: runs", body, live)


def live_section(run: RunView, running: Sequence[Running], more: int) -> str:
    """Links back, and while the run runs: each running attempt with its log tails."""
    parts = ['<p><a href="/">all runs</a></p>']
    if run.state is not RunState.RUNNING:
        return "".join(parts) + "\n"
    parts.append(f'<h2 id="live">Running now (this page reloads every {REFRESH} s)</h2>')
    if not running:
        parts.append("<p>No attempt is running at this moment.</p>")
    for r in running:
        a = r.attempt
        since = format_duration(time.time() - a.started)
        out = escape(r.stdout) or "(no output yet)"
        err = escape(r.stderr) or "(nothing on stderr)"
        parts.append(
            f'<div class="running"><p><b>{escape(r.task.label)}</b> attempt {a.n} on {escape(a.node)}, '
            f"running for {since}</p><pre>{out}</pre><pre>{err}</pre></div>"
        )
    if more:
        parts.append(f"<p>{more} more attempts are running (all in the task table).</p>")
    return "".join(parts) + "\n"


def memory_links(run_id: int, tasks: Sequence[TaskView]) -> str:
    """Links to the memory over time of ended attempts the report does not draw (on demand)."""
    links = [
        f'<a href="/runs/{run_id}/attempts/{a.attempt_id}">{escape(t.label)} #{a.n}</a>'
        for t in tasks
        for a in t.attempts
        if a.attempt_id is not None and a.outcome is not None
    ]
    if not links:
        return ""
    return f'<p id="memory-links">Memory over time of an attempt: {", ".join(links)}</p>\n'


def attempt_page(run: RunView, chart: Charted, points: Sequence[tuple[float, int]]) -> str:
    """One ended attempt's memory over time, for any attempt (the report draws failed ones)."""
    body = (
        f'<p><a href="/">all runs</a> · <a href="/runs/{run.id}">run {run.id}</a></p>'
        f"<h1>{escape(chart.task)} attempt {chart.n}: memory over time</h1>"
        f'<div id="series">{series_svg.figure(chart, points)}</div>'
    )
    return page(f"labrun: {chart.task} attempt {chart.n}", body)
