"""`labrun run --resume` after the job file was edited: what changed, and how the run follows.

The usual workflow is "fix and resume", so a resume runs the job as it is written now
(`--as-recorded` keeps the definition the run started with). Tasks are matched by name
(and a fan-out's tasks by name and item):

- a task that succeeded stays succeeded, whatever its new definition (start a new run to
  run it again); one whose item changed under its name is reported and kept as it ran;
- a task not yet succeeded runs as now written: its command, env, retries... are read
  from the new file when its next attempt starts; its item follows the new file; its
  memory is the new `memory` when that key changed (else what it had grown to);
- a task that is new (a new [[tasks]] entry, or more items) is added; a new fan-out over
  task 0's manifest is added at once when task 0 already succeeded;
- a task that disappeared is reported and left alone: not run (a waiting or ready one is
  skipped with a reason saying so), and it does not make the run fail: the run succeeds
  when every task still in the job succeeded. One that was running when the runner
  stopped cannot be left alone safely: the resume refuses (exit 2) and says what to do.

`compare` is pure; `expected_tasks` reads task 0's manifest; `apply` writes the plan
through a `Ledger`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from labrun.config.job import JobSpec, TaskSpec
from labrun.config.schema import FromItems
from labrun.expand import fanout_rows, instances
from labrun.ledger import Ledger
from labrun.paths import StatePaths
from labrun.rows import RunRow, TaskRow
from labrun.states import TaskState
from labrun.store import NewTask, Store
from labrun.unblock import fanned_from, manifest_lines

_COMPARED = tuple(f.name for f in dataclasses.fields(TaskSpec) if f.name != "name")


@dataclass
class EditPlan:
    added: list[str] = field(default_factory=list)  # spec names new in the file
    removed: list[str] = field(default_factory=list)  # spec names gone from the file
    changed: dict[str, list[str]] = field(default_factory=dict)  # spec -> keys that changed
    add: list[NewTask] = field(default_factory=list)
    retarget: list[tuple[TaskRow, str | None, int]] = field(default_factory=list)  # new item, memory
    drop: list[TaskRow] = field(default_factory=list)  # waiting/ready, no longer in the job
    gone: list[str] = field(default_factory=list)  # every task no longer in the job
    kept: list[str] = field(default_factory=list)  # succeeded with an item that changed since
    blocked: list[str] = field(default_factory=list)  # running, and no longer in the job

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.add or self.gone or self.retarget)

    def lines(self) -> list[str]:
        """What changed, one line each, for the user."""
        out = []
        if self.added:
            out.append(f"added: {', '.join(self.added)} ({len(self.add)} task(s) to run)")
        for spec, keys in self.changed.items():
            out.append(f"changed: {spec} ({', '.join(keys)}): its tasks not yet succeeded run as now written")
        if self.removed or self.gone:
            names = _few(self.gone)
            out.append(
                f"removed: {', '.join(self.removed) or 'items'} ({len(self.gone)} task(s): {names}): "
                "left alone, not run, not counted as failed"
            )
        if self.kept:
            out.append(f"succeeded before its item changed, kept as it ran: {_few(self.kept)}")
        return out


def _few(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def compare(
    recorded: JobSpec, now: JobSpec, rows: Iterable[TaskRow], expected: Iterable[NewTask], next_seq: int
) -> EditPlan:
    """`expected`: the tasks the job as now written makes (instances, and a fan-out over
    task 0's manifest when task 0 succeeded); `rows`: the run's tasks as they are."""
    old_specs = {s.name: s for s in recorded.all_tasks}
    new_specs = {s.name: s for s in now.all_tasks}
    plan = EditPlan()
    plan.added = [n for n in new_specs if n not in old_specs]
    plan.removed = [n for n in old_specs if n not in new_specs]
    for name, spec in new_specs.items():
        before = old_specs.get(name)
        if before is not None:
            keys = [k for k in _COMPARED if getattr(before, k) != getattr(spec, k)]
            if keys:
                plan.changed[name] = keys
    wanted = {row[1]: row for row in expected}
    for task in rows:
        row = wanted.pop(task.name, None)
        if row is None:
            _gone(plan, task)
        elif row[3] != task.item:
            _item_changed(plan, task, row)
        elif not task.state.terminal and task.state is not TaskState.RUNNING:
            memory = row[6] if "memory" in plan.changed.get(task.spec, []) else task.memory
            if memory != task.memory:
                plan.retarget.append((task, task.item, memory))
    for seq, (_, name, spec_name, item, idx, state, memory) in enumerate(wanted.values(), start=next_seq):
        plan.add.append((seq, name, spec_name, item, idx, state, memory))
    return plan


def _gone(plan: EditPlan, task: TaskRow) -> None:
    if task.state is TaskState.SUCCEEDED:
        return  # done; it stays in the run as it ran
    plan.gone.append(task.name)
    if task.state is TaskState.RUNNING:
        plan.blocked.append(task.name)
    elif not task.state.terminal:
        plan.drop.append(task)


def _item_changed(plan: EditPlan, task: TaskRow, row: NewTask) -> None:
    if task.state is TaskState.SUCCEEDED:
        plan.kept.append(f"{task.name} ({task.item})")
    elif task.state is TaskState.RUNNING:
        plan.blocked.append(task.name)
    else:
        plan.retarget.append((task, row[3], max(row[6], task.memory)))


def apply(store: Store, run_id: int, plan: EditPlan, file: str, text: str, now: float) -> None:
    """Write the plan: the run's recorded job becomes the file as now written."""
    ledger = Ledger(store, run_id)
    with ledger.tx():
        store.set_run_job(
            run_id, file, text, now, "job file edited; resumed as now written: " + "; ".join(plan.lines())
        )
        store.add_tasks(run_id, plan.add)
        for task, item, memory in plan.retarget:
            store.retarget_task(task, item, memory)
        for task in plan.drop:
            ledger.skip(task, "no longer in the job file: left alone, not run", now)


def excused(rows: Iterable[TaskRow], expected: Iterable[NewTask]) -> int:
    """Tasks no longer in the job that did not succeed: they do not fail the run."""
    names = {row[1] for row in expected}
    return sum(1 for t in rows if t.name not in names and t.state is not TaskState.SUCCEEDED)


def expected_tasks(paths: StatePaths, run: RunRow, job: JobSpec, rows: list[TaskRow]) -> list[NewTask]:
    """The tasks the job as now written makes in this run: its instances, and the fan-outs
    over a task's list (task 0's manifest, `items = { from = ... }`) once that task
    succeeded (as they are, if the list cannot be read now)."""
    out = list(instances(job))
    sources = {s.items.task for s in job.tasks if isinstance(s.items, FromItems)}
    for source in sorted(sources):
        out += _fanned_rows(paths, run, job, rows, source, max((row[0] for row in out), default=0))
    return out


def _fanned_rows(
    paths: StatePaths, run: RunRow, job: JobSpec, rows: list[TaskRow], source: str, seq: int
) -> list[NewTask]:
    fanned = fanned_from(job, source)
    done = next((t for t in rows if t.spec == source and t.name == source), None)
    if done is None or done.state is not TaskState.SUCCEEDED:
        names = {s.name for s in fanned}  # a fan-out never made has one row saying so
        unmade = [t for t in rows if t.spec in names and t.name == t.spec and t.idx is None]
        return [(t.seq, t.name, t.spec, t.item, t.idx, t.state, t.memory) for t in unmade]
    lines, _, _ = manifest_lines(paths, run, job, done)
    out: list[NewTask] = []
    for spec in fanned:
        if lines is None:  # never drop tasks because a manifest went missing since
            have = [t for t in rows if t.spec == spec.name]
            out += [(t.seq, t.name, t.spec, t.item, t.idx, t.state, t.memory) for t in have]
            continue
        made = list(fanout_rows(spec, lines, seq))
        seq = max([seq, *(row[0] for row in made)])
        out += made
    return out
