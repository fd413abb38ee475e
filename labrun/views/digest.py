"""What the HTML report shows about a run, gathered in one streamed pass over its tasks.

A report of a 100,000-task run must stay small and be built without holding the run, so
the `Digest` keeps, as tasks stream past: every task that failed (all of them, never
summarised away), the first `LISTED` that did not finish (skipped, cancelled, waiting: a
failed task 0 can skip 100,000) and the first `LISTED` that succeeded; timeline bars for
every attempt that did not succeed plus an even sample of the rest (1 in `stride`); and
per task name (`spec`) its peaks and durations as packed arrays, for the suggested
requests, and its tasks' states, for the dependency graph; and the first `CHARTED` attempts
that were OOM-killed, then failed or timed out, whose memory series the report draws.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field

from labrun.states import Outcome, TaskState
from labrun.views.model import AttemptView, TaskView

LISTED = 1000  # tasks that succeeded (and, apart, that did not finish) listed before "and N more"
DRAWN = 4000  # attempts that succeeded, drawn on the timeline (sampled evenly past this)
MIB = 1024 * 1024
MEMORY_MARGIN = 1.2  # the suggested memory: p95 of the peaks, 20 % more, whole MiB up
TIME_MARGIN = 1.5  # the suggested time limit: p95 of the durations, 50 % more, whole minutes up
CHARTED = 24  # attempts whose memory series is drawn: OOM-killed first, then failed and timed out
SERIES_OUTCOMES = (Outcome.OOM, Outcome.FAILED, Outcome.TIMEOUT)


@dataclass(frozen=True)
class Bar:
    """One attempt on the timeline."""

    task: str
    n: int
    node: str
    start: float
    end: float | None  # None: still running
    outcome: str  # an Outcome value, or "running"
    peak: int | None
    limit: int | None
    gpus: tuple[int, ...] = ()  # the GPUs it held: it is drawn on their lanes too


@dataclass(frozen=True)
class Charted:
    """An attempt whose memory over time the report draws (its series is read by id)."""

    attempt_id: int
    task: str
    n: int
    outcome: Outcome
    started: float
    ended: float | None
    peak: int | None
    limit: int | None


@dataclass
class SpecStats:
    """Per task name: what its attempts used, for the suggested requests."""

    peaks: array[int] = field(default_factory=lambda: array("q"))
    durations: array[float] = field(default_factory=lambda: array("d"))  # succeeded attempts
    limit: int | None = None  # the latest attempt's limit: what it asks for now
    ooms: int = 0
    oom_limit: int = 0  # the largest limit an attempt was OOM-killed at
    timeouts: int = 0
    count: int = 0  # attempts
    states: Counter[TaskState] = field(default_factory=Counter)  # its tasks' states


@dataclass(frozen=True)
class Suggestion:
    spec: str
    attempts: int
    memory_now: int | None
    memory: int | None  # None: no peak measured on this runtime
    peak_p95: int | None
    seconds_p95: float | None
    timeout: float | None
    ooms: int
    timeouts: int


def outcome_of(a: AttemptView) -> str:
    return a.outcome.value if a.outcome else "running"


@dataclass
class Digest:
    stride: int = 1  # 1 in `stride` succeeded attempts is drawn
    problems: list[TaskView] = field(default_factory=list)  # every failed task, then unfinished ones
    unfinished: int = 0  # tasks that did not finish (not failed, not succeeded)
    unfinished_unlisted: int = 0  # of those, past the first LISTED
    listed: list[TaskView] = field(default_factory=list)  # the first LISTED that did
    unlisted: int = 0
    bars: list[Bar] = field(default_factory=list)
    undrawn: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    specs: dict[str, SpecStats] = field(default_factory=dict)
    first: float | None = None
    last: float | None = None
    attempts: int = 0
    charted_oom: list[Charted] = field(default_factory=list)
    charted_other: list[Charted] = field(default_factory=list)

    @classmethod
    def for_run(cls, succeeded: int) -> Digest:
        return cls(stride=max(1, math.ceil(succeeded / DRAWN)))

    def add(self, task: TaskView) -> None:
        if task.state is TaskState.SUCCEEDED:
            if len(self.listed) < LISTED:
                self.listed.append(task)
            else:
                self.unlisted += 1
        elif task.state is TaskState.FAILED:
            self.problems.append(task)
        else:
            self.unfinished += 1
            if self.unfinished <= LISTED:
                self.problems.append(task)
            else:
                self.unfinished_unlisted += 1
        stats = self.specs.setdefault(task.spec, SpecStats())
        stats.states[task.state] += 1
        for a in task.attempts:
            self._attempt(task, a, stats)

    def _attempt(self, task: TaskView, a: AttemptView, stats: SpecStats) -> None:
        self.attempts += 1
        stats.count += 1
        outcome = outcome_of(a)
        self.outcomes[outcome] += 1
        self.first = a.started if self.first is None else min(self.first, a.started)
        end = a.ended if a.ended is not None else a.started
        self.last = end if self.last is None else max(self.last, end)
        if a.peak_memory is not None:
            stats.peaks.append(a.peak_memory)
        stats.limit = a.memory_limit
        if a.outcome is Outcome.OOM:
            stats.ooms += 1
            stats.oom_limit = max(stats.oom_limit, a.memory_limit or 0)
        stats.timeouts += a.outcome is Outcome.TIMEOUT
        if a.outcome is Outcome.SUCCEEDED and a.duration is not None:
            stats.durations.append(a.duration)
        sampled = self.attempts % self.stride == 0
        if a.outcome is not Outcome.SUCCEEDED or task.state is not TaskState.SUCCEEDED or sampled:
            self.bars.append(
                Bar(
                    task.name, a.n, a.node, a.started, a.ended, outcome, a.peak_memory, a.memory_limit, a.gpus
                )
            )
        else:
            self.undrawn += 1
        if a.outcome in SERIES_OUTCOMES and a.attempt_id is not None:
            self._chart(task, a)

    def _chart(self, task: TaskView, a: AttemptView) -> None:
        assert a.outcome is not None and a.attempt_id is not None
        into = self.charted_oom if a.outcome is Outcome.OOM else self.charted_other
        if len(into) < CHARTED:
            into.append(
                Charted(
                    a.attempt_id, task.name, a.n, a.outcome, a.started, a.ended, a.peak_memory, a.memory_limit
                )
            )

    @property
    def charted(self) -> list[Charted]:
        """The attempts whose series is drawn: OOM-killed ones first, CHARTED at most."""
        return [*self.charted_oom, *self.charted_other][:CHARTED]

    def suggestions(self) -> list[Suggestion]:
        return [_suggest(spec, stats) for spec, stats in sorted(self.specs.items())]


def p95(values: array[int] | array[float]) -> float | None:
    """The 95th percentile (nearest rank); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)])


def _suggest(spec: str, stats: SpecStats) -> Suggestion:
    peak = p95(stats.peaks)
    memory = None if peak is None else math.ceil(peak * MEMORY_MARGIN / MIB) * MIB
    if memory is not None and stats.oom_limit:  # a killed attempt's peak is its cap, not its need
        memory = max(memory, math.ceil(stats.oom_limit * MEMORY_MARGIN / MIB) * MIB)
    seconds = p95(stats.durations)
    timeout = None if seconds is None else math.ceil(seconds * TIME_MARGIN / 60) * 60.0
    return Suggestion(
        spec,
        stats.count,
        stats.limit,
        memory,
        None if peak is None else int(peak),
        seconds,
        timeout,
        stats.ooms,
        stats.timeouts,
    )
