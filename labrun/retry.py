"""Whether an ended attempt is tried again, when, and with how much memory. Pure.

Counted outcomes (the task's own fault) spend the `retries` budget and back off
exponentially with jitter; system faults (`lost`) are retried at once and do not count;
`config_error` is never retried because retrying cannot help, nor is a failure whose exit
code the task lists in `no_retry_exit` (a deterministic error: the same input fails again).
A cap on all attempts, counted or not, keeps a flapping node from looping forever.
"""

from __future__ import annotations

from dataclasses import dataclass

from labrun.memory import OomAttempt, next_memory
from labrun.states import Outcome


@dataclass(frozen=True)
class Policy:
    retries: int
    retry_delay: float
    retry_delay_max: float
    attempt_cap: int
    no_retry_exit: tuple[int, ...] = ()  # exit codes that fail at once: retrying cannot help


@dataclass(frozen=True)
class Decision:
    retry: bool
    not_before: float = 0.0
    memory: int = 0
    counted: bool = False  # whether this attempt spent one of the task's retries
    reason: str = ""


def backoff(policy: Policy, failures: int, jitter: float) -> float:
    """Delay before the retry after the `failures`-th counted failure; jitter is in [0, 1)."""
    exponent = min(max(failures - 1, 0), 60)
    delay = min(policy.retry_delay_max, policy.retry_delay * float(2**exponent))
    return delay * (0.5 + 0.5 * jitter)  # "equal jitter": never less than half the delay


def decide(
    policy: Policy,
    outcome: Outcome,
    attempts: int,
    failures: int,
    memory: int,
    now: float,
    jitter: float,
    oom: OomAttempt | None = None,
    exit_code: int | None = None,
) -> Decision:
    """`attempts` and `failures` include the attempt that just ended.

    `oom`: the OOM-killed attempt's limit, peak and the task's OOM policy; with it an
    `oom` outcome is retried with the memory `memory.next_memory` decides, at once when
    the memory grew (waiting would not help), or not at all.
    """
    counted = outcome.counts
    grown, wait = "", True
    if outcome is Outcome.OOM and oom is not None:
        growth = next_memory(oom)
        if growth.memory is None:
            return Decision(False, memory=memory, counted=True, reason=growth.reason)
        grown = f"; {growth.reason}"
        wait = growth.memory <= memory
        memory = growth.memory
    if outcome is Outcome.SUCCEEDED:
        return Decision(False, memory=memory, reason="succeeded")
    if outcome is Outcome.CONFIG_ERROR:
        return Decision(False, memory=memory, counted=True, reason="cannot start; retrying cannot help")
    if outcome is Outcome.FAILED and exit_code is not None and exit_code in policy.no_retry_exit:
        return Decision(
            False, memory=memory, counted=True, reason=f"exit {exit_code} is in no_retry_exit: not retried"
        )
    if outcome is Outcome.KILLED:
        return Decision(False, memory=memory, reason="stopped by labrun")
    if outcome is Outcome.SUPERSEDED:
        return Decision(False, memory=memory, reason="another attempt succeeded first")
    if attempts >= policy.attempt_cap:
        return Decision(
            False,
            memory=memory,
            counted=counted,
            reason=f"reached the cap of {policy.attempt_cap} attempts",
        )
    if not counted:
        return Decision(True, not_before=now, memory=memory, reason=f"{outcome.value}: not counted")
    if failures > policy.retries:
        used = "not retried (retries = 0)" if policy.retries == 0 else f"all {policy.retries} retries used"
        return Decision(False, memory=memory, counted=True, reason=used)
    delay = backoff(policy, failures, jitter) if wait else 0.0
    left = policy.retries - failures
    return Decision(
        True,
        not_before=now + delay,
        memory=memory,
        counted=True,
        reason=f"{outcome.value}: retry in {delay:.1f}s ({left} retries left after it){grown}",
    )
