"""`labrun report`'s HTML: one self-contained file, written as it is made.

Everything is inline (CSS, the few lines of JavaScript, the SVG charts) and a Content
Security Policy forbids any fetch, so the file opens from disk anywhere, offline. The key
facts are plain HTML tables and lists, readable with JavaScript off; the script only
filters the task table. Charts: the timeline per node and GPU, peaks against limits, the
memory over time of OOM-killed and failed attempts, the dependency graph when small.
Every text that comes from a run is escaped: task names, items, reasons and stderr lines
are the user's and may hold markup.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import IO

from labrun.diagnose import Diagnosis
from labrun.memseries import decode
from labrun.units import format_duration, format_size
from labrun.views import depgraph, series_svg, svg
from labrun.views.digest import CHARTED, LISTED, Digest, Suggestion, outcome_of
from labrun.views.model import RunView, TaskView

EXAMPLES = 3  # tasks of a cause shown with their evidence; the others are named
NAMED = 200  # tasks of a cause named before "and N more" (the table lists every one)


@dataclass(frozen=True)
class Explained:
    task: TaskView
    diagnosis: Diagnosis


@dataclass(frozen=True)
class CauseGroup:
    label: str  # "resource exhaustion"
    tasks: Sequence[Explained]


@dataclass(frozen=True)
class ReportPage:
    run: RunView
    digest: Digest
    groups: Sequence[CauseGroup]  # the largest first
    root: Explained | None  # the first task that failed on its own (not for a dependency)
    trace_command: str  # how to get every attempt, e.g. "labrun report 7 --format tsv"
    series: Mapping[int, str] = field(default_factory=dict)  # attempt id -> its encoded memory series
    upstream: Mapping[str, Sequence[str]] | None = None  # spec -> the specs it waits for (None: unknown)
    head_extra: str = ""  # more in <head> (the dashboard's refresh while the run runs)
    live: str = ""  # HTML after the header (the dashboard's links and what runs now)
    now: float | None = None  # when it was made: where running attempts' bars end


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.4em}h2{font-size:1.15em;border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left;
vertical-align:top}th{background:#f4f4f4}.num{text-align:right}pre{background:#f7f7f7;padding:6px;
white-space:pre-wrap;margin:4px 0}.legend .k{margin-right:12px}.legend i{display:inline-block;
width:10px;height:10px;margin-right:4px}.n{font-size:11px}.g{stroke:#eee}.bad{color:#b0201a}
.cause{border-left:4px solid #d0342c;padding-left:10px;margin:10px 0}
svg{max-width:100%}figure.series{display:inline-block;margin:6px 12px 6px 0;vertical-align:top}
figcaption{font-size:12px;max-width:480px}
"""

SCRIPT = """
document.getElementById('filter').hidden = false;
const q = document.getElementById('q'), only = document.getElementById('only');
function apply() {
  const text = q.value.toLowerCase();
  for (const row of document.querySelectorAll('#tasks tbody tr')) {
    const hit = row.textContent.toLowerCase().includes(text) && (!only.checked || row.dataset.p);
    row.hidden = !hit;
  }
}
q.addEventListener('input', apply); only.addEventListener('change', apply);
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(t))


def write_html(page: ReportPage, out: IO[str]) -> None:
    run = page.run
    title = escape(f"labrun report: {run.job}, run {run.id}")
    out.write(
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{title}</title><style>{CSS}</style>{page.head_extra}</head><body>\n<h1>{title}</h1>\n"
    )
    out.write(_header(page))
    out.write(page.live)
    out.write(_why(page))
    out.write(_timeline(page.digest, page.now))
    out.write(_memory(page.digest))
    out.write(_series(page))
    out.write(_graph(page))
    out.write(_suggestions(page.digest.suggestions()))
    _tasks(page, out)
    out.write(f"<script>{SCRIPT}</script>\n</body></html>\n")


def _header(page: ReportPage) -> str:
    run, d = page.run, page.digest
    took = None if run.ended is None else run.ended - run.created
    facts = [
        ("job", f"{run.job} ({run.job_file})"),
        ("run", str(run.id)),
        ("state", run.state.value),
        ("started", _when(run.created)),
        ("ended", _when(run.ended)),
        ("took", format_duration(took)),
        ("host", run.host or "-"),
    ]
    rows = "".join(f"<tr><th>{k}<td>{escape(v)}" for k, v in facts)
    states = "".join(f"<tr><td>{s.value}<td class=num>{n}" for s, n in run.counts.items() if n)
    outcomes = "".join(f"<tr><td>{o}<td class=num>{n}" for o, n in d.outcomes.most_common())
    parts = [
        f'<table id="facts">{rows}</table>',
        f'<h2>Tasks: {run.total}</h2><table id="states"><tr><th>state<th>tasks{states}</table>',
        f'<h2>Attempts: {d.attempts}</h2><table id="outcomes"><tr><th>outcome<th>attempts{outcomes}</table>',
    ]
    if page.root is not None:
        parts.append("<h2>First root cause</h2>" + _explained(page.root))
    return "\n".join(parts) + "\n"


def _label(task: TaskView) -> str:
    name = escape(task.label)
    return f"{name} <small>({escape(task.item)})</small>" if task.item is not None else name


def _explained(e: Explained) -> str:
    d = e.diagnosis
    evidence = escape("\n".join(d.evidence))
    return (
        f'<div class="cause"><p><b>{_label(e.task)}</b>: {escape(d.cause.label)}: {escape(d.title)}</p>'
        f"<pre>{evidence}</pre><p>next step: {escape(d.next_step)}</p></div>"
    )


def _why(page: ReportPage) -> str:
    if not page.groups:
        return '<h2 id="why">Why</h2><p>Every task succeeded.</p>\n'
    parts = ['<h2 id="why">Why, grouped by cause</h2>']
    for group in page.groups:
        parts.append(f"<h3>{escape(group.label)}: {len(group.tasks)} task(s)</h3>")
        parts += [_explained(e) for e in group.tasks[:EXAMPLES]]
        rest = group.tasks[EXAMPLES:]
        if rest:
            names = ", ".join(escape(e.task.label) for e in rest[:NAMED])
            more = f" and {len(rest) - NAMED} more (all in the task table)" if len(rest) > NAMED else ""
            parts.append(f"<p>Also: {names}{more}</p>")
    if page.digest.unfinished_unlisted:
        parts.append(
            f"<p>{page.digest.unfinished_unlisted} more tasks did not finish (skipped, cancelled or "
            "waiting); they are counted above and not explained one by one.</p>"
        )
    return "\n".join(parts) + "\n"


def _sampled(d: Digest) -> str:
    if not d.undrawn:
        return ""
    return (
        f"<p>Every attempt that did not succeed is drawn; of those that succeeded, 1 in {d.stride} "
        f"({d.undrawn} not drawn).</p>"
    )


def _timeline(d: Digest, now: float | None) -> str:
    if d.first is None or d.last is None:
        return "<h2>Timeline</h2><p>No attempt has started.</p>\n"
    # attempts still running reach to the moment the page was made
    last = max(d.last, now) if now is not None and d.outcomes["running"] else d.last
    return (
        f"<h2>Timeline of attempts per node</h2>{svg.legend()}{_sampled(d)}"
        f'<div id="timeline">{svg.timeline(d.bars, d.first, last)}</div>\n'
    )


def _memory(d: Digest) -> str:
    if d.first is None or d.last is None or not any(b.peak for b in d.bars):
        return "<h2>Memory</h2><p>No peak memory was measured (none on this runtime, or no attempt).</p>\n"
    return (
        "<h2>Memory: peak against limit, per attempt</h2>"
        f'<div id="memory">{svg.memory(d.bars, d.first, d.last)}</div>\n'
    )


def _series(page: ReportPage) -> str:
    charted = page.digest.charted
    if not charted:
        return ""
    figures = "".join(series_svg.figure(c, decode(page.series.get(c.attempt_id))) for c in charted)
    more = f" (the first {CHARTED})" if len(charted) == CHARTED else ""
    return (
        f"<h2>Memory over time: attempts OOM-killed, failed or timed out{more}</h2>"
        f'<div id="series">{figures}</div>\n'
    )


def _graph(page: ReportPage) -> str:
    upstream = page.upstream
    if not upstream or not any(upstream.values()):
        return ""  # one task name, or no dependencies: nothing to draw
    if not depgraph.small(upstream):
        return (
            f"<h2>Dependencies</h2><p>{len(upstream)} task names: too many to draw (the graph is drawn "
            f"up to {depgraph.MAX_SPECS} names and {depgraph.MAX_EDGES} dependencies).</p>\n"
        )
    states = {spec: stats.states for spec, stats in page.digest.specs.items()}
    return f'<h2>Dependencies</h2><div id="graph">{depgraph.graph(upstream, states)}</div>\n'


def _suggestion_row(s: Suggestion) -> str:
    cells = [
        escape(s.spec),
        str(s.attempts),
        format_size(s.memory_now),
        format_size(s.peak_p95),
        format_size(s.memory),
        format_duration(s.seconds_p95),
        format_duration(s.timeout),
        str(s.ooms),
        str(s.timeouts),
    ]
    return "<tr>" + "".join(f"<td>{c}" for c in cells)


def _suggestions(suggestions: Sequence[Suggestion]) -> str:
    head = (
        "<tr><th>task<th>attempts<th>memory now<th>peak p95<th>suggested memory"
        "<th>time p95 (succeeded)<th>suggested timeout<th>OOM<th>timeouts"
    )
    rows = "".join(_suggestion_row(s) for s in suggestions)
    return (
        "<h2>Suggested requests per task</h2><p>Memory: the 95th percentile of the measured peaks "
        "plus 20 % (at least 20 % over the limit an OOM-killed attempt hit); timeout: the 95th "
        "percentile of the succeeded attempts' durations plus 50 %, in whole minutes.</p>"
        f'<table id="suggestions">{head}{rows}</table>\n'
    )


def _task_row(t: TaskView, problem: bool) -> str:
    last = t.last
    outcomes = " → ".join(outcome_of(a) for a in t.attempts) or "-"
    cells = [
        _label(t),
        t.state.value,
        outcomes,
        "-" if last is None or last.exit_code is None else str(last.exit_code),
        "-" if last is None else escape(last.node),
        format_duration(None if last is None else last.duration),
        "-" if last is None else f"{format_size(last.peak_memory)} / {format_size(last.memory_limit)}",
        escape(t.reason or ""),
    ]
    mark = ' data-p="1" class="bad"' if problem else ""
    return f"<tr{mark}>" + "".join(f"<td>{c}" for c in cells) + "\n"


def _tasks(page: ReportPage, out: IO[str]) -> None:
    d = page.digest
    out.write(
        '<h2>Tasks</h2><p id="filter" hidden><input id="q" placeholder="filter: name, item, state…">'
        ' <label><input type="checkbox" id="only"> only tasks that did not succeed</label></p>'
        '<table id="tasks"><thead><tr><th>task<th>state<th>attempts<th>exit<th>node<th>took'
        "<th>peak / limit<th>reason</thead><tbody>\n"
    )
    for t in d.problems:
        out.write(_task_row(t, True))
    for t in d.listed:
        out.write(_task_row(t, False))
    out.write("</tbody></table>\n")
    if d.unlisted or d.unfinished_unlisted:
        out.write(
            f"<p>Every failed task is listed, and the first {LISTED} that did not finish and that "
            f"succeeded; not listed: {d.unfinished_unlisted} more that did not finish, {d.unlisted} "
            f"more that succeeded. Every attempt: <code>{escape(page.trace_command)}</code></p>\n"
        )
