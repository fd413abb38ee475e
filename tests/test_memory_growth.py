"""The memory of the attempt after an OOM kill (labrun.memory) and its use in retry.decide."""

from __future__ import annotations

from labrun.memory import MiB, OomAttempt, OomPolicy, next_memory
from labrun.retry import Policy, decide
from labrun.states import Outcome

GiB = 1024 * MiB


def oom(limit: int, peak: int | None = None, **policy: object) -> OomAttempt:
    values: dict[str, object] = {"on_oom": "grow", "growth": 2.0, "memory_max": None, "node_max": 8 * GiB}
    values.update(policy)
    return OomAttempt(OomPolicy(**values, node_name="big"), limit, peak)  # type: ignore[arg-type]


def test_grows_by_the_factor() -> None:
    assert next_memory(oom(100 * MiB, 100 * MiB)).memory == 200 * MiB


def test_a_peak_above_the_limit_wins_with_margin_rounded_up_to_mib() -> None:
    grown = next_memory(oom(100 * MiB, 300_000_000)).memory
    assert grown == 344 * MiB  # 300 MB × 1.2 = 343.3 MiB, rounded up
    assert grown is not None and grown % MiB == 0


def test_capped_by_the_largest_node() -> None:
    grown = next_memory(oom(6 * GiB, 6 * GiB))
    assert grown.memory == 8 * GiB and "capped" in grown.reason


def test_capped_by_memory_max() -> None:
    assert next_memory(oom(1 * GiB, memory_max=1536 * MiB)).memory == 1536 * MiB


def test_gives_up_when_it_already_ran_at_the_node_cap() -> None:
    grown = next_memory(oom(8 * GiB, 8 * GiB))
    assert grown.memory is None
    assert "needs more than 8.0GiB" in grown.reason
    assert "the largest node (big) has 8.0GiB" in grown.reason


def test_gives_up_at_memory_max_and_names_it() -> None:
    grown = next_memory(oom(2 * GiB, memory_max=2 * GiB))
    assert grown.memory is None
    assert "memory_max is 2.0GiB" in grown.reason and "raise memory_max" in grown.reason


def test_retry_keeps_the_memory_and_fail_stops() -> None:
    assert next_memory(oom(100 * MiB, on_oom="retry")).memory == 100 * MiB
    assert next_memory(oom(100 * MiB, on_oom="fail")).memory is None


POLICY = Policy(retries=3, retry_delay=10.0, retry_delay_max=600.0, attempt_cap=14)


def test_decide_retries_grown_memory_at_once() -> None:
    d = decide(POLICY, Outcome.OOM, 1, 1, 100 * MiB, 1000.0, 0.5, oom(100 * MiB, 100 * MiB))
    assert d.retry and d.counted
    assert d.memory == 200 * MiB and d.not_before == 1000.0
    assert "100.0MiB → 200.0MiB" in d.reason


def test_decide_retry_same_memory_backs_off() -> None:
    d = decide(POLICY, Outcome.OOM, 1, 1, 100 * MiB, 1000.0, 0.0, oom(100 * MiB, on_oom="retry"))
    assert d.retry and d.memory == 100 * MiB and d.not_before == 1005.0


def test_decide_gives_up_with_the_message() -> None:
    d = decide(POLICY, Outcome.OOM, 2, 2, 8 * GiB, 1000.0, 0.5, oom(8 * GiB))
    assert not d.retry and "needs more than 8.0GiB" in d.reason


def test_decide_on_oom_fail_does_not_retry() -> None:
    d = decide(POLICY, Outcome.OOM, 1, 1, 100 * MiB, 1000.0, 0.5, oom(100 * MiB, on_oom="fail"))
    assert not d.retry


def test_decide_grown_memory_still_spends_retries() -> None:
    d = decide(POLICY, Outcome.OOM, 4, 4, 100 * MiB, 1000.0, 0.5, oom(100 * MiB))
    assert not d.retry and "retries used" in d.reason
