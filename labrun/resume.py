"""Resume: continue an unfinished run of a job after its runner stopped or was killed.

What is settled stays settled: finished attempts are kept and succeeded tasks never run
again. Attempts left open (no outcome) are looked at one by one: if the process an
earlier runner started still exists (the same pid *and* the same start time, so a reused
pid is not mistaken for it) the executor adopts it and the runner awaits its end like any
other; otherwise it is recorded `lost`, which does not count against the task, and the
task runs again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from labrun.expand import launch_for
from labrun.model import Facts, Started
from labrun.rows import AttemptRow, RunRow
from labrun.runner import Active, Runner
from labrun.states import Outcome, RunState, TaskState
from labrun.store import Store

LOST_DETAIL = "the runner stopped and this attempt's process is gone (no exit status); runs again"


@dataclass(frozen=True)
class Reconciled:
    adopted: int
    lost: int


def reopen(store: Store, run: RunRow, now: float) -> RunRow:
    """Mark the run running again, owned by this process (the caller holds the job lock)."""
    with store.tx():
        store.set_run_state(run.id, RunState.RUNNING, now, f"run resumed (was {run.state.value})")
    again = store.run(run.id)
    assert again is not None
    return again


def _adopt(runner: Runner, attempt: AttemptRow) -> Active | None:
    """An Active record for an attempt whose process still runs, or None if it is gone."""
    task = runner.store.task(attempt.task_id)
    spec = runner.specs.get(task.spec)
    executor = runner.executors.get((attempt.node, attempt.runtime))
    if spec is None or executor is None:
        return None  # the job changed under the run, or the runtime is not offered now
    memory = attempt.memory_limit if attempt.memory_limit is not None else task.memory
    launch = launch_for(
        runner.paths, runner.run, spec, task, attempt.n, attempt.id, runner.job.workdir, memory
    )
    started = Started(attempt.pid, attempt.pid_start, attempt.ref, attempt.mechanism or "")
    if not executor.adopt(attempt.id, launch, started):
        return None
    # the timeout runs from the attempt's real start, not from the resume
    deadline = attempt.started + spec.timeout if spec.timeout else None
    return Active(attempt.id, task, spec, executor, launch, attempt.node, deadline)


def reconcile(runner: Runner, now: float | None = None) -> Reconciled:
    """Adopt the open attempts that still run; record the others lost and queue their tasks."""
    now = time.time() if now is None else now
    store, run_id = runner.store, runner.run.id
    adopted, lost = 0, 0
    with store.tx():
        for attempt in store.open_attempts(run_id):
            act = _adopt(runner, attempt)
            if act is not None:
                runner.active[attempt.id] = act
                adopted += 1
                cause = f"attempt {attempt.n} adopted: still running after the runner restarted"
                store.event(run_id, attempt.task_id, attempt.n, now, "running", "running", cause)
                continue
            lost += 1
            facts = Facts(None, None, now, lost=True, detail=LOST_DETAIL)
            store.finish_attempt(attempt.id, facts, Outcome.LOST, LOST_DETAIL)
            task = store.task(attempt.task_id)
            if task.state is TaskState.RUNNING:
                runner._move(task, TaskState.READY, now, LOST_DETAIL, attempt.n, not_before=0)
        # a task left running with no open attempt (not expected) must not hang the run
        open_tasks = {a.task.id for a in runner.active.values()}
        for task in list(store.tasks(run_id, [TaskState.RUNNING])):
            if task.id not in open_tasks:
                runner._move(task, TaskState.READY, now, "no attempt was open; runs again", None)
    if adopted or lost:
        runner.reporter.message(
            f"resumed run {run_id}: {adopted} running attempt(s) adopted, {lost} lost and queued again"
        )
    return Reconciled(adopted, lost)
