"""The lifecycle of runs, tasks and attempts, and the one table of allowed task transitions.

A transition that is not in `TASK_TRANSITIONS` is a bug and raises; nothing falls through.
"""

from __future__ import annotations

import enum


class TaskState(str, enum.Enum):
    WAITING = "waiting"  # on dependencies
    READY = "ready"  # may start once capacity (and its retry time) allows
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # an upstream task failed or was cancelled

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_TASK_STATES


TERMINAL_TASK_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.SKIPPED}
)


class RunState(str, enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # finished, some tasks did not succeed
    INTERRUPTED = "interrupted"  # the runner stopped (signal or crash); resumable
    CANCELLED = "cancelled"


class Outcome(str, enum.Enum):
    """How one attempt ended. Whether it counts and whether it is retried: see `retry.py`."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # non-zero exit or killed by a signal it did not ask for
    OOM = "oom"
    TIMEOUT = "timeout"
    NO_OUTPUT = "no_output"
    CONFIG_ERROR = "config_error"
    KILLED = "killed"
    LOST = "lost"

    @property
    def counts(self) -> bool:
        """The task's own fault counts against its failure budget; the system's does not."""
        return self not in (Outcome.SUCCEEDED, Outcome.KILLED, Outcome.LOST)


# (from, to) -> the causes that may drive it; the store records the cause as an event.
TASK_TRANSITIONS: dict[tuple[TaskState, TaskState], str] = {
    (TaskState.WAITING, TaskState.READY): "dependencies met",
    (TaskState.WAITING, TaskState.SKIPPED): "an upstream task did not succeed",
    (TaskState.WAITING, TaskState.CANCELLED): "cancelled",
    (TaskState.READY, TaskState.RUNNING): "attempt started",
    (TaskState.READY, TaskState.FAILED): "cannot be placed or retried",
    (TaskState.READY, TaskState.CANCELLED): "cancelled",
    (TaskState.READY, TaskState.SKIPPED): "an upstream task did not succeed",
    (TaskState.RUNNING, TaskState.SUCCEEDED): "attempt succeeded",
    (TaskState.RUNNING, TaskState.READY): "attempt to be retried",
    (TaskState.RUNNING, TaskState.FAILED): "attempt failed for good",
    (TaskState.RUNNING, TaskState.CANCELLED): "cancelled",
}


class TransitionError(RuntimeError):
    """A transition the state machine does not have: a bug in labrun, never user error."""


def check_transition(current: TaskState, new: TaskState) -> None:
    if (current, new) not in TASK_TRANSITIONS:
        raise TransitionError(f"task transition {current.value} -> {new.value} is not allowed")
