"""labrun as a library: run a job, find runs and tasks. The CLI is a thin layer over this."""

from __future__ import annotations

import contextlib
import difflib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

from labrun.config.job import JobSpec, load_job, parse_job
from labrun.config.lab import LabConfig
from labrun.config.schema import SETUP_NAME
from labrun.errors import PreflightFailed, UsageError
from labrun.executors.base import Executor, Waker
from labrun.executors.cgroup import CgroupExecutor
from labrun.executors.docker import DockerExecutor
from labrun.executors.process import ProcessExecutor
from labrun.expand import instances
from labrun.lock import JobLock
from labrun.model import Runtime
from labrun.outcome import Stop
from labrun.paths import StatePaths
from labrun.progress import LiveReporter, PlainReporter, QuietReporter, Reporter
from labrun.resume import reconcile, reopen
from labrun.rows import RunRow, TaskRow
from labrun.runner import Runner
from labrun.secrets import require_secrets
from labrun.states import RunState, TaskState
from labrun.store import Store


@dataclass(frozen=True)
class RunOptions:
    wait: bool = False  # queue behind another runner of the job instead of exiting 75
    quiet: bool = False
    verbose: bool = False
    live: bool | None = None  # None: a live bar when stdout is a terminal
    preflight: bool = True  # run the job's checks first and refuse to start on a failure
    resume: bool = False  # continue the latest unfinished run of the job (labrun/resume.py)


@dataclass(frozen=True)
class RunResult:
    run: RunRow
    state: RunState
    counts: dict[TaskState, int]


def open_store(lab: LabConfig) -> tuple[Store, StatePaths]:
    paths = StatePaths(lab.state_dir)
    paths.ensure()
    return Store(paths.db), paths


def _reporter(job: JobSpec, total: int, options: RunOptions) -> Reporter:
    live = options.live if options.live is not None else sys.stdout.isatty()
    if options.quiet:
        return QuietReporter()
    if live:
        return LiveReporter(job.name, total)
    return PlainReporter(verbose=options.verbose)


@contextlib.contextmanager
def stop_on_signals(runner: Runner) -> Iterator[None]:
    """SIGINT and SIGTERM stop the run gracefully; a second one kills what still runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        runner.request_stop(Stop.SHUTDOWN)

    def cancel(signum: int, frame: FrameType | None) -> None:
        runner.request_stop(Stop.CANCEL)  # `labrun cancel`: the run ends cancelled, not resumable

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, cancel)
    old_fd = signal.set_wakeup_fd(runner.waker.wake_fd)
    try:
        yield
    finally:
        signal.set_wakeup_fd(old_fd)
        for sig, old in previous.items():
            signal.signal(sig, old)


def executors_for(lab: LabConfig, waker: Waker) -> dict[tuple[str, Runtime], Executor]:
    """One executor per (node, runtime) that the lab offers.

    Cheap to build: the cgroup executor detects its mechanism on its first start, the
    Docker executor connects to the daemon on its first start. SSH nodes are connected
    here; one that does not answer is left out of the run, with a message."""
    makers: dict[Runtime, Callable[[], Executor]] = {
        Runtime.PROCESS: lambda: ProcessExecutor(waker),
        Runtime.CGROUP: lambda: CgroupExecutor(waker),
        Runtime.DOCKER: lambda: DockerExecutor(waker),
    }
    local = lab.local
    executors = {(local.name, rt): makers[rt]() for rt in local.runtimes if rt in makers}
    if lab.ssh_nodes:
        from labrun.ssh.nodes import ssh_executors

        remote, problems = ssh_executors(lab, waker)
        executors.update(remote)
        for problem in problems:
            print(f"labrun: {problem}", file=sys.stderr, flush=True)
    return executors


def run_job(job_path: str, lab: LabConfig, options: RunOptions) -> RunResult:
    job = load_job(job_path)
    require_secrets(job)
    if options.preflight:
        refuse_on_preflight(job, lab)
    store, paths = open_store(lab)
    with JobLock(paths.lock(job.name), job.name).hold(options.wait) as lock:
        now = time.time()
        previous = store.latest_unfinished_run(job.name) if options.resume or job.resume else None
        if previous is not None:
            stored = job_of(previous)  # the job as it was when the run started
            require_secrets(stored)
            lock.record(previous.id)
            return _drive(store, paths, stored, reopen(store, previous, now), lab, options, reconcile)
        with store.tx():
            run_id = store.create_run(job.name, job.file, job.text, now)
            store.add_tasks(run_id, instances(job))
        lock.record(run_id)
        run = store.run(run_id)
        assert run is not None
        return _drive(store, paths, job, run, lab, options)


def refuse_on_preflight(job: JobSpec, lab: LabConfig) -> None:
    """Runs the job's preflight checks; any failure refuses the run before it is created."""
    from labrun.preflight import render_text, summary
    from labrun.preflight.from_job import preflight

    report = preflight(job, lab)
    if not report.ok:
        raise PreflightFailed(
            f"preflight failed, nothing was started ({summary(report.results)}):\n"
            f"{render_text(report.failures)}\n"
            f"(`labrun check {job.file}` shows every check; --no-preflight skips them)"
        )


def _drive(
    store: Store,
    paths: StatePaths,
    job: JobSpec,
    run: RunRow,
    lab: LabConfig,
    options: RunOptions,
    prepare: Callable[[Runner], object] | None = None,
) -> RunResult:
    os.makedirs(paths.shared_dir(run.id), mode=0o700, exist_ok=True)
    waker = Waker()
    executors = executors_for(lab, waker)
    counts = store.counts(run.id)
    reporter = _reporter(job, sum(counts.values()), options)
    nodes = lab.nodes
    if lab.ssh_nodes:  # ssh nodes with their probed capacity, only those that answered
        from labrun.ssh.nodes import resolved_nodes

        nodes = resolved_nodes(lab, executors)
    runner = Runner(
        store, paths, job, run, nodes, executors, waker, reporter, node_max_failures=lab.node_max_failures
    )
    try:
        if prepare is not None:
            prepare(runner)  # a resume adopts attempts that still run
        with stop_on_signals(runner):
            state = runner.drive(time.time)
    finally:
        reporter.close()
        for executor in executors.values():
            executor.close()
        waker.close()
    final = store.run(run.id)
    assert final is not None
    return RunResult(final, state, store.counts(run.id))


def job_of(run: RunRow) -> JobSpec:
    """The job as it was when the run started (the file may have changed since)."""
    return parse_job(run.job_text, run.job_file)


def find_run(store: Store, ref: str) -> RunRow:
    """A run by id, or `last`."""
    if ref == "last":
        run = store.latest_run()
        if run is None:
            raise UsageError("there are no runs yet: start one with `labrun run JOB.toml`")
        return run
    if not ref.isdigit():
        raise UsageError(f"{ref!r} is not a run: give a run id (see `labrun runs`) or `last`")
    found = store.run(int(ref))
    if found is None:
        raise UsageError(f"there is no run {ref}: see `labrun runs` for the runs there are")
    return found


def find_task(store: Store, run: RunRow, ref: str) -> TaskRow:
    """A task of a run by its name: `report`, `resize[3]`; `0` is task 0 (`setup`)."""
    task = store.task_by_name(run.id, SETUP_NAME if ref == "0" else ref)
    if task is not None:
        return task
    specs = [spec.name for spec in job_of(run).tasks]
    close = difflib.get_close_matches(ref, specs, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; its tasks are named {', '.join(specs[:10])}"
    if ref in specs:
        hint = f"; {ref!r} fans out: name one item, e.g. {ref}[0]"
    raise UsageError(f"run {run.id} has no task {ref!r}{hint}")
