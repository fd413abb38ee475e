"""Typed view models: what a page about a run shows, built from store rows, renderer-free.

The text and JSON renderers (and the HTML report next) read these, never store rows, so
every view shows the same facts: per attempt its outcome, exit, signal, node, runtime,
timings, memory and detail; per task its state, reason, item and attempts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from labrun.liveness import seen_state
from labrun.model import Runtime
from labrun.outcome import signal_name
from labrun.rows import AttemptRow, EventRow, RunRow, TaskRow
from labrun.states import Outcome, RunState, TaskState


@dataclass(frozen=True)
class AttemptView:
    n: int
    outcome: Outcome | None  # None while it runs
    exit_code: int | None
    signal: int | None
    node: str
    runtime: Runtime
    mechanism: str | None  # how the runtime was realised: "systemd", "v1" ...
    started: float
    ended: float | None
    memory_limit: int | None
    peak_memory: int | None
    cpu_seconds: float | None
    oom_kills: int | None  # the kernel's counter for the attempt's cgroup
    missing_outputs: tuple[str, ...]
    detail: str | None  # the classifier's one line
    container_oom_killed: bool | None = None  # Docker's State.OOMKilled, its own source
    note: str | None = None  # what the executor noted, e.g. Docker's State.Error
    attempt_id: int | None = None  # the store's id: what its memory series is read by
    gpus: tuple[int, ...] = ()  # the GPU indices it held

    @classmethod
    def of(cls, row: AttemptRow) -> AttemptView:
        return cls(
            n=row.n,
            outcome=row.outcome,
            exit_code=row.exit_code,
            signal=row.signal,
            node=row.node,
            runtime=row.runtime,
            mechanism=row.mechanism,
            started=row.started,
            ended=row.ended,
            memory_limit=row.memory_limit,
            peak_memory=row.peak_memory,
            cpu_seconds=row.cpu_seconds,
            oom_kills=row.oom_kills,
            missing_outputs=tuple(json.loads(row.missing_outputs)) if row.missing_outputs else (),
            detail=row.detail,
            container_oom_killed=row.oom_killed,
            note=row.note,
            attempt_id=row.id,
            gpus=tuple(int(g) for g in row.gpus.split(",")) if row.gpus else (),
        )

    @property
    def running(self) -> bool:
        return self.outcome is None

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    @property
    def signal_name(self) -> str | None:
        return signal_name(self.signal) or None

    @property
    def oom_killed(self) -> bool:
        """By either source: the kernel's counter or the container runtime's flag."""
        return bool(self.oom_kills) or bool(self.container_oom_killed)


@dataclass(frozen=True)
class TaskView:
    name: str  # "resize[3]", "report"
    seq: int  # 0 is task 0, `setup`
    spec: str  # the [[tasks]] entry it came from
    item: str | None
    state: TaskState
    reason: str | None
    failures: int  # attempts that counted against its budget
    not_before: float  # a retry waits until then
    attempts: tuple[AttemptView, ...]

    @classmethod
    def of(cls, row: TaskRow, attempts: tuple[AttemptView, ...]) -> TaskView:
        return cls(
            row.name,
            row.seq,
            row.spec,
            row.item,
            row.state,
            row.reason,
            row.failures,
            row.not_before,
            attempts,
        )

    @property
    def label(self) -> str:
        """How a user names it: task 0 (setup) is addressed as 0 too."""
        return f"0 {self.name}" if self.seq == 0 else self.name

    @property
    def last(self) -> AttemptView | None:
        return self.attempts[-1] if self.attempts else None


@dataclass(frozen=True)
class RunView:
    id: int
    job: str
    job_file: str
    state: RunState
    created: float
    ended: float | None
    host: str | None
    counts: Mapping[TaskState, int]  # every state, zeros included
    rerun_of: int | None = None  # `run --rerun-failed`: the run whose failures this one reruns

    @classmethod
    def of(cls, row: RunRow, counts: Mapping[TaskState, int]) -> RunView:
        every = {state: counts.get(state, 0) for state in TaskState}
        state = seen_state(row)  # a dead runner's run reads interrupted, not running
        return cls(
            row.id, row.job, row.job_file, state, row.created, row.ended, row.host, every, row.rerun_of
        )

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count_text(self) -> str:
        """ "3 succeeded, 1 failed": the states that have tasks, in lifecycle order."""
        return ", ".join(f"{n} {state.value}" for state, n in self.counts.items() if n)


@dataclass(frozen=True)
class EventView:
    """One recorded transition: of the run (task None), a task, or an attempt (attempt set)."""

    time: float
    task: str | None
    attempt: int | None
    from_state: str | None
    to_state: str | None
    cause: str
    subject: str = "task"  # whose states from/to are: "run", "task" or "attempt"

    @classmethod
    def of(cls, row: EventRow, task: str | None) -> EventView:
        subject = row.subject.value
        return cls(row.time, task, row.attempt, row.from_state, row.to_state, row.cause, subject)


@dataclass(frozen=True)
class StatusView:
    """`labrun status`: the run and its tasks, streamed; read them inside the snapshot."""

    run: RunView
    tasks: Iterator[TaskView]
    every: bool  # False: only the tasks that did not succeed are listed
    learned: tuple[tuple[str, str], ...] = ()  # (task, cause): memory learned from earlier runs
    longest: int = 0  # the longest task label of the run ("0 setup" included): the TASK column's need


@dataclass(frozen=True)
class EventsView:
    """`labrun status --events`: a run's events, or one task's (its story), streamed."""

    run: RunView
    task: str | None
    events: Iterator[EventView]
