"""The lifecycles of runs, tasks and attempts, and the tables of allowed transitions.

A task and each of its attempts have their own state: a task may have several attempts
live at once (a second one asked for while the first runs), and the first to succeed
wins. A transition that is not in `TASK_TRANSITIONS` or `ATTEMPT_TRANSITIONS` is a bug
and raises; nothing falls through.
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
    SUPERSEDED = "superseded"  # another attempt of the task succeeded first; never retried

    @property
    def counts(self) -> bool:
        """The task's own fault counts against its failure budget; the system's does not."""
        return self not in (Outcome.SUCCEEDED, Outcome.KILLED, Outcome.LOST, Outcome.SUPERSEDED)


class AttemptState(str, enum.Enum):
    """Where one attempt is in its life; how it ended is its `Outcome`."""

    LAUNCHING = "launching"  # claimed and written; its process is being started
    RUNNING = "running"  # started (pid or reference recorded) or adopted after a restart
    ENDED = "ended"  # its end was observed and classified; its task has not taken it in yet
    RECORDED = "recorded"  # its outcome was applied to its task (success, retry, failure)
    SUPERSEDED = "superseded"  # it lost the race: another attempt of its task succeeded first
    ABANDONED = "abandoned"  # given up without an observed end (gone after a restart, cancelled)

    @property
    def live(self) -> bool:
        return self in (AttemptState.LAUNCHING, AttemptState.RUNNING)


class Subject(str, enum.Enum):
    """What an event row is about: the `from_state`/`to_state` of a run, task or attempt."""

    RUN = "run"
    TASK = "task"
    ATTEMPT = "attempt"


# The allowed task transitions. Each event row carries its own cause (which attempt,
# which outcome, which upstream task), written by `labrun.ledger`.
TASK_TRANSITIONS: frozenset[tuple[TaskState, TaskState]] = frozenset(
    {
        (TaskState.WAITING, TaskState.READY),  # dependencies met
        (TaskState.WAITING, TaskState.SKIPPED),  # an upstream task did not succeed
        (TaskState.WAITING, TaskState.CANCELLED),
        (TaskState.READY, TaskState.RUNNING),  # its first attempt of this try was claimed
        (TaskState.READY, TaskState.FAILED),  # no node can ever hold it
        (TaskState.READY, TaskState.CANCELLED),
        (TaskState.READY, TaskState.SKIPPED),
        (TaskState.RUNNING, TaskState.SUCCEEDED),  # the first attempt to succeed
        (TaskState.RUNNING, TaskState.READY),  # its last live attempt ended: retry, or resume later
        (TaskState.RUNNING, TaskState.FAILED),  # its last live attempt ended and it gives up
        (TaskState.RUNNING, TaskState.CANCELLED),
    }
)

ATTEMPT_TRANSITIONS: frozenset[tuple[AttemptState, AttemptState]] = frozenset(
    {
        (AttemptState.LAUNCHING, AttemptState.RUNNING),  # started, or adopted after a restart
        (AttemptState.LAUNCHING, AttemptState.ENDED),  # could not start (config_error)
        (AttemptState.LAUNCHING, AttemptState.ABANDONED),  # the runner stopped before it started
        (AttemptState.RUNNING, AttemptState.ENDED),  # the executor reported its end
        (AttemptState.RUNNING, AttemptState.ABANDONED),  # gone after a restart; cancelled unseen
        (AttemptState.ENDED, AttemptState.RECORDED),  # its task decided on it
        (AttemptState.ENDED, AttemptState.SUPERSEDED),  # a sibling had succeeded first
    }
)


class TransitionError(RuntimeError):
    """A transition the state machine does not have: a bug in labrun, never user error."""


def check_transition(current: TaskState, new: TaskState) -> None:
    if (current, new) not in TASK_TRANSITIONS:
        raise TransitionError(f"task transition {current.value} -> {new.value} is not allowed")


def check_attempt_transition(current: AttemptState, new: AttemptState) -> None:
    if (current, new) not in ATTEMPT_TRANSITIONS:
        raise TransitionError(f"attempt transition {current.value} -> {new.value} is not allowed")
