"""What `status`, `status --events`, `runs` and the end of `run` print, from view models.

`columns` is the terminal's width (None: not a terminal, where names are cut only past
200 characters): name columns are as wide as their data and fit it (`labrun.fit`)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import IO

from labrun.fit import column_width, item_text, plural, shorten_middle, task_with_item
from labrun.model import Runtime
from labrun.states import Outcome, RunState, TaskState
from labrun.units import format_duration, format_size
from labrun.views.model import AttemptView, EventsView, EventView, RunView, StatusView, TaskView

HEADER_REST = (
    f" {'STATE':<10} {'TRY':>3} {'LAST OUTCOME':<12} {'EXIT':>7} {'TOOK':>8} {'PEAK MEM':>9} {'CPU':>8}  "
)
REASON_ROOM = 16  # on a terminal, what a name column leaves for the reason (or the task counts)
EVENTS_HEADER = (
    f"{'TIME':<23} {'+SINCE START':>12}  {'TASK':<24} {'TRY':>3}  {'OF':<7} {'FROM -> TO':<24} CAUSE"
)


def local_time(t: float, digits: int = 0) -> str:
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    return f"{text}.{int(t % 1 * 1000):03d}" if digits else text


def _exit_text(last: AttemptView | None) -> str:
    if last and last.exit_code is not None:
        return str(last.exit_code)
    if last and last.signal is not None:
        return last.signal_name or "-"
    return "-"


def task_line(t: TaskView, width: int = 24, columns: int | None = None) -> str:
    """One task's row; its item (when it says more than the index) leads the reason,
    shortened to what a terminal `columns` wide leaves."""
    last = t.last
    outcome = last.outcome.value if last and last.outcome else ("running" if last else "-")
    took = format_duration(last.duration) if last and last.duration is not None else "-"
    peak = format_size(last.peak_memory) if last else "-"
    cpu = f"{last.cpu_seconds:.2f}s" if last and last.cpu_seconds is not None else "-"
    reason = t.reason or "" if t.state is not TaskState.SUCCEEDED else ""
    line = (
        f"{shorten_middle(t.label, width):<{width}} {t.state.value:<10} {len(t.attempts):>3} {outcome:<12} "
        f"{_exit_text(last):>7} {took:>8} {peak:>9} {cpu:>8}  "
    )
    if t.item and t.item != t.name.rpartition("[")[2].rstrip("]"):
        room = 40 if columns is None else columns - len(line) - 2
        if room >= 8:
            reason = f"({item_text(t.item, room)}) {reason}"
    return (line + reason).rstrip()


def attempt_lines(attempts: tuple[AttemptView, ...]) -> list[str]:
    """One indented line per attempt, where there is more to say than the task line does:
    a retried task, or a runtime that enforces a memory limit."""
    if not attempts or (len(attempts) == 1 and attempts[0].runtime is Runtime.PROCESS):
        return []
    lines = []
    for a in attempts:
        mechanism = a.mechanism if a.mechanism and a.mechanism != a.runtime else ""
        runtime = f"{a.runtime} ({mechanism})" if mechanism else str(a.runtime)
        cpu = f"{a.cpu_seconds:.2f}s" if a.cpu_seconds is not None else "-"
        outcome = (a.outcome.value if a.outcome else "running") + _race_label(a, attempts)
        lines.append(
            f"  #{a.n:<3} {runtime:<20} limit {format_size(a.memory_limit):>9}  "
            f"peak {format_size(a.peak_memory):>9}  cpu {cpu:>8}  {outcome}\n"
        )
    return lines


def _race_label(a: AttemptView, attempts: tuple[AttemptView, ...]) -> str:
    """A speculative attempt started while an earlier one still ran: one that is running,
    or ended superseded or succeeded (a retry starts only after a failure); the winner
    beat another attempt."""
    raced = any(b.outcome is Outcome.SUPERSEDED for b in attempts)
    winner = " (winner)" if raced and a.outcome is Outcome.SUCCEEDED else ""
    overlapped = (None, Outcome.SUPERSEDED, Outcome.SUCCEEDED)
    if any(b.n < a.n and (b.ended is None or b.outcome in overlapped) for b in attempts):
        return " (speculative copy)" + winner
    return winner


def run_heading(run: RunView) -> str:
    rerun = f" (reruns what did not succeed in run {run.rerun_of})" if run.rerun_of else ""
    gone = (
        f"  its runner stopped before the run ended; `labrun run {run.job_file} --resume` finishes it\n"
        if run.state is RunState.INTERRUPTED
        else ""
    )
    return (
        f"run {run.id} of job {run.job} ({run.job_file}): {run.state.value}{rerun}\n"
        f"{gone}  {run.count_text()} ({run.total} tasks)\n"
    )


def _name_width(longest: int, header: str, rest: int, columns: int | None) -> int:
    return column_width(longest, header, rest, columns, 200 if columns is None else 60)


def write_status_table(view: StatusView, out: IO[str], columns: int | None = None) -> None:
    out.write(run_heading(view.run))
    width = _name_width(view.longest, "TASK", len(HEADER_REST) + REASON_ROOM, columns)
    if view.learned:
        told = "; ".join(f"{name} {cause}" for name, cause in view.learned[:5])
        more = f"; and {len(view.learned) - 5} more" if len(view.learned) > 5 else ""
        out.write(f"  {len(view.learned)} started with memory learned from earlier runs: {told}{more}\n")
    for i, task in enumerate(view.tasks):
        if i == 0:
            out.write(f"{'TASK':<{width}}{HEADER_REST}REASON\n")
        out.write(task_line(task, width, columns) + "\n")
        out.writelines(attempt_lines(task.attempts))
    if not view.every:
        shown = view.run.counts[TaskState.SUCCEEDED]
        out.write(f"({shown} succeeded tasks not shown: --all lists every task)\n")


def event_line(e: EventView, run_start: float) -> str:
    task = e.task if e.task is not None else "(run)"
    attempt = f"#{e.attempt}" if e.attempt is not None else "-"
    move = f"{e.from_state or '-'} -> {e.to_state or '-'}"
    elapsed = max(0.0, e.time - run_start)
    since = f"+{elapsed:.3f}s" if elapsed < 60 else f"+{format_duration(elapsed)}"
    when = f"{local_time(e.time, 3):<23} {since:>12}"
    return f"{when}  {task:<24} {attempt:>3}  {e.subject:<7} {move:<24} {e.cause}"


def write_events(view: EventsView, out: IO[str]) -> None:
    run = view.run
    whose = f"task {view.task}" if view.task is not None else "every task"
    out.write(f"run {run.id} of job {run.job} ({run.job_file}): {run.state.value}; events of {whose}\n")
    count = 0
    for count, event in enumerate(view.events, 1):
        if count == 1:
            out.write(EVENTS_HEADER + "\n")
        out.write(event_line(event, run.created) + "\n")
    if count == 0:
        out.write("  (no events recorded)\n")


def summary_line(
    run: RunView, state: RunState, failed: Iterable[TaskView], unmade: Iterable[str] = ()
) -> str:
    """The line `run` ends with; `state` is how the runner ended it; `unmade`: fan-outs
    over a manifest task 0 never made."""
    took = format_duration((run.ended or time.time()) - run.created)
    line = (
        f"labrun: job {run.job} run {run.id} {state.value} in {took}: {run.count_text()} "
        f"of {plural(run.total, 'task')}"
    )
    if state is not RunState.SUCCEEDED:
        listed = list(failed)
        shown = [f"{task_with_item(t.name, t.item)}: {t.reason}" for t in listed]
        more = run.counts[TaskState.FAILED] - len(listed)
        if more > 0:
            shown.append(f"and {more} more failed")
        shown += [f"{name} skipped: its items come from task 0, which failed" for name in unmade]
        if shown:
            line += "; " + "; ".join(shown)
        line += f" (details: labrun status {run.id})"
    return line


def write_runs_table(runs: Sequence[RunView], out: IO[str], columns: int | None = None) -> None:
    rest = 6 + 1 + 12 + 1 + 19 + 1 + 8 + 2 + REASON_ROOM
    width = _name_width(max((len(run.job) for run in runs), default=0), "JOB", rest, columns)
    out.write(f"{'RUN':>5} {'JOB':<{width}} {'STATE':<12} {'STARTED':<19} {'TOOK':>8}  TASKS\n")
    for run in runs:
        took = format_duration(run.ended - run.created) if run.ended else "-"
        started = local_time(run.created).replace(" ", "T")
        rerun = f" (rerun of {run.rerun_of})" if run.rerun_of else ""
        out.write(
            f"{run.id:>5} {shorten_middle(run.job, width):<{width}} {run.state.value:<12} {started:<19} "
            f"{took:>8}  {run.count_text()}{rerun}\n"
        )
