"""What `status`, `runs` and the end of `run` print: tables, JSON, one summary line."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from itertools import groupby, islice
from typing import IO, Any

from labrun.model import Runtime
from labrun.outcome import signal_name
from labrun.rows import AttemptRow, RunRow, TaskRow
from labrun.states import RunState, TaskState
from labrun.store import Store
from labrun.units import format_duration, format_size

SHOW_ALL_UP_TO = 50  # runs this small list every task by default


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


def attempt_json(a: AttemptRow) -> dict[str, Any]:
    return {
        "n": a.n,
        "outcome": a.outcome.value if a.outcome else None,
        "exit_code": a.exit_code,
        "signal": signal_name(a.signal) or None,
        "started": _iso(a.started),
        "ended": _iso(a.ended),
        "node": a.node,
        "runtime": a.runtime.value,
        "mechanism": a.mechanism,
        "memory_limit": a.memory_limit,
        "peak_memory": a.peak_memory,
        "cpu_seconds": a.cpu_seconds,
        "oom_killed": bool(a.oom_kills) or bool(a.oom_killed),  # by either source
        "oom_kills": a.oom_kills,  # the kernel's counter
        "container_oom_killed": a.oom_killed,  # Docker's State.OOMKilled
        "detail": a.detail,
        "note": a.note,
    }


def task_json(t: TaskRow, attempts: list[AttemptRow]) -> dict[str, Any]:
    return {
        "id": t.name,
        "state": t.state.value,
        "item": t.item,
        "reason": t.reason,
        "attempts": [attempt_json(a) for a in attempts],
    }


def _tasks_with_attempts(store: Store, run: RunRow) -> Iterator[tuple[TaskRow, list[AttemptRow]]]:
    """Tasks in order with their attempts, from two streamed queries merged by task id."""
    by_task = groupby(store.run_attempts(run.id), key=lambda a: a.task_id)
    pending = next(by_task, None)
    for task in store.tasks(run.id):
        attempts: list[AttemptRow] = []
        while pending is not None and pending[0] < task.id:
            pending = next(by_task, None)
        if pending is not None and pending[0] == task.id:
            attempts = list(pending[1])
            pending = next(by_task, None)
        yield task, attempts


def run_header_json(store: Store, run: RunRow) -> dict[str, Any]:
    counts = store.counts(run.id)
    return {
        "run": run.id,
        "job": run.job,
        "job_file": run.job_file,
        "state": run.state.value,
        "created": _iso(run.created),
        "ended": _iso(run.ended),
        "counts": {s.value: counts.get(s, 0) for s in TaskState},
    }


def write_status_json(store: Store, run: RunRow, out: IO[str]) -> None:
    """Streams the JSON document so a 100,000-task run never sits in memory at once."""
    header = json.dumps(run_header_json(store, run))
    out.write(header[:-1] + ', "tasks": [')
    for i, (task, attempts) in enumerate(_tasks_with_attempts(store, run)):
        out.write(("," if i else "") + "\n  " + json.dumps(task_json(task, attempts)))
    out.write("\n]}\n")


def _task_line(t: TaskRow, attempts: list[AttemptRow]) -> str:
    last = attempts[-1] if attempts else None
    outcome = last.outcome.value if last and last.outcome else ("running" if last else "-")
    exit_text = "-"
    if last and last.exit_code is not None:
        exit_text = str(last.exit_code)
    elif last and last.signal is not None:
        exit_text = signal_name(last.signal)
    took = format_duration(last.ended - last.started) if last and last.ended else "-"
    peak = format_size(last.peak_memory) if last else "-"
    cpu = f"{last.cpu_seconds:.2f}s" if last and last.cpu_seconds is not None else "-"
    reason = t.reason or "" if t.state is not TaskState.SUCCEEDED else ""
    label = f"0 {t.name}" if t.seq == 0 else t.name  # task 0 (setup) is addressed as 0 too
    return (
        f"{label:<24} {t.state.value:<10} {len(attempts):>3} {outcome:<12} {exit_text:>7} "
        f"{took:>8} {peak:>9} {cpu:>8}  {reason}"
    ).rstrip()


def attempt_lines(attempts: list[AttemptRow]) -> list[str]:
    """One indented line per attempt, where there is more to say than the task line does:
    a retried task, or a runtime that enforces a memory limit."""
    if not attempts or (len(attempts) == 1 and attempts[0].runtime is Runtime.PROCESS):
        return []
    lines = []
    for a in attempts:
        mechanism = a.mechanism if a.mechanism and a.mechanism != a.runtime else ""
        runtime = f"{a.runtime} ({mechanism})" if mechanism else str(a.runtime)
        cpu = f"{a.cpu_seconds:.2f}s" if a.cpu_seconds is not None else "-"
        outcome = a.outcome.value if a.outcome else "running"
        lines.append(
            f"  #{a.n:<3} {runtime:<20} limit {format_size(a.memory_limit):>9}  "
            f"peak {format_size(a.peak_memory):>9}  cpu {cpu:>8}  {outcome}\n"
        )
    return lines


HEADER = (
    f"{'TASK':<24} {'STATE':<10} {'TRY':>3} {'LAST OUTCOME':<12} {'EXIT':>7} {'TOOK':>8} "
    f"{'PEAK MEM':>9} {'CPU':>8}  REASON"
)


def write_status_table(store: Store, run: RunRow, out: IO[str], show_all: bool) -> None:
    counts = store.counts(run.id)
    total = sum(counts.values())
    out.write(f"run {run.id} of job {run.job} ({run.job_file}): {run.state.value}\n")
    out.write("  " + ", ".join(f"{n} {s.value}" for s, n in counts.items() if n) + f" ({total} tasks)\n")
    show_every = show_all or total <= SHOW_ALL_UP_TO
    lines = 0
    for task, attempts in _tasks_with_attempts(store, run) if show_every else _not_succeeded(store, run):
        if show_every or task.state is not TaskState.SUCCEEDED:
            if lines == 0:
                out.write(HEADER + "\n")
            out.write(_task_line(task, attempts) + "\n")
            out.writelines(attempt_lines(attempts))
            lines += 1
    if not show_every:
        out.write(
            f"({counts.get(TaskState.SUCCEEDED, 0)} succeeded tasks not shown: --all lists every task)\n"
        )


def _not_succeeded(store: Store, run: RunRow) -> Iterator[tuple[TaskRow, list[AttemptRow]]]:
    """Only the tasks a summary lists, by index: not every row of a 100,000-task run."""
    others = [s for s in TaskState if s is not TaskState.SUCCEEDED]
    for task in store.tasks(run.id, others):
        yield task, store.attempts(task.id)


def summary_line(store: Store, run: RunRow, state: RunState) -> str:
    counts = store.counts(run.id)
    total = sum(counts.values())
    took = format_duration((run.ended or time.time()) - run.created)
    parts = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
    line = f"labrun: job {run.job} run {run.id} {state.value} in {took}: {parts} of {total} tasks"
    if state is not RunState.SUCCEEDED:
        failed = list(islice(store.tasks(run.id, [TaskState.FAILED]), 3))
        if failed:
            line += "; " + "; ".join(f"{t.name}: {t.reason}" for t in failed)
        line += f" (details: labrun status {run.id})"
    return line


def write_runs_table(runs: list[RunRow], store: Store, out: IO[str]) -> None:
    out.write(f"{'RUN':>5} {'JOB':<20} {'STATE':<12} {'STARTED':<19} {'TOOK':>8}  TASKS\n")
    for run in runs:
        counts = store.counts(run.id)
        took = format_duration(run.ended - run.created) if run.ended else "-"
        parts = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
        out.write(
            f"{run.id:>5} {run.job:<20} {run.state.value:<12} {_iso(run.created) or '':<19} "
            f"{took:>8}  {parts}\n"
        )
