"""How long the succeeded attempts of each task name took in this run, kept in memory.

Read from the store once when the runner starts (a resume included) and added to as
attempts succeed, so a relative time limit (`limits.py`) or a speculation decision never
queries the store per tick.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from labrun.config.job import TaskSpec
from labrun.limits import Limit, relative_limit


class Durations:
    def __init__(self, succeeded: Iterable[tuple[str, float]] = ()) -> None:
        self._by_spec: dict[str, list[float]] = {}
        for spec, seconds in succeeded:
            self.add(spec, seconds)

    def add(self, spec: str, seconds: float) -> None:
        bisect.insort(self._by_spec.setdefault(spec, []), max(0.0, seconds))

    def of(self, spec: str) -> Sequence[float]:
        """The sorted durations of the succeeded attempts of tasks named `spec`."""
        return self._by_spec.get(spec, ())

    def limit(self, spec: TaskSpec) -> Limit | None:
        """The time limit an attempt of `spec` has now: its `timeout`, or the relative one."""
        if spec.timeout_factor is None:
            return Limit(spec.timeout) if spec.timeout else None
        return relative_limit(
            spec.timeout_factor, self.of(spec.name), spec.relative_min, spec.timeout_floor, spec.name
        )
