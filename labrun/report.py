"""`labrun report`: a run read from one read-only snapshot, written as it streams.

The whole report is read inside one snapshot, so its counts and its rows agree even while
a runner goes on writing; nothing here takes the write lock. TSV and JSON stream one row
per attempt; HTML is built from a `Digest` gathered in one pass (bounded whatever the
run's size) and the diagnoses of the tasks that did not succeed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import IO

from labrun.app import find_run, job_of
from labrun.config.job import JobSpec
from labrun.deps import upstream_map
from labrun.diagnose import Cause, diagnose
from labrun.errors import ConfigError
from labrun.masking import masker
from labrun.outfile import written
from labrun.paths import StatePaths
from labrun.reads import Reads
from labrun.readstore import ReadStore
from labrun.rows import RunRow
from labrun.states import TaskState
from labrun.views import build, trace
from labrun.views.digest import Digest
from labrun.views.html import CauseGroup, Explained, ReportPage, write_html
from labrun.views.model import RunView, TaskView
from labrun.why import record_for

FORMATS = ("html", "tsv", "json")


@contextlib.contextmanager
def _destination(output: str | None) -> Iterator[IO[str]]:
    if output is None or output == "-":
        yield sys.stdout
        return
    with written(output) as handle:
        yield handle


def default_output(fmt: str, run_id: int) -> str | None:
    """Where a report goes without -o: HTML into a file here (not a terminal), the rest to stdout."""
    return f"labrun-report-{run_id}.html" if fmt == "html" else None


def write_report(
    reader: ReadStore, paths: StatePaths, run_ref: str, fmt: str, output: str | None
) -> str | None:
    """Writes the report; returns the file it wrote (None: the standard output)."""
    with reader.snapshot() as snap:
        run = find_run(snap, run_ref)  # before the file is made: a wrong run leaves no file
        target = output if output is not None else default_output(fmt, run.id)
        with _destination(target) as out:
            if fmt == "html":
                write_html(html_page(snap, paths, run, time.time()), out)
            elif fmt == "tsv":
                trace.write_tsv(trace.trace_rows(build.task_views(snap, run.id)), out)
            else:
                trace.write_json(
                    build.run_view(snap, run), trace.trace_rows(build.task_views(snap, run.id)), out
                )
    return None if target in (None, "-") else target


def html_page(snap: Reads, paths: StatePaths, run: RunRow, now: float) -> ReportPage:
    """The HTML report's page of `run` as of `now`, read from `snap` in one pass (the report
    and `serve`)."""
    digest = Digest.for_run(snap.counts(run.id).get(TaskState.SUCCEEDED, 0))
    for task in build.task_views(snap, run.id):
        digest.add(task)
    series = snap.memory_series([c.attempt_id for c in digest.charted])
    page = _page(paths, run, build.run_view(snap, run), digest, series)
    return dataclasses.replace(page, now=now)


def _page(
    paths: StatePaths, run: RunRow, view: RunView, digest: Digest, series: Mapping[int, str]
) -> ReportPage:
    explained = _explain(paths, run, digest.problems)
    command = f"labrun report {run.id} --format tsv"
    job = _job(run)
    upstream = None
    if job is not None:
        upstream = upstream_map(((t.name, t.depends_on) for t in job.all_tasks), job.setup is not None)
    return ReportPage(view, digest, _groups(explained), _root(explained), command, series, upstream)


def _job(run: RunRow) -> JobSpec | None:
    try:
        return job_of(run)
    except ConfigError:  # a job text an older labrun accepted: no timeouts to compare with
        return None


def _explain(paths: StatePaths, run: RunRow, tasks: Sequence[TaskView]) -> list[Explained]:
    job = _job(run)
    mask = masker(job.secret_names if job else ())
    found = []
    for task in tasks:
        timeout = None
        if job is not None:
            with contextlib.suppress(KeyError):  # a task the job no longer declares
                timeout = job.task(task.spec).timeout
        record = record_for(paths, run, task, timeout, None, mask)
        found.append(Explained(task, diagnose(record)))
    return found


def _groups(explained: Sequence[Explained]) -> list[CauseGroup]:
    by_cause: dict[Cause, list[Explained]] = {}
    for e in explained:
        by_cause.setdefault(e.diagnosis.cause, []).append(e)
    groups = [CauseGroup(cause.label, tasks) for cause, tasks in by_cause.items()]
    return sorted(groups, key=lambda g: -len(g.tasks))


def _root(explained: Sequence[Explained]) -> Explained | None:
    """The task that failed first on its own account (not for a dependency, not unfinished)."""
    own = [
        e
        for e in explained
        if e.task.state is TaskState.FAILED
        and e.diagnosis.cause not in (Cause.DEPENDENCY_FAILURE, Cause.NOT_FINISHED)
    ]

    def ended(e: Explained) -> float:
        last = e.task.last
        return float("inf") if last is None or last.ended is None else last.ended

    return min(own, key=ended, default=None)
