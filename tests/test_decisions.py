"""The pure parts: outcome table, retry policy, scheduler."""

from __future__ import annotations

import signal

import pytest

from labrun.model import Facts
from labrun.outcome import Stop, classify
from labrun.retry import Policy, backoff, decide
from labrun.scheduler import Demand, NodeCapacity, place
from labrun.states import Outcome


def facts(code: int | None = 0, sig: int | None = None, **kw: object) -> Facts:
    return Facts(code, sig, 0.0, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("f", "stop", "expected"),
    [
        (facts(0), None, Outcome.SUCCEEDED),
        (facts(1), None, Outcome.FAILED),
        (facts(None, signal.SIGKILL), None, Outcome.FAILED),  # a SIGKILL from elsewhere is not oom
        (facts(127), None, Outcome.CONFIG_ERROR),
        (facts(126), None, Outcome.CONFIG_ERROR),
        (facts(None, start_error="command not found: x"), None, Outcome.CONFIG_ERROR),
        (facts(None, signal.SIGTERM), Stop.TIMEOUT, Outcome.TIMEOUT),
        (facts(None, signal.SIGTERM), Stop.SHUTDOWN, Outcome.KILLED),
        (facts(0, oom_kills=1), None, Outcome.OOM),  # a child OOM while the main exits 0
        (facts(137, oom_killed=True), None, Outcome.OOM),
        (facts(0, missing_outputs=("/x",)), None, Outcome.NO_OUTPUT),
        (facts(None, lost=True), None, Outcome.LOST),
    ],
)
def test_outcome_table(f: Facts, stop: Stop | None, expected: Outcome) -> None:
    assert classify(f, stop, 60.0)[0] is expected


POLICY = Policy(retries=2, retry_delay=10.0, retry_delay_max=25.0, attempt_cap=5)


def test_counted_failures_back_off_then_give_up() -> None:
    first = decide(POLICY, Outcome.FAILED, attempts=1, failures=1, memory=1, now=100.0, jitter=0.0)
    assert first.retry and first.counted and first.not_before == pytest.approx(105.0)
    second = decide(POLICY, Outcome.FAILED, attempts=2, failures=2, memory=1, now=100.0, jitter=0.999)
    assert second.retry and 119.0 < second.not_before <= 120.0
    third = decide(POLICY, Outcome.TIMEOUT, attempts=3, failures=3, memory=1, now=100.0, jitter=0.5)
    assert not third.retry and "all 2 retries used" in third.reason


def test_backoff_is_capped() -> None:
    assert backoff(POLICY, 10, 0.999) <= 25.0


def test_config_error_and_killed_are_not_retried_and_lost_is_free() -> None:
    assert not decide(POLICY, Outcome.CONFIG_ERROR, 1, 1, 1, 0.0, 0.0).retry
    killed = decide(POLICY, Outcome.KILLED, 1, 0, 1, 0.0, 0.0)
    assert not killed.retry and not killed.counted
    lost = decide(POLICY, Outcome.LOST, 1, 0, 1, 50.0, 0.0)
    assert lost.retry and not lost.counted and lost.not_before == 50.0
    capped = decide(POLICY, Outcome.LOST, 5, 0, 1, 50.0, 0.0)
    assert not capped.retry and "cap of 5" in capped.reason


def test_scheduler_never_overcommits_and_respects_slots() -> None:
    node = NodeCapacity("local", cpus=2, memory=4096)
    ready = [Demand(i, 1, 1024) for i in range(5)]
    assert [p.task_id for p in place(ready, [node], slots=10).placements] == [0, 1]
    assert len(place(ready, [node], slots=1).placements) == 1
    busy = NodeCapacity("local", cpus=2, memory=4096, cpus_used=1.5)
    assert place(ready, [busy], slots=10).placements == ()


def test_a_big_task_is_not_starved_by_small_ones_behind_it() -> None:
    node = NodeCapacity("local", cpus=4, memory=4096, cpus_used=2)
    ready = [Demand(1, 4, 1024), Demand(2, 1, 1024), Demand(3, 1, 1024)]
    # the 4-cpu task waits for the node to drain; the small ones may not take its place
    assert place(ready, [node], slots=10).placements == ()


def test_never_fits_and_spreading() -> None:
    nodes = [NodeCapacity("a", 4, 4096, cpus_used=3), NodeCapacity("b", 4, 4096)]
    plan = place([Demand(1, 1, 1024), Demand(2, 64, 1024)], nodes, slots=10)
    assert [p.node for p in plan.placements] == ["b"]
    assert plan.never_fits == (2,)
