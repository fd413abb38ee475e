"""What a run prints while it runs: a live bar on a terminal, short plain lines otherwise.

Plain output is for cron mail and logs: failures, retries and give-ups as one line each,
a progress line at most every `interval` seconds, and one summary line at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import IO, TYPE_CHECKING

from labrun.fit import shorten_middle, task_with_item
from labrun.retry import Decision
from labrun.states import Outcome, TaskState

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


@dataclass(frozen=True)
class AttemptEnd:
    """How one attempt ended and what happens next, as the reporters show it."""

    task: str
    attempt: int
    node: str
    outcome: Outcome
    detail: str
    decision: Decision | None  # None: no retry decision (succeeded, killed)
    item: str | None = None  # the task's item, shown beside its name
    headline: str = ""  # for a counted failure: what `labrun why` would say, in one line

    @property
    def gave_up(self) -> bool:
        return self.decision is not None and not self.decision.retry

    def line(self) -> str:
        name = task_with_item(self.task, self.item)
        text = f"{name} attempt {self.attempt} on {self.node}: {self.outcome.value}: {self.detail}"
        if self.headline:
            text += f" — {self.headline}"
        if self.decision is not None:
            text += f"; {'gave up: ' if self.gave_up else ''}{self.decision.reason}"
        return text


STOPPING = {
    "interrupt": "stopping (Ctrl-C)",
    "terminate": "stopping (SIGTERM)",
    "cancel": "cancelling (`labrun cancel`)",
}


def stopping_text(how: str) -> str:
    """What the user is told while running attempts are being stopped."""
    return (
        f"{STOPPING.get(how, 'stopping')}: no new attempts; the running ones get SIGTERM, then "
        "SIGKILL after their grace; press Ctrl-C again to kill them now"
    )


class Reporter:
    """Prints nothing; the base of the others, and what tests use."""

    stop_requested = ""  # set from a signal handler (no I/O there); shown at the next tick
    waiting: Mapping[str, int] = MappingProxyType({})  # attempts queued in a cluster, by its reason

    def queued(self, reasons: Mapping[str, int]) -> None:
        """Attempts waiting in a cluster's queue, by the reason it gives; shown with progress."""
        self.waiting = reasons

    def stopping(self, how: str) -> None:
        """A stop was asked for (`how`: interrupt, terminate, cancel); shown at the next tick."""
        self.stop_requested = how

    def attempt_started(self, task: str, attempt: int, node: str) -> None:
        pass

    def attempt_ended(self, end: AttemptEnd) -> None:
        pass

    def progress(self, counts: dict[TaskState, int], now: float) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def counts_line(counts: dict[TaskState, int], waiting: Mapping[str, int] | None = None) -> str:
    total = sum(counts.values())
    done = sum(counts[s] for s in TaskState if s.terminal)
    parts = [f"{counts[s]} {s.value}" for s in TaskState if counts.get(s)]
    line = f"{done}/{total} done: " + ", ".join(parts)
    return line + queued_text(waiting) if waiting else line


def queued_text(waiting: Mapping[str, int]) -> str:
    """'; 3 queued in a cluster: 2 Resources, 1 Priority': running tasks whose attempt still
    waits in a cluster's queue, by the queue's reason."""
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(waiting.items(), key=lambda kv: -kv[1]))
    return f"; {sum(waiting.values())} queued in a cluster: {reasons}"


class PlainReporter(Reporter):
    def __init__(self, stream: IO[str] | None = None, verbose: bool = False, interval: float = 30.0) -> None:
        self.stream = stream or sys.stdout
        self.verbose = verbose
        self.interval = interval
        self._last = time.monotonic()
        self._told = False

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def attempt_started(self, task: str, attempt: int, node: str) -> None:
        if self.verbose:
            self._print(f"{task} attempt {attempt} started on {node}")

    def attempt_ended(self, end: AttemptEnd) -> None:
        if self.verbose or end.outcome is not Outcome.SUCCEEDED:
            self._print(end.line())

    def progress(self, counts: dict[TaskState, int], now: float) -> None:
        if self.stop_requested and not self._told:
            self._told = True
            self._print(stopping_text(self.stop_requested))
        tick = time.monotonic()
        if tick - self._last >= self.interval:
            self._last = tick
            self._print("progress: " + counts_line(counts, self.waiting))

    def message(self, text: str) -> None:
        self._print(text)


class QuietReporter(PlainReporter):
    """--quiet: only errors (and the caller's summary line)."""

    def attempt_ended(self, end: AttemptEnd) -> None:
        if end.gave_up:
            self._print(end.line())

    def progress(self, counts: dict[TaskState, int], now: float) -> None:
        pass


ELAPSED_WIDTH = 8  # rich's elapsed time, "0:00:00", and room for ten hours more
BAR_WIDTH = 20


def bar_fields(job: str, done: int, total: int, states: str, width: int) -> tuple[str, str]:
    """The bar's name and states for a terminal `width` columns wide: the counts and the
    elapsed time always fit; the job name is shortened (in the middle) first, then the
    states."""
    counts = len(f"{done}/{total}")
    room = width - counts - ELAPSED_WIDTH - BAR_WIDTH - 4  # four separating spaces
    states = shorten_middle(states, max(0, room - min(len(job), 12))) if states else ""
    name = shorten_middle(job, max(1, min(len(job), room - len(states))))
    return name, states


class LiveReporter(Reporter):
    """A rich progress bar, redrawn at most 10 times a second; events print above it."""

    def __init__(self, job: str, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.job = job
        self.console = Console(stderr=False)
        self.bar: Progress = Progress(
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(bar_width=BAR_WIDTH),
            MofNCompleteColumn(),
            TextColumn("{task.fields[states]}", markup=False),
            TimeElapsedColumn(),
            console=self.console,
            refresh_per_second=10,
        )
        name, _ = bar_fields(job, 0, total, "", self.console.width)
        self.task_id: TaskID = self.bar.add_task(name, total=total, states="")
        self.bar.start()

    def attempt_ended(self, end: AttemptEnd) -> None:
        if end.outcome is not Outcome.SUCCEEDED:
            style = "red" if end.gave_up else "yellow"
            text = end.line()
            self.bar.console.print(text, style=style, markup=False, highlight=False)

    def progress(self, counts: dict[TaskState, int], now: float) -> None:
        done = sum(counts[s] for s in TaskState if s.terminal)
        states = ", ".join(
            f"{counts[s]} {s.value}"
            for s in (TaskState.RUNNING, TaskState.FAILED, TaskState.SKIPPED)
            if counts.get(s)
        )
        if self.waiting:
            states += f", {sum(self.waiting.values())} queued ({', '.join(sorted(self.waiting))})"
        if self.stop_requested:
            if not self._told:
                self._told = True
                self.bar.console.print(stopping_text(self.stop_requested), markup=False, highlight=False)
            verb = "cancelling" if self.stop_requested == "cancel" else "stopping"
            states = f"{verb}; Ctrl-C again kills"
        total = sum(counts.values())  # it grows when task 0's manifest fans out
        name, states = bar_fields(self.job, done, total, states, self.console.width)
        self.bar.update(self.task_id, description=name, completed=done, total=total, states=states)

    _told = False

    def message(self, text: str) -> None:
        self.bar.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        self.bar.stop()
