"""`decisions.on_end` as a pure function: one row per situation, instructions compared whole."""

from __future__ import annotations

from dataclasses import replace

import pytest

from labrun.decisions import (
    AttemptView,
    Cancel,
    Ended,
    Fail,
    Instruction,
    Record,
    Requeue,
    Retry,
    Succeed,
    Supersede,
    Wait,
    on_end,
)
from labrun.memory import MiB, OomAttempt, OomPolicy
from labrun.outcome import Stop
from labrun.retry import Decision, Policy
from labrun.rows import TaskRow
from labrun.states import AttemptState, Outcome, TaskState

POLICY = Policy(retries=2, retry_delay=10.0, retry_delay_max=60.0, attempt_cap=5)
TASK = TaskRow(7, 1, 1, "t[0]", "t", "a", 0, TaskState.RUNNING, 0.0, 2, 0, 100 * MiB, None)

A1 = AttemptView(11, 1, "local", AttemptState.RUNNING)
A2 = AttemptView(12, 2, "gpu1", AttemptState.RUNNING)
WON = replace(A2, state=AttemptState.RECORDED, outcome=Outcome.SUCCEEDED)


def rec(a: AttemptView, outcome: Outcome, detail: str, cause: str, counted: bool = False) -> Record:
    return Record(a.id, outcome, detail, AttemptState.RECORDED, counted, cause)


CASES: list[tuple[str, TaskRow, list[AttemptView], Ended, tuple[Instruction, ...]]] = [
    (
        "success: the task succeeds and the live sibling is superseded",
        TASK,
        [A1, A2],
        Ended(A2, Outcome.SUCCEEDED, "exited 0"),
        (
            rec(A2, Outcome.SUCCEEDED, "exited 0", "the task succeeded"),
            Succeed("attempt 2 on gpu1: succeeded: exited 0"),
            Supersede((11,), "attempt 2 succeeded first"),
        ),
    ),
    (
        "a lone success: nothing to supersede",
        TASK,
        [A1],
        Ended(A1, Outcome.SUCCEEDED, "exited 0"),
        (
            rec(A1, Outcome.SUCCEEDED, "exited 0", "the task succeeded"),
            Succeed("attempt 1 on local: succeeded: exited 0"),
        ),
    ),
    (
        "the loser ends after its sibling won: superseded, not counted",
        replace(TASK, state=TaskState.SUCCEEDED),
        [A1, WON],
        Ended(
            A1,
            Outcome.SUPERSEDED,
            "stopped by labrun: another attempt succeeded first (killed by SIGTERM)",
            Stop.SUPERSEDE,
        ),
        (
            Record(
                11,
                Outcome.SUPERSEDED,
                "stopped by labrun: another attempt succeeded first (killed by SIGTERM)",
                AttemptState.SUPERSEDED,
                False,
                "superseded: attempt 2 succeeded first",
            ),
        ),
    ),
    (
        "the loser failed on its own after the win: still superseded, not a failure",
        replace(TASK, state=TaskState.SUCCEEDED),
        [A1, WON],
        Ended(A1, Outcome.FAILED, "exited 1"),
        (
            Record(
                11,
                Outcome.SUPERSEDED,
                "failed after attempt 2 had succeeded (exited 1); not counted",
                AttemptState.SUPERSEDED,
                False,
                "superseded: attempt 2 succeeded first",
            ),
        ),
    ),
    (
        "lost beside a live sibling: the task keeps running, nothing counted",
        TASK,
        [A1, A2],
        Ended(A1, Outcome.LOST, "node went away"),
        (
            rec(A1, Outcome.LOST, "node went away", "attempt 2 is still running"),
            Wait(0, "attempt 1 on local: lost: node went away; attempt 2 is still running"),
        ),
    ),
    (
        "killed at shutdown beside a live sibling: the task stays running until that one ends",
        TASK,
        [A1, A2],
        Ended(A1, Outcome.KILLED, "stopped by labrun (killed by SIGTERM)", Stop.SHUTDOWN),
        (
            rec(A1, Outcome.KILLED, "stopped by labrun (killed by SIGTERM)", "attempt 2 is still running"),
            Wait(
                0,
                "attempt 1 on local: killed: stopped by labrun (killed by SIGTERM);"
                " attempt 2 is still running",
            ),
        ),
    ),
    (
        "a counted failure beside a live sibling: counted, the task keeps running",
        TASK,
        [A1, A2],
        Ended(A1, Outcome.FAILED, "exited 3"),
        (
            rec(A1, Outcome.FAILED, "exited 3", "counted; attempt 2 is still running", counted=True),
            Wait(1, "attempt 1 on local: failed: exited 3; attempt 2 is still running"),
        ),
    ),
    (
        "killed at shutdown: ready again for the resume, not counted",
        replace(TASK, attempts=1),
        [A1],
        Ended(A1, Outcome.KILLED, "stopped by labrun (killed by SIGTERM)", Stop.SHUTDOWN),
        (
            rec(
                A1,
                Outcome.KILLED,
                "stopped by labrun (killed by SIGTERM)",
                "runner stopped; runs again on resume",
            ),
            Requeue("attempt 1 on local: runner stopped; runs again on resume"),
        ),
    ),
    (
        "killed by a cancel: the task is cancelled",
        replace(TASK, attempts=1),
        [A1],
        Ended(A1, Outcome.KILLED, "stopped by labrun (killed by SIGTERM)", Stop.CANCEL),
        (
            rec(A1, Outcome.KILLED, "stopped by labrun (killed by SIGTERM)", "task cancelled"),
            Cancel("cancelled"),
        ),
    ),
    (
        "a counted failure of the last attempt: retried after backoff",
        replace(TASK, attempts=1),
        [A1],
        Ended(A1, Outcome.FAILED, "exited 3"),
        (
            rec(
                A1,
                Outcome.FAILED,
                "exited 3",
                "failed: retry in 5.0s (1 retries left after it)",
                counted=True,
            ),
            Retry(
                Decision(True, 105.0, 100 * MiB, True, "failed: retry in 5.0s (1 retries left after it)"),
                1,
                "exited 3",
                "attempt 1 on local: exited 3; failed: retry in 5.0s (1 retries left after it)",
            ),
        ),
    ),
    (
        "retries used: the task fails with the reason",
        replace(TASK, attempts=3, failures=2),
        [A1],
        Ended(A1, Outcome.TIMEOUT, "ran past its 1m timeout and was stopped", Stop.TIMEOUT),
        (
            rec(
                A1,
                Outcome.TIMEOUT,
                "ran past its 1m timeout and was stopped",
                "the task failed",
                counted=True,
            ),
            Fail(
                Decision(False, 0.0, 100 * MiB, True, "all 2 retries used"),
                3,
                "ran past its 1m timeout and was stopped; all 2 retries used",
                "attempt 1 on local: ran past its 1m timeout and was stopped; all 2 retries used",
            ),
        ),
    ),
    (
        "lost as the last attempt: retried at once, not counted",
        replace(TASK, attempts=1),
        [A1],
        Ended(A1, Outcome.LOST, "node went away"),
        (
            rec(A1, Outcome.LOST, "node went away", "lost: not counted"),
            Retry(
                Decision(True, 100.0, 100 * MiB, False, "lost: not counted"),
                0,
                "node went away",
                "attempt 1 on local: node went away; lost: not counted",
            ),
        ),
    ),
]


@pytest.mark.parametrize(("name", "task", "attempts", "ended", "expected"), CASES, ids=[c[0] for c in CASES])
def test_on_end(
    name: str, task: TaskRow, attempts: list[AttemptView], ended: Ended, expected: tuple[Instruction, ...]
) -> None:
    assert on_end(task, attempts, ended, POLICY, now=100.0, draw=0.0) == expected


def test_oom_of_the_last_attempt_retries_at_once_with_more_memory() -> None:
    oom = OomAttempt(OomPolicy("grow", 2.0, None, 8 * 1024 * MiB), 100 * MiB, 90 * MiB)
    ended = Ended(A1, Outcome.OOM, "the kernel killed a process for memory (killed by SIGKILL)", oom=oom)
    record, retry = on_end(replace(TASK, attempts=1), [A1], ended, POLICY, now=100.0, draw=0.5)
    assert isinstance(record, Record) and record.counted
    assert (
        isinstance(retry, Retry) and retry.decision.memory == 200 * MiB and retry.decision.not_before == 100.0
    )


def test_same_inputs_same_instructions() -> None:
    """No hidden inputs: no clock, no randomness beyond `draw`."""
    ended = Ended(A1, Outcome.FAILED, "exited 1")
    task = replace(TASK, attempts=1)
    assert on_end(task, [A1], ended, POLICY, 50.0, 0.3) == on_end(task, [A1], ended, POLICY, 50.0, 0.3)
    assert on_end(task, [A1], ended, POLICY, 50.0, 0.3) != on_end(task, [A1], ended, POLICY, 50.0, 0.9)
