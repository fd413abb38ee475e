"""Memory learned across runs: a task starts with what it needed last time.

A task (each item of a fan-out: matched by task name in the job file and item value,
never by index, so a reordered grid keeps its lessons) that peaked at P in the newest of
the job's last few runs where it was measured starts at max(requested, P x 1.2), rounded
up to MiB, capped by `memory_max` and the largest node; never below what the job asks.
`learn_memory = false` turns it off for a task. `learn` is pure; `Learner` reads the
peaks once, from an indexed query over the job's `LEARN_RUNS` latest runs only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from labrun.config.job import JobSpec, TaskSpec
from labrun.memory import PEAK_MARGIN, round_up
from labrun.store import NewTask, Store
from labrun.units import format_size

LEARN_RUNS = 3  # earlier runs read: the lesson of a recent run, at a bounded cost


@dataclass(frozen=True)
class Peak:
    run_id: int
    peak: int  # bytes: the largest measured peak of the task's attempts in that run


def learn(spec: TaskSpec, requested: int, peak: Peak | None, node_max: int) -> tuple[int, str]:
    """The memory a task starts with, and the cause when it is more than `requested`."""
    if peak is None or not spec.learn_memory:
        return requested, ""
    caps = [c for c in (spec.memory_max, node_max or None) if c is not None]
    wanted = round_up(peak.peak * PEAK_MARGIN)
    memory = max(requested, min([wanted, *caps]))
    if memory <= requested:
        return requested, ""
    capped = " (capped)" if memory < wanted else ""
    peaked = f"peaked at {format_size(peak.peak)} in run {peak.run_id}"
    return memory, f"memory {format_size(memory)} learned{capped}: {peaked}"


class Learner:
    """Applies `learn` to the rows of a new run (or of a fan-out made during one)."""

    def __init__(self, store: Store, job: JobSpec, before_run: int, node_max: int) -> None:
        self.store, self.job, self.before_run, self.node_max = store, job, before_run, node_max
        self._peaks: dict[tuple[str, str | None], Peak] | None = None

    def peaks(self) -> dict[tuple[str, str | None], Peak]:
        if self._peaks is None:
            learning = [s for s in self.job.all_tasks if s.learn_memory]
            self._peaks = {}
            if learning:
                # only peaks that could raise the least requested memory come back
                above = int(min(s.memory for s in learning) / PEAK_MARGIN)
                rows = self.store.peaks(self.job.name, self.before_run, LEARN_RUNS, above)
                for run_id, spec, item, peak in rows:  # newest run first: the last lesson wins
                    self._peaks.setdefault((spec, item), Peak(run_id, peak))
        return self._peaks

    def apply(self, rows: Iterable[NewTask], notes: list[tuple[str, str]]) -> Iterator[NewTask]:
        """The rows with learned memory, streamed (a run may hold 100,000 tasks); appends
        (task name, cause) to `notes` for each one that changed."""
        specs = {s.name: s for s in self.job.all_tasks}
        for row in rows:
            seq, name, spec_name, item, idx, state, memory = row
            spec = specs.get(spec_name)
            if spec is None or state.terminal or not self.peaks():
                yield row
                continue
            learned, cause = learn(spec, memory, self.peaks().get((spec_name, item)), self.node_max)
            yield (seq, name, spec_name, item, idx, state, learned)
            if cause:
                notes.append((name, cause))


def node_max(memories: Sequence[int]) -> int:
    """The largest node's memory; 0 when no node says (an SSH node not probed yet)."""
    return max(memories, default=0)
