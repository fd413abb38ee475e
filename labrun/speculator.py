"""The runner's side of speculation: the figures `speculation.stragglers` decides on.

Costs nothing for a job without `speculate = true`. Otherwise, per tick, a pass over the
attempts in flight against figures held in memory (`Durations`); the per-name task counts
("90 % done") are read from the store only when some attempt is already past its
threshold, which is rare and at most once per tick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from labrun.config.job import TaskSpec
from labrun.durations import Durations
from labrun.limits import median
from labrun.speculation import Figures, Rules, Running, Straggler, stragglers, threshold


@dataclass(frozen=True)
class InFlight:
    """One attempt in flight, as the runner holds it."""

    task_id: int
    spec: str
    node: str
    started: float
    live_attempts: int  # of its task
    task_running: bool


class Speculator:
    def __init__(self, specs: Iterable[TaskSpec], durations: Durations) -> None:
        self.rules: Mapping[str, Rules] = {
            s.name: Rules(after=s.speculate_after) for s in specs if s.speculate
        }
        self.durations = durations
        self.copied: set[int] = set()  # tasks a copy was asked for in this runner's life

    def _figures(self, spec: str, done: int, total: int) -> Figures | None:
        durations = self.durations.of(spec)
        return Figures(len(durations), median(durations), done, total) if durations else None

    def due(
        self,
        flights: Iterable[InFlight],
        now: float,
        ready_waiting: bool,
        counts: Callable[[], Mapping[str, tuple[int, int]]],
    ) -> list[Straggler]:
        """The tasks that get a copy now; `counts` reads (done, total) per task name."""
        if not self.rules:
            return []
        flights = list(flights)
        running = [self._running(f, now) for f in flights if f.spec in self.rules]
        # first as if every task of the name were done: the cheap filter
        hopeful = {s: f for s in self.rules if (f := self._figures(s, 1, 1)) is not None}
        if not stragglers(running, hopeful, self.rules, len(flights), 0, ready_waiting):
            return []
        figures = {s: f for s, (done, total) in counts().items() if (f := self._figures(s, done, total))}
        speculative = sum(1 for f in flights if f.live_attempts > 1) // 2
        found = stragglers(running, figures, self.rules, len(flights), speculative, ready_waiting)
        self.copied.update(s.task_id for s in found)
        return found

    def _running(self, f: InFlight, now: float) -> Running:
        copied = f.task_id in self.copied
        return Running(f.task_id, f.spec, f.node, now - f.started, f.live_attempts, copied, f.task_running)

    def next_check(self, flights: Iterable[InFlight]) -> float | None:
        """When the first attempt in flight crosses its straggler threshold (None: never)."""
        times = []
        for f in flights:
            rule = self.rules.get(f.spec)
            fig = self._figures(f.spec, 1, 1) if rule is not None else None
            limit = threshold(rule, fig) if rule is not None and fig is not None else None
            if limit is not None and f.live_attempts == 1 and f.task_id not in self.copied:
                times.append(f.started + limit + 0.001)
        return min(times, default=None)
