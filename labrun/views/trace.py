"""`labrun report --format tsv|json`: one row per attempt, fields like Nextflow's trace.

Rows come from `build.task_views` (two streamed queries merged by task id) and are written
as they come, so a 100,000-task run never sits in memory. Numbers stay machine-readable:
seconds and bytes, times in ISO 8601 with their UTC offset; an empty TSV cell (a JSON null)
is a value not known (still running, or never measured on that runtime).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from labrun.views.model import AttemptView, RunView, TaskView

# The columns, in order; `help` below says what each holds.
FIELDS = (
    "task",
    "item",
    "attempt",
    "node",
    "runtime",
    "outcome",
    "exit",
    "signal",
    "start",
    "end",
    "duration",
    "cpu",
    "peak",
    "limit",
)

FIELD_HELP = {
    "task": "the task's name, e.g. resize[3]",
    "item": "its item, for a fan-out",
    "attempt": "the attempt's number, 1 first",
    "node": "the node it ran on",
    "runtime": "process, cgroup or docker",
    "outcome": "how it ended (succeeded, failed, oom ...), running while it runs",
    "exit": "its exit code",
    "signal": "the signal that ended it, e.g. SIGKILL",
    "start": "when it started (ISO 8601)",
    "end": "when it ended (ISO 8601)",
    "duration": "wall seconds",
    "cpu": "CPU seconds (user + system)",
    "peak": "peak memory, bytes",
    "limit": "memory limit, bytes",
}

_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def stamp(t: float | None) -> str | None:
    """ISO 8601 with the local offset, to the millisecond: unambiguous across time zones."""
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def trace_row(task: TaskView, a: AttemptView) -> dict[str, Any]:
    return {
        "task": task.name,
        "item": task.item,
        "attempt": a.n,
        "node": a.node,
        "runtime": a.runtime.value,
        "outcome": a.outcome.value if a.outcome else "running",
        "exit": a.exit_code,
        "signal": a.signal_name,
        "start": stamp(a.started),
        "end": stamp(a.ended),
        "duration": _seconds(a.duration),
        "cpu": _seconds(a.cpu_seconds),
        "peak": a.peak_memory,
        "limit": a.memory_limit,
    }


def trace_rows(tasks: Iterable[TaskView]) -> Iterator[dict[str, Any]]:
    """One row per attempt, task by task; a task never attempted (skipped) has none."""
    for task in tasks:
        for a in task.attempts:
            yield trace_row(task, a)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return str(value).translate(_TSV_ESCAPES)  # one line per row, whatever an item holds


def write_tsv(rows: Iterable[dict[str, Any]], out: IO[str]) -> None:
    out.write("\t".join(FIELDS) + "\n")
    for row in rows:
        out.write("\t".join(_cell(row[f]) for f in FIELDS) + "\n")


def write_json(run: RunView, rows: Iterable[dict[str, Any]], out: IO[str]) -> None:
    """`{"run": .., "job": .., ..., "attempts": [row, ...]}`, one row per line as it streams."""
    head = {
        "run": run.id,
        "job": run.job,
        "state": run.state.value,
        "created": stamp(run.created),
        "ended": stamp(run.ended),
        "counts": {state.value: n for state, n in run.counts.items()},
    }
    text = json.dumps(head)
    out.write(text[:-1] + ', "attempts": [')
    for i, row in enumerate(rows):
        out.write(("," if i else "") + "\n  " + json.dumps(row))
    out.write("\n]}\n")
