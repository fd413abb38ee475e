"""The runner's side of dependencies: feed finished tasks to `deps.Tracker`, apply its plan.

`labrun.deps` decides (pure); this module does the store work around it: it promotes
waiting tasks to ready, skips them with the upstream task's name and why, and creates
the fan-out over task 0's manifest when task 0 succeeds. Every state change goes
through the runner's `_move`, so the runner's in-memory counts stay right.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from labrun.config.schema import SetupItems
from labrun.deps import SETUP, Plan, Tracker, skip_reason, upstream_map
from labrun.expand import fanout_rows, outputs_for, placeholder_values
from labrun.rows import TaskRow
from labrun.states import TaskState

if TYPE_CHECKING:
    from labrun.runner import Runner

MANIFEST_MAX = 256 * 1024 * 1024  # a manifest larger than this is a mistake, not a job

_FAILED = (TaskState.FAILED, TaskState.CANCELLED, TaskState.SKIPPED)


class Unblocker:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        job = runner.job
        specs = ((s.name, s.depends_on) for s in job.all_tasks)
        lenient = {s.name: s.allow_failed for s in job.all_tasks if s.allow_failed}
        self.tracker = Tracker(upstream_map(specs, has_setup=job.setup is not None), lenient)
        self.pending: list[tuple[TaskRow, TaskState]] = []
        self.first = True
        self._applying = False
        self._load()

    def _load(self) -> None:
        """Per-spec progress from the store: a new run, or one being resumed."""
        by_spec: dict[str, dict[TaskState, tuple[int, str]]] = {}
        for spec, state, n, name in self.runner.store.spec_counts(self.runner.run.id):
            by_spec.setdefault(spec, {})[state] = (n, name)
        setup_done = TaskState.SUCCEEDED in by_spec.get(SETUP, {})
        for task_spec in self.runner.job.all_tasks:
            states = by_spec.get(task_spec.name, {})
            if not states and isinstance(task_spec.items, SetupItems) and not setup_done:
                continue  # its rows come with task 0's success
            remaining = sum(n for s, (n, _) in states.items() if not s.terminal)
            bad = next((states[s] for s in _FAILED if s in states), None)
            failed = skip_reason(bad[1], "did not succeed") if bad else None
            started = TaskState.WAITING not in states
            self.tracker.load(task_spec.name, remaining, failed, started)

    @property
    def dirty(self) -> bool:
        return self.first or bool(self.pending)

    def note(self, task: TaskRow, new: TaskState) -> None:
        """Called by the runner for every task that reaches a terminal state."""
        if new.terminal and not self._applying:
            self.pending.append((task, new))

    def settle(self, now: float) -> bool:
        """Apply everything finished tasks unblock; inside the caller's transaction.
        True when some task became ready."""
        ready_before = self.runner.counts[TaskState.READY]
        if self.first:
            self.first = False
            self._apply(self.tracker.initial(), now)
        while self.pending:
            task, state = self.pending.pop(0)
            ok = state is TaskState.SUCCEEDED
            if ok and task.spec == SETUP:
                self._fan_out(task, now)
            how = "was cancelled" if state is TaskState.CANCELLED else f"{state.value}"
            reason = self.runner.store.task(task.id).reason if not ok else None
            how += f": {reason}" if reason else ""
            self._apply(self.tracker.finished(task.spec, task.name, ok, how), now)
        return self.runner.counts[TaskState.READY] > ready_before

    def _fan_out(self, setup: TaskRow, now: float) -> None:
        runner = self.runner
        fanned = [s for s in runner.job.tasks if isinstance(s.items, SetupItems)]
        if not fanned or runner.job.setup is None:
            return
        values = placeholder_values(runner.paths, runner.run, setup, setup.attempts)
        manifest = outputs_for(runner.job.setup, values, runner.job.workdir)[:1]
        try:
            lines = _read_lines(manifest[0]) if manifest else None
        except OSError as exc:
            lines, error = None, exc.strerror or str(exc)
        else:
            error = "task 0 declares no outputs"
        for spec in fanned:
            if lines is None:
                why = f"task 0's manifest {manifest[0] if manifest else ''} cannot be read: {error}"
                runner.reporter.message(f"{spec.name}: {why}")
                self._apply(self.tracker.failed_spec(spec.name, why), now)
                continue
            rows = list(fanout_rows(spec, lines, runner.store.max_seq(runner.run.id)))
            runner.store.add_tasks(runner.run.id, rows)
            runner.counts[TaskState.WAITING] += len(rows)
            self._apply(self.tracker.created(spec.name, len(rows)), now)

    def _apply(self, plan: Plan, now: float) -> None:
        move: Callable[..., TaskRow] = self.runner._move
        store, run_id = self.runner.store, self.runner.run.id
        self._applying = True
        try:
            for spec in plan.promote:
                self._write_upstream(spec)
                for task in store.waiting_of_spec(run_id, spec):
                    move(task, TaskState.READY, now, "dependencies met", None)
            for spec, reason in plan.skip.items():
                skipped = store.waiting_of_spec(run_id, spec)
                for task in skipped:
                    move(task, TaskState.SKIPPED, now, reason, None, reason=reason)
                if skipped:
                    self.runner.reporter.message(f"{spec}: {len(skipped)} skipped: {reason}")
        finally:
            self._applying = False

    def _write_upstream(self, spec: str) -> None:
        """For each upstream it tolerates failures of, tell the dependent how every task
        ended: {shared}/upstream/UPSTREAM.jsonl, one JSON object per task."""
        runner = self.runner
        tolerated = runner.specs[spec].allow_failed
        if not tolerated:
            return
        directory = os.path.join(runner.paths.shared_dir(runner.run.id), "upstream")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        lines: dict[str, list[str]] = {up: [] for up in tolerated}
        for task in runner.store.tasks(runner.run.id):
            if task.spec in lines:
                row = {"task": task.name, "item": task.item, "state": task.state.value, "reason": task.reason}
                lines[task.spec].append(json.dumps(row) + "\n")
        for up, rows in lines.items():
            path = os.path.join(directory, f"{up}.jsonl")
            fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.writelines(rows)
            os.replace(path + ".tmp", path)


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read(MANIFEST_MAX + 1)
    if len(text) > MANIFEST_MAX:
        raise OSError(f"larger than {MANIFEST_MAX // 1024**2} MiB")
    return text.splitlines()
