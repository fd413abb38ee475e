"""Time limits of an attempt, absolute or relative to its siblings: pure, no I/O.

`timeout = "300%"` stops an attempt running longer than 3x the median duration of the
succeeded attempts of tasks with the same name (GNU parallel's `--timeout 200%`), once
`relative_min` of them have succeeded; before that the limit is `timeout_floor`, or none.
The floor is also the least the relative limit can be, so a task whose siblings take
0.1 s is not stopped after 0.3 s when the job says a few seconds are normal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from labrun.units import format_duration


@dataclass(frozen=True)
class Limit:
    """An attempt's time limit and, for a relative one, the figures it came from."""

    seconds: float
    why: str = ""  # empty for an absolute `timeout`


def median(durations: Sequence[float]) -> float:
    """The median of sorted durations (the mean of the middle two for an even count)."""
    n = len(durations)
    if n == 0:
        raise ValueError("the median of no durations")
    mid = n // 2
    return durations[mid] if n % 2 else (durations[mid - 1] + durations[mid]) / 2


def relative_limit(
    factor: float, durations: Sequence[float], relative_min: int, floor: float | None, task: str
) -> Limit | None:
    """The limit `factor` x the median of `durations` (sorted, of succeeded attempts of
    task `task`) gives; `floor` (or no limit) while fewer than `relative_min` succeeded."""
    count = len(durations)
    if count < relative_min or count == 0:
        if floor is None:
            return None
        why = (
            f"timeout_floor {format_duration(floor)}: {count} of the {relative_min} succeeded "
            f"attempts of task {task} a relative limit needs"
        )
        return Limit(floor, why)
    mid = median(durations)
    seconds = factor * mid
    why = (
        f"{factor * 100:g}% of the median {format_duration(mid)} of {count} succeeded attempts "
        f"of task {task} = {format_duration(seconds)}"
    )
    if floor is not None and floor > seconds:
        return Limit(floor, f"{why}, raised to timeout_floor {format_duration(floor)}")
    return Limit(seconds, why)
