"""Dependencies, the runner's side: turn finished tasks into a plan of rows to change.

`labrun.deps` decides per spec (pure); this module reads the rows that decision touches
and returns an `UnblockPlan` (plain data): waiting tasks to promote to ready, to skip
(with the upstream task's name and why), and the fan-out rows over task 0's manifest
when task 0 succeeds. The ledger applies it; nothing here changes state.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from labrun import private
from labrun.config.job import JobSpec, TaskSpec
from labrun.config.schema import FromItems
from labrun.deps import SETUP, UNMADE, Plan, Tracker, skip_reason, upstream_map
from labrun.expand import fanout_rows, outputs_for, placeholder_values
from labrun.learned import Learner
from labrun.paths import StatePaths
from labrun.readfile import read_regular
from labrun.rows import RunRow, TaskRow
from labrun.states import Outcome, TaskState
from labrun.store import NewTask, Store

MANIFEST_MAX = 256 * 1024 * 1024  # a manifest larger than this is a mistake, not a job

_FAILED = (TaskState.FAILED, TaskState.CANCELLED, TaskState.SKIPPED)


@dataclass
class UnblockPlan:
    """What finished tasks unblock: apply `add` first, then `promote` and `skip`."""

    add: list[NewTask] = field(default_factory=list)
    promote: list[TaskRow] = field(default_factory=list)
    skip: list[tuple[TaskRow, str]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (task, cause) of added rows: learned memory
    # a fan-out over task 0's manifest that was never made (task 0 failed): one row named
    # for the task, added skipped with its reason, so status, the summary and why show it
    unmade: list[tuple[NewTask, str]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.add or self.promote or self.skip or self.messages or self.unmade)


class Unblocker:
    def __init__(
        self, store: Store, paths: StatePaths, job: JobSpec, run: RunRow, learner: Learner | None = None
    ) -> None:
        self.store, self.paths, self.job, self.run = store, paths, job, run
        self.learner = learner  # memory learned from earlier runs, for fan-out rows made here
        specs = ((s.name, s.depends_on) for s in job.all_tasks)
        lenient = {s.name: s.allow_failed for s in job.all_tasks if s.allow_failed}
        self.tracker = Tracker(upstream_map(specs, has_setup=job.setup is not None), lenient)
        self.first = True
        self._created: list[tuple[str, int]] = []  # fan-out rows added by the last plan
        self._held: list[TaskRow] = []  # task 0, until its fan-out rows are in the store
        self._made: set[str] = set()  # fan-out specs with rows, or whose unmade row was planned
        self._load()

    def _load(self) -> None:
        """Per-spec progress from the store: a new run, or one being resumed."""
        by_spec: dict[str, dict[TaskState, tuple[int, str]]] = {}
        for spec, state, n, name in self.store.spec_counts(self.run.id):
            by_spec.setdefault(spec, {})[state] = (n, name)
        for task_spec in self.job.all_tasks:
            states = by_spec.get(task_spec.name, {})
            items = task_spec.items
            if (
                not states
                and isinstance(items, FromItems)
                and TaskState.SUCCEEDED not in by_spec.get(items.task, {})
            ):
                continue  # its rows come with its source task's success
            remaining = sum(n for s, (n, _) in states.items() if not s.terminal)
            bad = next((states[s] for s in _FAILED if s in states), None)
            failed = skip_reason(bad[1], "did not succeed") if bad else None
            started = TaskState.WAITING not in states
            self.tracker.load(task_spec.name, remaining, failed, started)

    def dirty(self, finished: bool) -> bool:
        """Whether `plan` may have work: on the first call, or after tasks finished."""
        return self.first or finished or bool(self._created or self._held)

    def plan(self, finished: list[TaskRow]) -> UnblockPlan:
        """What `finished` (tasks that reached a terminal state, as they are now) unblock.
        Skips this module planned itself are passed back and ignored: the tracker knows.
        Task 0's success is taken in once its fan-out rows are in the store (next call)."""
        out = UnblockPlan()
        if self.first:
            self.first = False
            self._rows(self.tracker.initial(), out)
        for spec, count in self._created:  # their rows are in the store now
            self._rows(self.tracker.created(spec, count), out)
        held, self._created, self._held = self._held, [], []
        for task in held:
            self._finished(task, out)
        for task in finished:
            if task.state is TaskState.SKIPPED:
                continue
            if task.state is TaskState.SUCCEEDED and self._fan_out(task, out):
                self._held.append(task)
                continue
            self._finished(task, out)
        return out

    def _finished(self, task: TaskRow, out: UnblockPlan) -> None:
        ok = task.state is TaskState.SUCCEEDED
        how = "was cancelled" if task.state is TaskState.CANCELLED else task.state.value
        how += f": {task.reason}" if task.reason and not ok else ""
        self._rows(self.tracker.finished(task.spec, task.name, ok, how), out)

    def _fan_out(self, source: TaskRow, out: UnblockPlan) -> bool:
        """Rows over the list `source` (task 0, or any task that fan-outs take their items
        from) wrote, or a skip of those specs when it cannot be read; True when rows were
        planned."""
        fanned = fanned_from(self.job, source.spec)
        if not fanned:
            return False
        won = [a.n for a in self.store.attempts(source.id) if a.outcome is Outcome.SUCCEEDED]
        lines, manifest, error = manifest_lines(
            self.paths, self.run, self.job, source, won[0] if won else None
        )
        seq = self.store.max_seq(self.run.id)
        for spec in fanned:
            if lines is None:
                why = f"{_list_of(source.spec)} {manifest} cannot be read: {error}"
                out.messages.append(f"{spec.name}: {why}")
                self._rows(self.tracker.failed_spec(spec.name, why), out)
                continue
            rows = list(fanout_rows(spec, lines, seq))
            self._made.add(spec.name)
            if self.learner is not None:
                rows = list(self.learner.apply(rows, out.notes))
            seq = max([seq, *(row[0] for row in rows)])
            out.add.extend(rows)
            self._created.append((spec.name, len(rows)))
        return bool(self._created)

    def _rows(self, plan: Plan, out: UnblockPlan) -> None:
        run_id = self.run.id
        for spec in plan.promote:
            self._write_upstream(spec)
            out.promote.extend(self.store.waiting_of_spec(run_id, spec))
        for spec, reason in plan.skip.items():
            skipped = self.store.waiting_of_spec(run_id, spec)
            out.skip.extend((task, reason) for task in skipped)
            if skipped:
                out.messages.append(f"{spec}: {len(skipped)} skipped: {reason}")
            elif self._never_made(spec):
                items = self.job.task(spec).items
                source = _list_of(items.task if isinstance(items, FromItems) else SETUP)
                why = f"{reason}; its items come from {source}, {UNMADE}"
                seq = self.store.max_seq(run_id) + 1 + len(out.unmade)
                memory = self.job.task(spec).memory
                out.unmade.append(((seq, spec, spec, None, None, TaskState.SKIPPED, memory), why))
                out.messages.append(f"{spec}: skipped: {why}")

    def _never_made(self, spec: str) -> bool:
        """A fan-out over a task's list whose rows do not exist (that task did not succeed)."""
        task = self.job.task(spec)
        if not isinstance(task.items, FromItems) or spec in self._made:
            return False
        self._made.add(spec)  # one row per spec, once
        return self.store.task_by_name(self.run.id, spec) is None and not self.store.waiting_of_spec(
            self.run.id, spec
        )

    def _write_upstream(self, spec: str) -> None:
        """For each upstream it tolerates failures of, tell the dependent how every task
        ended: {shared}/upstream/UPSTREAM.jsonl, one JSON object per task."""
        tolerated = self.job.task(spec).allow_failed
        if not tolerated:
            return
        directory = os.path.join(self.paths.shared_dir(self.run.id), "upstream")
        private.makedirs(directory)
        lines: dict[str, list[str]] = {up: [] for up in tolerated}
        for task in self.store.tasks(self.run.id):
            if task.spec in lines:
                row = {"task": task.name, "item": task.item, "state": task.state.value, "reason": task.reason}
                lines[task.spec].append(json.dumps(row) + "\n")
        for up, rows in lines.items():
            path = os.path.join(directory, f"{up}.jsonl")
            private.write_atomic(path, "".join(rows).encode())


def fanned_from(job: JobSpec, source: str) -> list[TaskSpec]:
    """The fan-outs whose items are the lines of task `source`'s first output."""
    return [s for s in job.tasks if isinstance(s.items, FromItems) and s.items.task == source]


def _label(task: str) -> str:
    return FromItems(task).label


def _list_of(task: str) -> str:
    """`task 0's manifest`, `task find's list`: what a fan-out's items are read from."""
    return "task 0's manifest" if task == SETUP else f"task {task}'s list"


def manifest_lines(
    paths: StatePaths, run: RunRow, job: JobSpec, source: TaskRow, winner: int | None = None
) -> tuple[list[str] | None, str, str]:
    """The lines of `source`'s first output (task 0's manifest, or another task's list),
    its path, and why it cannot be read. `winner`: the number of the attempt that
    succeeded, when a speculative copy may have run after it (`{attempt_dir}`)."""
    attempt = winner if winner is not None else source.attempts
    values = placeholder_values(paths, run, source, attempt, job.workdir)
    manifest = outputs_for(job.task(source.spec), values, job.workdir)[:1]
    if not manifest:
        return None, "", f"{_label(source.spec)} declares no outputs"
    try:
        return _read_lines(manifest[0]), manifest[0], ""
    except OSError as exc:
        return None, manifest[0], exc.strerror or str(exc)


def _read_lines(path: str) -> list[str]:
    text = read_regular(path, MANIFEST_MAX).decode("utf-8", errors="replace")
    if len(text) > MANIFEST_MAX:
        raise OSError(f"larger than {MANIFEST_MAX // 1024**2} MiB")
    if "\0" in text:
        raise OSError(f"line {text[: text.index(chr(0))].count(chr(10)) + 1} holds a NUL byte")
    return text.splitlines()
