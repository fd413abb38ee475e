"""`status --json` and `status --events --json`: JSON documents from view models, streamed
so a 100,000-task run never sits in memory at once."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterable
from typing import IO, Any

from labrun.views.model import AttemptView, EventsView, EventView, RunView, StatusView, TaskView


def iso(t: float | None) -> str | None:
    """Local time to the second, as `status --json` has always written it."""
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


def attempt_json(a: AttemptView) -> dict[str, Any]:
    return {
        "n": a.n,
        "outcome": a.outcome.value if a.outcome else None,
        "exit_code": a.exit_code,
        "signal": a.signal_name,
        "started": iso(a.started),
        "ended": iso(a.ended),
        "seconds": a.duration,
        "node": a.node,
        "runtime": a.runtime.value,
        "mechanism": a.mechanism,
        "memory_limit": a.memory_limit,
        "peak_memory": a.peak_memory,
        "cpu_seconds": a.cpu_seconds,
        "oom_killed": a.oom_killed,  # by either source
        "oom_kills": a.oom_kills,  # the kernel's counter
        "container_oom_killed": a.container_oom_killed,  # Docker's State.OOMKilled
        "missing_outputs": list(a.missing_outputs),
        "detail": a.detail,
        "note": a.note,
    }


def task_json(t: TaskView) -> dict[str, Any]:
    return {
        "id": t.name,
        "spec": t.spec,
        "state": t.state.value,
        "item": t.item,
        "reason": t.reason,
        "failures": t.failures,
        "attempts": [attempt_json(a) for a in t.attempts],
    }


def run_json(run: RunView) -> dict[str, Any]:
    return {
        "run": run.id,
        "job": run.job,
        "job_file": run.job_file,
        "state": run.state.value,
        "created": iso(run.created),
        "ended": iso(run.ended),
        "counts": {state.value: n for state, n in run.counts.items()},
        "rerun_of": run.rerun_of,
    }


def event_json(e: EventView) -> dict[str, Any]:
    moment = datetime.datetime.fromtimestamp(e.time).astimezone()
    return {
        "time": moment.isoformat(timespec="milliseconds"),
        "task": e.task,
        "attempt": e.attempt,
        "subject": e.subject,
        "from": e.from_state,
        "to": e.to_state,
        "cause": e.cause,
    }


def _write_list(head: dict[str, Any], key: str, items: Iterable[dict[str, Any]], out: IO[str]) -> None:
    """`head` with one more key holding a list, written one item per line as it streams."""
    text = json.dumps(head)
    out.write(text[:-1] + f', "{key}": [')
    for i, item in enumerate(items):
        out.write(("," if i else "") + "\n  " + json.dumps(item))
    out.write("\n]}\n")


def write_status_json(view: StatusView, out: IO[str]) -> None:
    _write_list(run_json(view.run), "tasks", (task_json(t) for t in view.tasks), out)


def write_events_json(view: EventsView, out: IO[str]) -> None:
    head = {**run_json(view.run), "task": view.task}
    _write_list(head, "events", (event_json(e) for e in view.events), out)
