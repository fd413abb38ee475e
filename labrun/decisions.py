"""What happens to a task when one of its attempts ends. Pure: no I/O, no clock.

Input: the task as it is now, every attempt of its current try (live and ended), the
attempt that just ended with its classified outcome, the retry policy, `now` and a
random draw. Output: instructions, in order, that `labrun.ledger` applies and the runner
carries out (stopping superseded attempts). The first rule that matches decides:

1. the task already finished (a sibling succeeded, or it was cancelled): the attempt is
   recorded without touching the task; after a success it is `superseded`, not counted;
2. it succeeded: the task succeeds, and its live siblings are stopped (superseded);
3. a sibling is still live: the end is recorded (a counted failure is counted) and the
   task keeps running; only its last live attempt decides a retry, so a lost or killed
   attempt never sends a task back to `ready` while another attempt of it runs;
4. the runner is shutting down: the task is ready again for the resume, nothing counted;
5. cancelled: the task is cancelled;
6. otherwise `retry.decide`: retried with memory M at time T, or failed with a reason.

Releasing or skipping dependents is `unblock`'s, once the task is finished.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from labrun.memory import OomAttempt
from labrun.outcome import Stop
from labrun.retry import Decision, Policy, decide
from labrun.rows import TaskRow
from labrun.states import AttemptState, Outcome, TaskState


@dataclass(frozen=True)
class AttemptView:
    """What decisions need to know about one attempt of the task."""

    id: int
    n: int
    node: str
    state: AttemptState
    outcome: Outcome | None = None


@dataclass(frozen=True)
class Ended:
    """The attempt that just ended, as `outcome.classify` saw it."""

    attempt: AttemptView
    outcome: Outcome
    detail: str
    stop: Stop | None = None  # why labrun stopped it, if it did
    oom: OomAttempt | None = None  # its limit, peak and OOM policy, for an `oom` outcome
    exit_code: int | None = None  # as the attempt exited (None: killed by a signal)


# -- instructions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """How the ended attempt is written down: its final outcome and state."""

    attempt_id: int
    outcome: Outcome  # may differ from the classified one: a late loser is `superseded`
    detail: str
    state: AttemptState  # RECORDED or SUPERSEDED
    counted: bool  # spent one of the task's retries
    cause: str  # what its task made of it


@dataclass(frozen=True)
class Succeed:
    cause: str


@dataclass(frozen=True)
class Retry:
    decision: Decision  # when (not_before) and with how much memory
    failures: int
    reason: str  # why the attempt that ended did not succeed
    cause: str


@dataclass(frozen=True)
class Fail:
    decision: Decision
    failures: int
    reason: str
    cause: str


@dataclass(frozen=True)
class Cancel:
    reason: str


@dataclass(frozen=True)
class Requeue:
    """Back to ready at once without counting: the runner stopped; a resume runs it."""

    cause: str


@dataclass(frozen=True)
class Wait:
    """The task keeps running: a sibling attempt is still live."""

    failures: int
    cause: str


@dataclass(frozen=True)
class Supersede:
    """Stop these live attempts (TERM, KILL after grace); each is recorded superseded."""

    attempt_ids: tuple[int, ...]
    cause: str


Instruction = Record | Succeed | Retry | Fail | Cancel | Requeue | Wait | Supersede


def on_end(
    task: TaskRow,
    attempts: Sequence[AttemptView],
    ended: Ended,
    policy: Policy,
    now: float,
    draw: float,
) -> tuple[Instruction, ...]:
    """The instructions for `task` now that `ended` ended; `attempts` is every attempt of
    its current try, `ended` included (its state in it does not matter)."""
    siblings = [a for a in attempts if a.id != ended.attempt.id and a.state.live]
    for rule in _RULES:
        instructions = rule(task, siblings, attempts, ended, policy, now, draw)
        if instructions is not None:
            return instructions
    raise AssertionError("the last rule always decides")  # pragma: no cover


_Rule = Callable[
    [TaskRow, list[AttemptView], Sequence[AttemptView], Ended, Policy, float, float],
    "tuple[Instruction, ...] | None",
]


def _recorded(ended: Ended, counted: bool, cause: str) -> Record:
    """The ended attempt written down as it was classified."""
    return Record(ended.attempt.id, ended.outcome, ended.detail, AttemptState.RECORDED, counted, cause)


def _label(a: AttemptView) -> str:
    return f"attempt {a.n} on {a.node}"


def _already_finished(
    task: TaskRow, siblings: list[AttemptView], attempts: Sequence[AttemptView], ended: Ended, *_: object
) -> tuple[Instruction, ...] | None:
    if not task.state.terminal:
        return None
    if task.state is not TaskState.SUCCEEDED:
        cause = f"its task was already {task.state.value}"
        return (_recorded(ended, False, cause),)
    winner = next((a for a in attempts if a.outcome is Outcome.SUCCEEDED), None)
    first = f"attempt {winner.n}" if winner is not None else "another attempt"
    detail = ended.detail
    if ended.outcome is not Outcome.SUPERSEDED:
        detail = f"{ended.outcome.value} after {first} had succeeded ({ended.detail}); not counted"
    cause = f"superseded: {first} succeeded first"
    return (Record(ended.attempt.id, Outcome.SUPERSEDED, detail, AttemptState.SUPERSEDED, False, cause),)


def _succeeded(
    task: TaskRow, siblings: list[AttemptView], attempts: Sequence[AttemptView], ended: Ended, *_: object
) -> tuple[Instruction, ...] | None:
    if ended.outcome is not Outcome.SUCCEEDED:
        return None
    me = _label(ended.attempt)
    out: list[Instruction] = [
        Record(
            ended.attempt.id, ended.outcome, ended.detail, AttemptState.RECORDED, False, "the task succeeded"
        ),
        Succeed(f"{me}: succeeded: {ended.detail}"),
    ]
    if siblings:
        ids = tuple(a.id for a in siblings)
        out.append(Supersede(ids, f"attempt {ended.attempt.n} succeeded first"))
    return tuple(out)


def _sibling_live(
    task: TaskRow, siblings: list[AttemptView], attempts: Sequence[AttemptView], ended: Ended, *_: object
) -> tuple[Instruction, ...] | None:
    if not siblings:
        return None
    counted = ended.outcome.counts
    others = ", ".join(f"attempt {a.n}" for a in siblings)
    still = f"{others} {'is' if len(siblings) == 1 else 'are'} still running"
    cause = f"{'counted; ' if counted else ''}{still}"
    failures = task.failures + int(counted)
    return (
        _recorded(ended, counted, cause),
        Wait(failures, f"{_label(ended.attempt)}: {ended.outcome.value}: {ended.detail}; {still}"),
    )


def _shutdown(
    task: TaskRow, siblings: list[AttemptView], attempts: Sequence[AttemptView], ended: Ended, *_: object
) -> tuple[Instruction, ...] | None:
    if ended.outcome is not Outcome.KILLED or ended.stop is not Stop.SHUTDOWN:
        return None
    cause = "runner stopped; runs again on resume"
    return (
        _recorded(ended, False, cause),
        Requeue(f"{_label(ended.attempt)}: {cause}"),
    )


def _cancelled(
    task: TaskRow, siblings: list[AttemptView], attempts: Sequence[AttemptView], ended: Ended, *_: object
) -> tuple[Instruction, ...] | None:
    if ended.outcome is not Outcome.KILLED:
        return None
    return (
        _recorded(ended, False, "task cancelled"),
        Cancel("cancelled"),
    )


def _retry_or_fail(
    task: TaskRow,
    siblings: list[AttemptView],
    attempts: Sequence[AttemptView],
    ended: Ended,
    policy: Policy,
    now: float,
    draw: float,
) -> tuple[Instruction, ...]:
    counted = ended.outcome.counts
    failures = task.failures + int(counted)
    decision = decide(
        policy, ended.outcome, task.attempts, failures, task.memory, now, draw, ended.oom, ended.exit_code
    )
    said = f"{ended.detail}; {decision.reason}"
    if decision.retry:
        record = Record(
            ended.attempt.id, ended.outcome, ended.detail, AttemptState.RECORDED, counted, decision.reason
        )
        return (record, Retry(decision, failures, ended.detail, f"{_label(ended.attempt)}: {said}"))
    return (
        Record(
            ended.attempt.id, ended.outcome, ended.detail, AttemptState.RECORDED, counted, "the task failed"
        ),
        Fail(decision, failures, said, f"{_label(ended.attempt)}: {said}"),
    )


_RULES: tuple[_Rule, ...] = (
    _already_finished,
    _succeeded,
    _sibling_live,
    _shutdown,
    _cancelled,
    _retry_or_fail,
)
