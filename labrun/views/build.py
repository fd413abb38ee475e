"""Which rows each command reads from one snapshot, turned into view models.

Everything here reads a `Reads` (a read-only snapshot, or the writer's store in tests)
and returns views; lists that grow with a run are iterators over streamed queries, so
they must be consumed inside the snapshot they came from.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby, islice

from labrun.config.job import parse_job
from labrun.deps import UNMADE
from labrun.errors import ConfigError
from labrun.reads import Reads
from labrun.rows import RunRow, TaskRow
from labrun.states import TaskState
from labrun.views.model import AttemptView, EventsView, EventView, RunView, StatusView, TaskView

SHOW_ALL_UP_TO = 50  # `status` lists every task of a run this small; larger ones list problems


def run_view(reads: Reads, run: RunRow) -> RunView:
    return RunView.of(run, reads.counts(run.id))


def task_view(reads: Reads, task: TaskRow) -> TaskView:
    return TaskView.of(task, tuple(AttemptView.of(a) for a in reads.attempts(task.id)))


def task_views(reads: Reads, run_id: int) -> Iterator[TaskView]:
    """Every task in order with its attempts, from two streamed queries merged by task id."""
    by_task = groupby(reads.run_attempts(run_id), key=lambda a: a.task_id)
    pending = next(by_task, None)
    for task in reads.tasks(run_id):
        attempts: tuple[AttemptView, ...] = ()
        while pending is not None and pending[0] < task.id:
            pending = next(by_task, None)
        if pending is not None and pending[0] == task.id:
            attempts = tuple(AttemptView.of(a) for a in pending[1])
            pending = next(by_task, None)
        yield TaskView.of(task, attempts)


# What a summary lists, failures first; each state is one index range (no sort, however many).
PROBLEM_ORDER = (
    TaskState.FAILED,
    TaskState.RUNNING,
    TaskState.READY,
    TaskState.WAITING,
    TaskState.CANCELLED,
    TaskState.SKIPPED,
)


def problem_views(reads: Reads, run_id: int) -> Iterator[TaskView]:
    """The tasks that did not succeed: not every row of a 100,000-task run."""
    for state in PROBLEM_ORDER:
        for task in reads.tasks_in_state(run_id, state):
            yield task_view(reads, task)


def _in_job_order(run: RunRow, tasks: Iterator[TaskView]) -> Iterator[TaskView]:
    """A small run's tasks in the order the job file declares them (a fan-out made when
    task 0 succeeded is created after the tasks below it, but is listed where it is written)."""
    try:
        job = parse_job(run.job_text, run.job_file)
    except ConfigError:  # a job text an older labrun accepted: creation order, then
        return tasks
    order = {spec.name: i for i, spec in enumerate(job.all_tasks)}
    return iter(sorted(tasks, key=lambda t: (order.get(t.spec, len(order)), t.seq)))


def status_view(reads: Reads, run: RunRow, show_all: bool) -> StatusView:
    view = run_view(reads, run)
    every = show_all or view.total <= SHOW_ALL_UP_TO
    tasks = task_views(reads, run.id) if every else problem_views(reads, run.id)
    if every and view.total <= SHOW_ALL_UP_TO:
        tasks = _in_job_order(run, tasks)
    longest = reads.longest_task_name(run.id) + 2  # "0 setup": task 0 is labelled with its number
    return StatusView(view, tasks, every, tuple(reads.learned(run.id)), longest)


def unmade_names(reads: Reads, run_id: int, limit: int = 3) -> list[str]:
    """Fan-outs over a manifest task 0 never made: each is one skipped row named as its task."""
    found = []
    for task in reads.tasks_in_state(run_id, TaskState.SKIPPED):
        if task.idx is None and task.spec == task.name and (task.reason or "").endswith(UNMADE):
            found.append(task.name)
            if len(found) == limit:
                break
    return found


def one_task_status(reads: Reads, run: RunRow, task: TaskRow) -> StatusView:
    one = task_view(reads, task)
    return StatusView(run_view(reads, run), iter([one]), every=True, longest=len(one.label))


def events_view(reads: Reads, run: RunRow, task: TaskRow | None) -> EventsView:
    rows = reads.named_events(run.id, None if task is None else task.id)
    events = (EventView.of(row, name) for row, name in rows)
    return EventsView(run_view(reads, run), None if task is None else task.name, events)


def runs_view(reads: Reads, limit: int, job: str | None = None) -> list[RunView]:
    """The latest `limit` runs (of job `job` only, when given)."""
    return [run_view(reads, run) for run in reads.runs(limit, job)]


def failed_views(reads: Reads, run_id: int, limit: int) -> list[TaskView]:
    """The first few failed tasks, for the line `run` ends with."""
    return [TaskView.of(t, ()) for t in islice(reads.tasks_in_state(run_id, TaskState.FAILED), limit)]
