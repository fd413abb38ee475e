"""How much memory the attempt after an OOM kill gets. Pure: no I/O, no clock.

With `on_oom = "grow"` the next limit is the larger of `limit × memory_growth` and the
measured peak with a margin (a peak near the limit says little, the factor says more;
a peak above it, e.g. from a runtime that cannot enforce one, says exactly), rounded up
to whole MiB, capped by the largest node's memory and by `memory_max`. A task that was
already killed at the cap cannot be helped by another try: it fails at once, saying how
much it needed and how much there is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from labrun.units import format_size

MiB = 1024 * 1024
PEAK_MARGIN = 1.2


@dataclass(frozen=True)
class OomPolicy:
    """The task's OOM settings and where it could run."""

    on_oom: str  # "grow" | "retry" | "fail"
    growth: float
    memory_max: int | None
    node_max: int  # memory of the largest node that offers the task's runtime
    node_name: str = ""


@dataclass(frozen=True)
class OomAttempt:
    """What the retry decision needs to know about the OOM-killed attempt."""

    policy: OomPolicy
    limit: int  # the attempt's memory limit, bytes
    peak: int | None  # measured peak, when the runtime knows it


@dataclass(frozen=True)
class Growth:
    memory: int | None  # None: do not retry
    reason: str


def round_up(size: float, unit: int = MiB) -> int:
    return math.ceil(size / unit) * unit


def next_memory(oom: OomAttempt) -> Growth:
    policy, limit = oom.policy, oom.limit
    if policy.on_oom == "fail":
        return Growth(None, 'on_oom = "fail": not retried')
    if policy.on_oom == "retry":
        return Growth(limit, f"retry with the same {format_size(limit)}")
    cap = policy.node_max if policy.memory_max is None else min(policy.node_max, policy.memory_max)
    wanted = round_up(max(limit * policy.growth, (oom.peak or 0) * PEAK_MARGIN))
    if limit >= cap:
        return Growth(None, _give_up(oom, cap, wanted))
    new = min(wanted, cap)
    capped = " (capped)" if new < wanted else ""
    return Growth(new, f"memory {format_size(limit)} → {format_size(new)}{capped}")


def _give_up(oom: OomAttempt, cap: int, wanted: int) -> str:
    policy = oom.policy
    peak = f", peak {format_size(oom.peak)}" if oom.peak else ""
    node = f" ({policy.node_name})" if policy.node_name else ""
    text = (
        f"needs more than {format_size(oom.limit)} (killed for memory at that limit{peak}); "
        f"the largest node{node} has {format_size(policy.node_max)}"
    )
    if policy.memory_max is not None and policy.memory_max < policy.node_max:
        text += f" and memory_max is {format_size(policy.memory_max)}: raise memory_max"
    else:
        text += ": reduce the task's memory use or add a node with more memory"
    return text + f" (about {format_size(wanted)} would be the next try)"
