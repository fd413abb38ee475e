"""The report's digest: suggested requests from peaks and durations, and the bounds that
keep a large run's report small without dropping a task that failed. Pure: view models in."""

from __future__ import annotations

from array import array

from labrun.model import Runtime
from labrun.states import Outcome, TaskState
from labrun.views.digest import DRAWN, LISTED, MIB, Digest, p95
from labrun.views.model import AttemptView, TaskView


def attempt(n: int, outcome: Outcome, peak: int, limit: int, seconds: float = 60.0) -> AttemptView:
    return AttemptView(
        n, outcome, 0, None, "local", Runtime.CGROUP, None, 100.0, 100.0 + seconds, limit, peak,
        seconds, 0, (), None,
    )  # fmt: skip


def task(i: int, state: TaskState, *attempts: AttemptView, spec: str = "t") -> TaskView:
    return TaskView(f"{spec}[{i}]", i + 1, spec, str(i), state, None, 0, 0.0, attempts)


def test_p95_is_the_nearest_rank() -> None:
    assert p95(array("q")) is None
    assert p95(array("q", range(1, 101))) == 95.0
    assert p95(array("q", [7])) == 7.0


def test_suggested_memory_is_p95_of_peaks_plus_20_percent_and_timeout_from_durations() -> None:
    d = Digest()
    for i in range(100):  # peaks 1..100 MiB, durations 1..100 min
        d.add(
            task(
                i,
                TaskState.SUCCEEDED,
                attempt(1, Outcome.SUCCEEDED, (i + 1) * MIB, 512 * MIB, 60.0 * (i + 1)),
            )
        )
    (s,) = d.suggestions()
    assert (s.spec, s.attempts, s.memory_now) == ("t", 100, 512 * MIB)
    assert s.peak_p95 == 95 * MIB and s.memory == 114 * MIB  # 95 MiB * 1.2
    assert s.seconds_p95 == 95 * 60 and s.timeout == 143 * 60  # 95 min * 1.5 = 142.5, up to 143


def test_an_oom_killed_spec_is_suggested_more_than_the_limit_it_hit() -> None:
    d = Digest()
    d.add(task(0, TaskState.FAILED, attempt(1, Outcome.OOM, 100 * MIB, 100 * MIB)))
    (s,) = d.suggestions()
    assert s.ooms == 1 and s.memory == 120 * MIB and s.timeout is None  # nothing succeeded: no time


def test_after_an_oom_and_a_grown_retry_the_suggestion_follows_the_retrys_peak() -> None:
    d = Digest()
    killed = attempt(1, Outcome.OOM, 100 * MIB, 100 * MIB)
    d.add(task(0, TaskState.SUCCEEDED, killed, attempt(2, Outcome.SUCCEEDED, 300 * MIB, 400 * MIB)))
    (s,) = d.suggestions()
    assert s.memory_now == 400 * MIB and s.memory == 360 * MIB  # 300 MiB * 1.2, not 400 * 1.2


def test_every_failed_task_is_kept_and_succeeded_ones_are_bounded() -> None:
    total = 3 * DRAWN
    d = Digest.for_run(total)
    for i in range(total):
        d.add(task(i, TaskState.SUCCEEDED, attempt(1, Outcome.SUCCEEDED, MIB, MIB)))
    for i in range(total, total + 500):
        d.add(
            task(i, TaskState.FAILED, attempt(1, Outcome.OOM, MIB, MIB), attempt(2, Outcome.FAILED, MIB, MIB))
        )
    assert len(d.problems) == 500 and len(d.listed) == LISTED and d.unlisted == total - LISTED
    failed_bars = [b for b in d.bars if b.outcome != "succeeded"]
    assert len(failed_bars) == 1000  # every attempt of a failed task is drawn
    assert len(d.bars) - 1000 <= DRAWN and d.undrawn == total - (len(d.bars) - 1000)
    assert d.outcomes == {"succeeded": total, "oom": 500, "failed": 500}


def test_tasks_that_did_not_finish_are_bounded_failed_ones_never() -> None:
    d = Digest()
    for i in range(3 * LISTED):
        d.add(task(i, TaskState.SKIPPED))
    d.add(task(3 * LISTED, TaskState.FAILED, attempt(1, Outcome.FAILED, MIB, MIB)))
    assert d.unfinished == 3 * LISTED and d.unfinished_unlisted == 2 * LISTED
    assert len(d.problems) == LISTED + 1 and d.problems[-1].state is TaskState.FAILED
