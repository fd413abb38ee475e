"""`labrun run --rerun-failed JOB`: run only what did not succeed in the job's latest finished run.

A rerun is a new run linked to the old one (`rerun_of`), made from the job file as it is
written now (the fix is usually there). Each task that succeeded in the old run — the
same name *and* the same item — is carried over `succeeded` and never runs again, unless
it depends (transitively) on a task that runs again; every other task runs, starting
with the memory the old run had grown it to after OOM kills.
The old run's `{shared}` directory moves to the new run and the old path becomes a link
to it, so manifests and partial results are found where they were.

`plan` is pure; `adopt_shared` does the one filesystem move and is safe to repeat.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from labrun import private
from labrun.config.job import JobSpec
from labrun.config.schema import FromItems
from labrun.deps import upstream_map
from labrun.paths import StatePaths
from labrun.rows import TaskRow
from labrun.states import TaskState
from labrun.store import NewTask

NOT_SUCCEEDED = (TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED)


@dataclass(frozen=True)
class RerunPlan:
    rows: list[NewTask]
    carried: int  # tasks that succeeded before and do not run again
    to_run: int


def plan(job: JobSpec, fresh: Iterable[NewTask], old_tasks: Iterable[TaskRow]) -> RerunPlan:
    """The new run's rows: `fresh` (the job's instances now) with what succeeded carried over.

    Tasks of a fan-out over a task's list (task 0's manifest, `items = { from = ... }`)
    exist only once that task succeeded: when it is carried, its fan-out rows come from
    the old run, since it will not run again to make them."""
    old = {t.name: t for t in old_tasks}
    rows = [_row(old.get(row[1]), row) for row in fresh]
    fanned = {s.name: s for s in job.tasks if isinstance(s.items, FromItems)}
    carried_sources = {
        name for name, s in fanned.items() if isinstance(s.items, FromItems) and _carried(rows, s.items.task)
    }
    seq = max((r[0] for r in rows), default=0)
    for task in _in_order(old.values()):
        if task.spec in carried_sources:
            seq += 1
            memory = fanned[task.spec].memory
            rows.append(
                _row(task, (seq, task.name, task.spec, task.item, task.idx, TaskState.WAITING, memory))
            )
    rows = _rerun_downstream(job, rows)
    carried = sum(row[5] is TaskState.SUCCEEDED for row in rows)
    return RerunPlan(rows, carried, len(rows) - carried)


def _rerun_downstream(job: JobSpec, rows: list[NewTask]) -> list[NewTask]:
    """A task downstream of one that runs again ran on results that change: it runs too
    (an `allow_failed` aggregate over a sweep whose failed items now run, say)."""
    graph = upstream_map(((s.name, s.depends_on) for s in job.all_tasks), has_setup=job.setup is not None)
    running = {row[2] for row in rows if row[5] is not TaskState.SUCCEEDED}
    stale: set[str] = set()  # specs downstream of one that runs (its siblings stay carried)
    changed = True
    while changed:
        changed = False
        for spec, ups in graph.items():
            if spec not in stale and (running | stale).intersection(ups):
                stale.add(spec)
                changed = True
    again = TaskState.WAITING
    return [
        (*row[:5], again, row[6]) if row[5] is TaskState.SUCCEEDED and row[2] in stale else row
        for row in rows
    ]


def _carried(rows: list[NewTask], source: str) -> bool:
    return any(row[1] == source and row[5] is TaskState.SUCCEEDED for row in rows)


def _row(before: TaskRow | None, row: NewTask) -> NewTask:
    seq, name, spec, item, idx, state, memory = row
    if before is None or before.item != item:
        return row  # new, or a different item under the same name: it runs
    if before.state is TaskState.SUCCEEDED:
        return (seq, name, spec, item, idx, TaskState.SUCCEEDED, before.memory)
    return (seq, name, spec, item, idx, state, max(memory, before.memory))  # keeps grown memory


def _in_order(tasks: Iterable[TaskRow]) -> Iterator[TaskRow]:
    return iter(sorted(tasks, key=lambda t: t.seq))


def adopt_shared(paths: StatePaths, old_run: int, new_run: int) -> None:
    """Move the old run's {shared} to the new run, leaving a link at the old path."""
    old, new = paths.shared_dir(old_run), paths.shared_dir(new_run)
    if os.path.lexists(new) or not os.path.isdir(old) or os.path.islink(old):
        return  # done already (a resumed rerun), or nothing to move
    private.makedirs(os.path.dirname(new))
    os.rename(old, new)
    os.symlink(os.path.relpath(new, os.path.dirname(old)), old)
