"""Resume: continue an unfinished run of a job after its runner stopped or was killed.

What is settled stays settled: finished attempts are kept and succeeded tasks never run
again. Attempts left open are looked at one by one: if the process an earlier runner
started still exists (the same pid *and* the same start time, so a reused pid is not
mistaken for it) the executor adopts it and the runner awaits its end like any other;
otherwise it is abandoned as `lost`, which does not count against the task. A task runs
again only when none of its attempts was adopted: a lost attempt beside an adopted
sibling leaves it running. `plan` looks (and adopts); `Runner.resume` applies the plan.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from labrun.expand import launch_for
from labrun.model import Started
from labrun.orphans import sweep_cgroups
from labrun.rows import AttemptRow, RunRow, TaskRow
from labrun.runner import Active, ResumePlan, Runner
from labrun.states import RunState, TaskState
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


def _adopt(runner: Runner, task: TaskRow, attempt: AttemptRow) -> Active | None:
    """An Active record for an attempt whose process still runs, or None if it is gone."""
    spec = runner.specs.get(task.spec)
    executor = runner.executors.get((attempt.node, attempt.runtime))
    if spec is None or executor is None:
        return None  # the job changed under the run, or the runtime is not offered now
    memory = attempt.memory_limit if attempt.memory_limit is not None else task.memory
    launch = launch_for(
        runner.paths,
        runner.run,
        spec,
        task,
        attempt.n,
        attempt.id,
        runner.job.workdir,
        memory,
        runner.job.secret_names,
        adopted=True,
    )
    started = Started(attempt.pid, attempt.pid_start, attempt.ref, attempt.mechanism or "")
    if not executor.adopt(attempt.id, launch, started):
        return None
    # the time limit runs from the attempt's real start, not from the resume
    limit = runner.durations.limit(spec)
    deadline = attempt.started + limit.seconds if limit is not None else None
    act = Active(attempt.id, task.id, task.name, attempt.n, spec, executor, launch, attempt.node, deadline)
    act.started, act.limit = attempt.started, limit
    return act


def plan(runner: Runner) -> ResumePlan:
    """Adopt the open attempts that still run; the others are lost; a running task with
    no adopted attempt is queued again."""
    store, run_id = runner.store, runner.run.id
    adopted: list[tuple[TaskRow, AttemptRow, Active]] = []
    lost: list[tuple[AttemptRow, str]] = []
    tasks: dict[int, TaskRow] = {}
    for attempt in store.open_attempts(run_id):
        task = tasks.get(attempt.task_id) or tasks.setdefault(attempt.task_id, store.task(attempt.task_id))
        act = _adopt(runner, task, attempt)
        if act is not None:
            adopted.append((task, attempt, act))
        else:
            lost.append((attempt, LOST_DETAIL))
    kept = {task.id for task, _, _ in adopted}
    requeue: list[tuple[TaskRow, str]] = []
    for task in store.tasks(run_id, [TaskState.RUNNING]):
        if task.id in kept:
            continue
        gone = [a.n for a, _ in lost if a.task_id == task.id]
        if gone:
            numbers = ", ".join(str(n) for n in gone)
            cause = f"attempt {numbers} lost: {LOST_DETAIL}"
        else:
            cause = "no attempt was open; runs again"  # not expected; must not hang the run
        requeue.append((task, cause))
    return ResumePlan(adopted, lost, requeue)


def reconcile(runner: Runner, now: float | None = None) -> Reconciled:
    """Plan the resume and apply it; says what was adopted and what was lost."""
    now = time.time() if now is None else now
    found = plan(runner)
    runner.resume(found, now)
    adopted, lost = len(found.adopted), len(found.lost)
    if adopted or lost:
        runner.reporter.message(
            f"resumed run {runner.run.id}: {adopted} running attempt(s) adopted, {lost} lost and queued again"
        )
    swept = sweep_cgroups(runner.store)  # after adoption: what is adopted is in use
    if swept:
        runner.reporter.message(f"removed {len(swept)} cgroup(s) that dead runners left")
    return Reconciled(adopted, lost)
