"""labrun as a library: run a job, find runs and tasks. The CLI is a thin layer over this."""

from __future__ import annotations

import contextlib
import difflib
import enum
import gc
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

from labrun import job_edits, private
from labrun.backends.base import Connection
from labrun.backends.registry import connect
from labrun.config.envvars import unset_in_env, with_env_expanded
from labrun.config.job import JobSpec, load_job, parse_job
from labrun.config.lab import LabConfig
from labrun.config.schema import SETUP_NAME
from labrun.errors import NothingToRerun, PreflightFailed, UsageError
from labrun.executors.base import Waker
from labrun.expand import instances
from labrun.fit import shorten_middle
from labrun.gc import sweep_leftovers
from labrun.learned import Learner, node_max
from labrun.lock import JobLock
from labrun.outcome import Stop
from labrun.paths import StatePaths
from labrun.progress import LiveReporter, PlainReporter, QuietReporter, Reporter
from labrun.reads import Reads
from labrun.readstore import ReadStore
from labrun.rerun import adopt_shared
from labrun.rerun import plan as plan_rerun
from labrun.resume import reconcile, reopen
from labrun.rows import AttemptRow, RunRow, TaskRow
from labrun.runner import Runner
from labrun.secrets import require_secrets
from labrun.states import RunState, TaskState
from labrun.store import Store


class IfRunning(str, enum.Enum):
    """What `labrun run` does when another runner holds the job's lock."""

    FAIL = "fail"  # exit 75 at once, naming the run and pid
    WAIT = "wait"  # queue behind it
    SKIP = "skip"  # exit 0 and print nothing: a cron job that overlaps its previous night


@dataclass(frozen=True)
class RunOptions:
    if_running: IfRunning = IfRunning.FAIL
    quiet: bool = False
    verbose: bool = False
    live: bool | None = None  # None: a live bar when stdout is a terminal
    preflight: bool = True  # run the job's checks first and refuse to start on a failure
    resume: bool = False  # continue the latest unfinished run of the job (labrun/resume.py)
    rerun_failed: bool = False  # run only what did not succeed in the latest finished run (rerun.py)
    as_recorded: bool = False  # a resume keeps the job as the run started, not the file as now written


@dataclass(frozen=True)
class RunResult:
    run: RunRow
    state: RunState
    counts: dict[TaskState, int]


def open_store(lab: LabConfig) -> tuple[Store, StatePaths]:
    """The store for commands that write: creates the state directory, migrates."""
    paths = StatePaths(lab.state_dir)
    paths.ensure()
    return Store(paths.db), paths


def open_reader(lab: LabConfig) -> tuple[ReadStore, StatePaths]:
    """The store for commands that only read: never waits on a runner, never writes."""
    paths = StatePaths(lab.state_dir)
    return ReadStore(paths.db), paths


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
        runner.reporter.stopping("interrupt" if signum == signal.SIGINT else "terminate")

    def cancel(signum: int, frame: FrameType | None) -> None:
        runner.request_stop(Stop.CANCEL)  # `labrun cancel`: the run ends cancelled, not resumable
        runner.reporter.stopping("cancel")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, cancel)
    old_fd = signal.set_wakeup_fd(runner.waker.wake_fd)
    try:
        yield
    finally:
        signal.set_wakeup_fd(old_fd)
        for sig, old in previous.items():
            signal.signal(sig, old)


def connect_nodes(lab: LabConfig, waker: Waker) -> Connection:
    """Every backend's executors and node specs; a node that does not answer is left out,
    with a message."""
    connection = connect(lab, waker)
    for problem in connection.problems:
        print(f"labrun: {problem}", file=sys.stderr, flush=True)
    return connection


def run_job(job_path: str, lab: LabConfig, options: RunOptions) -> RunResult:
    job = load_job(job_path)
    store, paths = open_store(lab)
    # The lock comes before anything slow or anything that depends on the moment: a run
    # that overlaps a running one (cron) exits 75 at once, without running its checks.
    with JobLock(paths.lock(job.name), job.name).hold(options.if_running is IfRunning.WAIT, _say) as lock:
        runnable = _with_environment(job)
        if options.preflight:
            refuse_on_preflight(job, lab)
        now = time.time()
        resuming = (options.resume or job.resume) and not options.rerun_failed
        previous = store.latest_unfinished_run(job.name) if resuming or options.rerun_failed else None
        if previous is not None and options.rerun_failed:
            raise UsageError(
                f"run {previous.id} of job {job.name} is {previous.state.value}, not finished: "
                f"continue it with `labrun run --resume {job.file}`"
            )
        if previous is not None:
            lock.record(previous.id)
            if previous.rerun_of is not None:
                adopt_shared(paths, previous.rerun_of, previous.id)
            if options.as_recorded:  # the job as it was when the run started
                stored, excused = _with_environment(job_of(previous)), 0
            else:
                stored, excused = runnable, _follow_edits(store, paths, previous, job, options, now)
            reopened = reopen(store, previous, now)
            _sweep_leftovers(store, lab, options)
            return _drive(store, paths, stored, reopened, lab, options, reconcile, excused)
        if options.resume and not options.quiet:
            _say_nothing_to_resume(store, job)
        rerun_of = _rerun_source(store, job) if options.rerun_failed else None
        with store.tx():
            run_id = store.create_run(job.name, job.file, job.text, now, rerun_of.id if rerun_of else None)
            learner = Learner(store, job, run_id, node_max([n.memory for n in lab.declared]))
            learned: list[tuple[str, str]] = []
            if rerun_of is None:
                store.add_tasks(run_id, learner.apply(instances(job), learned))
            else:
                planned = plan_rerun(job, instances(job), store.tasks(rerun_of.id))
                store.add_tasks(run_id, learner.apply(planned.rows, learned))
            store.note_tasks(run_id, learned, now)
            if rerun_of is not None:
                store.mark_carried(run_id, rerun_of.id)
        if learned and not options.quiet:
            print(_learned_line(learned), flush=True)
        if rerun_of is not None:
            adopt_shared(paths, rerun_of.id, run_id)
            if not options.quiet:
                print(
                    f"labrun: run {run_id} reruns run {rerun_of.id} of job {job.name}: "
                    f"{planned.to_run} task(s) to run, {planned.carried} succeeded before and are kept",
                    flush=True,
                )
        lock.record(run_id)
        run = store.run(run_id)
        assert run is not None
        return _drive(store, paths, runnable, run, lab, options)


def _follow_edits(
    store: Store, paths: StatePaths, run: RunRow, job: JobSpec, options: RunOptions, now: float
) -> int:
    """A resumed run follows the job file as now written (`job_edits`); says what changed.
    Returns how many tasks are no longer in the job without having succeeded."""
    rows = list(store.tasks(run.id))
    expected = job_edits.expected_tasks(paths, run, job, rows)
    plan = job_edits.compare(job_of(run), job, rows, expected, store.max_seq(run.id) + 1)
    if plan.blocked:
        raise UsageError(
            f"{job.file}: {', '.join(plan.blocked[:5])} of run {run.id} was running when its runner "
            "stopped and is no longer in the job file (or its item changed): put it back to resume "
            f"as now written, or `labrun run --resume --as-recorded {job.file}` to finish the run "
            "as it started"
        )
    if not plan.empty:
        job_edits.apply(store, run.id, plan, job.file, job.text, now)
        if not options.quiet:
            said = "\n".join(f"  {line}" for line in plan.lines())
            print(
                f"labrun: resuming run {run.id} with {job.file} as now written "
                f"(--as-recorded keeps the job as the run started):\n{said}",
                flush=True,
            )
    return job_edits.excused(store.tasks(run.id), expected)


def _sweep_leftovers(store: Store, lab: LabConfig, options: RunOptions) -> None:
    """What earlier runners of this state directory left (containers whose end was recorded
    but that were not removed yet) goes before the resume; say what went."""
    removed, problems = sweep_leftovers(store, lab)
    if removed and not options.quiet:
        print(f"labrun: removed what an earlier runner left: {'; '.join(removed)}", flush=True)
    for problem in problems:
        print(f"labrun: {problem}", file=sys.stderr, flush=True)


def _learned_line(learned: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{name}: {cause}" for name, cause in learned[:3])
    more = f"; and {len(learned) - 3} more" if len(learned) > 3 else ""
    return f"labrun: {len(learned)} task(s) start with memory learned from earlier runs: {shown}{more}"


def _rerun_source(store: Store, job: JobSpec) -> RunRow:
    """The finished run whose failures `--rerun-failed` runs again."""
    last = store.latest_finished_run(job.name)
    if last is None:
        raise UsageError(
            f"job {job.name} has no finished run to rerun: start one with `labrun run {job.file}`"
        )
    if last.state is RunState.SUCCEEDED:
        raise NothingToRerun(f"run {last.id} of job {job.name} succeeded: there is nothing to rerun")
    return last


def _say_nothing_to_resume(store: Store, job: JobSpec) -> None:
    last = store.latest_run(job.name)
    if last is not None:
        print(
            f"labrun: run {last.id} of job {job.name} already ended ({last.state.value}), so there is "
            "nothing to resume: starting a new run of every task"
            + (
                f" (`labrun run --rerun-failed {job.file}` runs only what did not succeed)"
                if last.state is not RunState.SUCCEEDED
                else ""
            ),
            file=sys.stderr,
            flush=True,
        )


def _with_environment(job: JobSpec) -> JobSpec:
    """The job with what it takes from labrun's environment (secrets, ${VAR}s), or exit 3."""
    require_secrets(job)
    unset = unset_in_env(job, os.environ)
    if unset:
        raise PreflightFailed(f"{job.file}: " + "; ".join(unset))
    return with_env_expanded(job, os.environ)


def _say(text: str) -> None:
    print(f"labrun: {text}", file=sys.stderr, flush=True)


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
    excused: int = 0,
) -> RunResult:
    private.makedirs(paths.shared_dir(run.id))
    waker = Waker()
    connection = connect_nodes(lab, waker)
    executors = connection.executors
    counts = store.counts(run.id)
    reporter = _reporter(job, sum(counts.values()), options)
    runner = Runner(
        store,
        paths,
        job,
        run,
        connection.nodes,
        executors,
        waker,
        reporter,
        node_max_failures=lab.node_max_failures,
    )
    runner.excused = excused
    try:
        if prepare is not None:
            prepare(runner)  # a resume adopts attempts that still run
        # What exists now (modules, the job, the lab) lives as long as the run: the cyclic
        # collector, run every few hundred allocations in the loop, need not walk it again.
        # Nothing is lost: unfrozen after the run, it is collected as before.
        gc.freeze()
        with stop_on_signals(runner):
            state = runner.drive(time.time)
    except Exception as exc:  # a bug: the run must not stay `running` after its runner exits
        _record_crash(store, run.id, exc)
        raise
    finally:
        gc.unfreeze()  # a program that runs labrun as a library collects as before
        reporter.close()
        for executor in executors.values():
            executor.close()
        waker.close()
    final = store.run(run.id)
    assert final is not None
    if job.notify is not None:
        from labrun.notify import notify

        for problem in notify(job, store, final):  # reported; the run's result stands
            print(f"labrun: {problem}", file=sys.stderr, flush=True)
    return RunResult(final, state, store.counts(run.id))


def _record_crash(store: Store, run_id: int, exc: Exception) -> None:
    """Mark the run interrupted (resumable) on the way out of an internal error."""
    cause = f"the runner stopped on an internal error: {type(exc).__name__}: {exc}"[:500]
    with contextlib.suppress(Exception), store.tx():  # the store itself may be what failed
        store.set_run_state(run_id, RunState.INTERRUPTED, time.time(), cause)


def job_of(run: RunRow) -> JobSpec:
    """The job as it was when the run started (the file may have changed since)."""
    return parse_job(run.job_text, run.job_file)


def find_run(store: Reads, ref: str) -> RunRow:
    """A run by id, `last` (the latest run), or `last:JOB` (the latest run of that job)."""
    if ref == "last" or ref.startswith("last:"):
        job = ref.partition(":")[2] or None
        run = store.latest_run(job)
        if run is None:
            raise UsageError(_no_runs(store, job))
        return run
    if not ref.isdigit():
        raise UsageError(
            f"{_short(ref)!r} is not a run: give a run id (see `labrun runs`), `last` or `last:JOB`"
        )
    found = store.run(int(ref))
    if found is None:
        raise UsageError(f"there is no run {ref}: see `labrun runs` for the runs there are")
    return found


def _no_runs(store: Reads, job: str | None) -> str:
    if job is None:
        return "there are no runs yet: start one with `labrun run JOB.toml`"
    names = store.job_names()
    close = difflib.get_close_matches(job, names, n=1)
    if close:
        return f"there is no run of job {_short(job)!r}; did you mean last:{close[0]}?"
    known = f" (jobs with runs: {', '.join(names[:10])})" if names else ""
    return f"there is no run of job {_short(job)!r}{known}: `labrun runs` lists the runs there are"


def _short(text: str) -> str:
    return shorten_middle(text, 60)  # a value echoed in a message: never a whole 5 MB argument


def wait_for_attempt(reader: ReadStore, task_id: int, poll: float = 0.5) -> list[AttemptRow]:
    """The task's attempts once it has one, or [] when it ends without (skipped, cancelled);
    each look is its own snapshot, so it sees what the runner wrote since."""
    while True:
        with reader.snapshot() as snap:
            attempts = snap.attempts(task_id)
            if attempts or snap.task(task_id).state.terminal:
                return attempts
        time.sleep(poll)


def find_task(store: Reads, run: RunRow, ref: str) -> TaskRow:
    """A task of a run by its name: `report`, `resize[3]`; `0` is task 0 (`setup`)."""
    task = store.task_by_name(run.id, SETUP_NAME if ref == "0" else ref)
    if task is not None:
        return task
    base = ref.split("[", 1)[0]
    unmade = store.task_by_name(run.id, base) if ref.endswith("]") and base != ref else None
    if unmade is not None and unmade.idx is None and unmade.state is TaskState.SKIPPED:
        return unmade  # a fan-out that was never made (task 0 failed): its row says why
    specs = [spec.name for spec in job_of(run).tasks]
    close = difflib.get_close_matches(ref, specs, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; its tasks are named {', '.join(specs[:10])}"
    if ref in specs:
        hint = f"; {ref!r} fans out: name one item, e.g. {ref}[0]"
    raise UsageError(f"run {run.id} has no task {ref!r}{hint}")
