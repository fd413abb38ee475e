"""Which running tasks get a speculative copy, and where: pure, no I/O, no clock.

A task running far longer than its siblings gets one more attempt on another node; the
first to succeed wins (`decisions.on_end` supersedes the other). The rules, with the
field's defaults (Hadoop, Spark, Tez) and the bugs they guard against:

- only once `min_succeeded` (5) attempts of the task name succeeded, so there is a median
  to compare with (no speculation at zero progress: TEZ-3317), and once `done_fraction`
  (90 %) of the tasks of that name finished; with fewer than 10 tasks that second rule
  would wait for the straggler itself, so the first rule alone applies;
- an attempt is a straggler past `factor` (3) x the median and past `after` (5 minutes);
- at most one extra attempt per task, and never for a task that is not running any more
  or has a success being recorded (TEZ-4062/4068): its live attempts are exactly one;
- at most max(1, 10 % of the running attempts) speculative attempts at once, and none
  while a ready task waits for capacity;
- never on the original's node while another node could hold the copy (TEZ-4042).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from labrun.units import format_duration

FEW_TASKS = 10  # below this, "90 % done" would wait for the straggler itself


@dataclass(frozen=True)
class Rules:
    """A task name's speculation settings (`speculate_after`; the rest are the defaults)."""

    after: float = 300.0
    factor: float = 3.0
    min_succeeded: int = 5
    done_fraction: float = 0.9
    share: float = 0.1  # of the running attempts that may be speculative at once


@dataclass(frozen=True)
class Figures:
    """What the run knows of a task name: its succeeded attempts and how far it got."""

    succeeded: int  # succeeded attempts
    median: float | None  # their median duration
    done: int  # tasks of that name in a terminal state
    total: int  # tasks of that name


@dataclass(frozen=True)
class Running:
    """One running task's only live attempt, as the runner sees it now."""

    task_id: int
    spec: str
    node: str
    elapsed: float
    live_attempts: int = 1  # of the task; a copy is asked for only while this is 1
    copied: bool = False  # a speculative attempt was already asked for this task
    task_running: bool = True  # False once the task succeeded, failed or was cancelled


@dataclass(frozen=True)
class Straggler:
    task_id: int
    node: str  # the original's
    why: str  # the figures: median, factor, elapsed, threshold


def threshold(rules: Rules, figures: Figures) -> float | None:
    """Elapsed time past which an attempt of this task name is a straggler; None while the
    name has too little history (or too little of it is done) to tell."""
    if figures.median is None or figures.succeeded < max(1, rules.min_succeeded):
        return None
    if figures.total >= FEW_TASKS and figures.done < math.ceil(rules.done_fraction * figures.total - 1e-9):
        return None
    return max(rules.factor * figures.median, rules.after)


def stragglers(
    running: Sequence[Running],
    figures: Mapping[str, Figures],
    rules: Mapping[str, Rules],
    attempts_running: int,
    speculative_now: int,
    ready_waiting: bool,
) -> list[Straggler]:
    """The tasks that get a speculative attempt now, the most overdue first. `rules` holds
    only the task names with `speculate = true`."""
    if ready_waiting or not running:
        return []
    room = max(1, int(rules_share(rules) * attempts_running)) - speculative_now
    found: list[tuple[float, Straggler]] = []
    for r in running:
        rule, fig = rules.get(r.spec), figures.get(r.spec)
        if rule is None or fig is None or r.copied or r.live_attempts != 1 or not r.task_running:
            continue
        limit = threshold(rule, fig)
        if limit is None or r.elapsed <= limit:
            continue
        assert fig.median is not None
        why = (
            f"speculative: attempt running {format_duration(r.elapsed)}, past {format_duration(limit)} "
            f"(the larger of {rule.factor:g}x the median {format_duration(fig.median)} of {fig.succeeded} "
            f"succeeded attempts and speculate_after {format_duration(rule.after)}); "
            f"{fig.done} of {fig.total} tasks {r.spec} done"
        )
        found.append((r.elapsed / limit, Straggler(r.task_id, r.node, why)))
    found.sort(key=lambda pair: -pair[0])
    return [s for _, s in found[: max(0, room)]]


def rules_share(rules: Mapping[str, Rules]) -> float:
    """The share of running attempts that may be speculative: the largest any name allows."""
    return max((r.share for r in rules.values()), default=0.0)


def choose_node(original: str, free: Sequence[str], able: Sequence[str]) -> str | None:
    """Where the copy goes: a node with room now other than the original's; the original's
    only when no other node could ever hold it; None: wait for room."""
    others = [n for n in free if n != original]
    if others:
        return others[0]
    if any(n != original for n in able):
        return None
    return original if original in free else None
