"""Rows of the store as frozen dataclasses; the converters reject states they do not know."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from labrun.model import Runtime
from labrun.states import AttemptState, Outcome, RunState, Subject, TaskState


@dataclass(frozen=True)
class RunRow:
    id: int
    job: str
    job_file: str
    job_text: str
    state: RunState
    created: float
    ended: float | None
    pid: int | None
    host: str | None
    rerun_of: int | None = None  # the run whose failures this one runs again


@dataclass(frozen=True)
class TaskRow:
    id: int
    run_id: int
    seq: int
    name: str  # "resize[3]", "report"
    spec: str  # the [[tasks]] entry it came from
    item: str | None
    idx: int | None
    state: TaskState
    not_before: float
    attempts: int
    failures: int  # counted failures
    memory: int  # what the next attempt asks for
    reason: str | None


@dataclass(frozen=True)
class AttemptRow:
    id: int
    task_id: int
    run_id: int
    n: int
    node: str
    runtime: Runtime
    mechanism: str | None
    pid: int | None
    pid_start: float | None
    ref: str | None
    started: float
    ended: float | None
    outcome: Outcome | None  # None while running
    exit_code: int | None
    signal: int | None
    memory_limit: int | None
    peak_memory: int | None
    cpu_seconds: float | None
    oom_kills: int | None  # the kernel's counter for the attempt's cgroup
    missing_outputs: str | None
    detail: str | None  # the classifier's one line (outcome.classify)
    state: AttemptState
    note: str | None = None  # what the executor noted (Facts.detail), e.g. Docker's State.Error
    oom_killed: bool | None = None  # the container runtime's flag (Docker's State.OOMKilled)
    gpus: str | None = None  # the GPU indices it held, "0,2" (recorded with its end)

    @property
    def live(self) -> bool:
        return self.state.live


@dataclass(frozen=True)
class EventRow:
    id: int
    run_id: int
    task_id: int | None
    attempt: int | None
    time: float
    from_state: str | None
    to_state: str | None
    cause: str
    subject: Subject  # whose states from_state and to_state are


RUN_COLUMNS = "id, job, job_file, job_text, state, created, ended, pid, host, rerun_of"
TASK_COLUMNS = "id, run_id, seq, name, spec, item, idx, state, not_before, attempts, failures, memory, reason"
ATTEMPT_COLUMNS = (
    "id, task_id, run_id, n, node, runtime, mechanism, pid, pid_start, ref, started, ended, "
    "outcome, exit_code, signal, memory_limit, peak_memory, cpu_seconds, oom_kills, "
    "missing_outputs, detail, state, note, oom_killed, gpus"
)
EVENT_COLUMNS = "id, run_id, task_id, attempt, time, from_state, to_state, cause, subject"


def run_row(r: sqlite3.Row | tuple[object, ...]) -> RunRow:
    values = list(r)
    values[4] = RunState(values[4])
    return RunRow(*values)


def task_row(r: sqlite3.Row | tuple[object, ...]) -> TaskRow:
    values = list(r)
    values[7] = TaskState(values[7])
    return TaskRow(*values)


def attempt_row(r: sqlite3.Row | tuple[object, ...]) -> AttemptRow:
    values = list(r)
    values[5] = Runtime(values[5])
    if values[12] is not None:
        values[12] = Outcome(values[12])
    values[21] = AttemptState(values[21])
    if values[23] is not None:
        values[23] = bool(values[23])
    return AttemptRow(*values)


def event_row(r: sqlite3.Row | tuple[object, ...]) -> EventRow:
    values = list(r)
    values[8] = Subject(values[8])
    return EventRow(*values)
