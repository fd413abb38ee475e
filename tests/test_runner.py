"""The runner loop with a fake executor: time is stepped, nothing sleeps."""

from __future__ import annotations

import io
import signal
from pathlib import Path

from labrun.config.job import parse_job
from labrun.config.lab import NodeSpec
from labrun.executors.base import Executor, Waker
from labrun.expand import instances
from labrun.model import Facts, Launch, LaunchError, Runtime, Started
from labrun.outcome import Stop
from labrun.paths import StatePaths
from labrun.progress import PlainReporter, Reporter
from labrun.runner import START_COMMIT_DELAY, Runner
from labrun.states import Outcome, RunState, TaskState
from labrun.store import Store


class FakeExecutor(Executor):
    """Attempts end only when the test says so (or on a signal, if `obeys` is set)."""

    runtime = Runtime.PROCESS

    def __init__(self, obeys: set[int] | None = None) -> None:
        self.launches: dict[int, Launch] = {}
        self.done: list[tuple[int, Facts]] = []
        self.signals: list[tuple[int, int]] = []
        self.obeys = obeys if obeys is not None else {signal.SIGKILL}
        self.fail_start: str | None = None

    def start(self, launch: Launch) -> Started:
        if self.fail_start:
            raise LaunchError(self.fail_start)
        self.launches[launch.attempt_id] = launch
        return Started(pid=1000 + launch.attempt_id, mechanism="fake")

    def finish(self, launch: Launch, code: int | None, sig: int | None = None) -> None:
        del self.launches[launch.attempt_id]
        self.done.append((launch.attempt_id, Facts(code, sig, 0.0)))

    def finished(self) -> list[tuple[int, Facts]]:
        done, self.done = self.done, []
        return done

    def signal(self, attempt_id: int, signum: int) -> None:
        self.signals.append((attempt_id, signum))
        if signum in self.obeys and attempt_id in self.launches:
            self.finish(self.launches[attempt_id], None, signum)

    def running(self) -> list[int]:
        return list(self.launches)


def make_runner(tmp_path: Path, body: str, executor: Executor, cpus: float = 2) -> tuple[Runner, Store]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    job = parse_job(body, str(tmp_path / "job.toml"))
    store = Store(str(tmp_path / "labrun.db"))
    with store.tx():
        run_id = store.create_run(job.name, job.file, job.text, 0.0)
        store.add_tasks(run_id, instances(job))
    run = store.run(run_id)
    assert run is not None
    node = NodeSpec("local", cpus, 8 * 1024**3)
    paths = StatePaths(str(tmp_path / "state"))
    runner = Runner(
        store,
        paths,
        job,
        run,
        [node],
        {("local", Runtime.PROCESS): executor},
        Waker(),
        Reporter(),
        rng=lambda: 0.0,
    )
    return runner, store


JOB = """
[job]
name = "j"
{job_extra}
[defaults]
memory = "100MiB"
retries = 2
retry_delay = "10s"
{defaults_extra}
[[tasks]]
name = "t"
command = "true"
items = {items}
"""


def job(items: str = '["a"]', job_extra: str = "", defaults_extra: str = "") -> str:
    return JOB.format(items=items, job_extra=job_extra, defaults_extra=defaults_extra)


def test_parallelism_is_capped_by_cpus_and_max_parallel(tmp_path: Path) -> None:
    fake = FakeExecutor()
    runner, _ = make_runner(tmp_path, job("{ range = [0, 10] }"), fake, cpus=4)
    runner.tick(0.0)
    assert len(fake.launches) == 4
    fake2 = FakeExecutor()
    runner2, _ = make_runner(tmp_path / "b", job("{ range = [0, 10] }", "max_parallel = 3"), fake2, cpus=8)
    runner2.tick(0.0)
    assert len(fake2.launches) == 3


def test_failure_backs_off_then_retries_then_succeeds(tmp_path: Path) -> None:
    fake = FakeExecutor()
    runner, store = make_runner(tmp_path, job(), fake)
    runner.tick(0.0)
    (launch,) = fake.launches.values()
    fake.finish(launch, 1)
    wake = runner.tick(1.0)
    assert wake == 6.0  # 10 s first delay, equal jitter 0 → half of it
    assert fake.launches == {}
    runner.tick(5.9)
    assert fake.launches == {}  # not before its time
    runner.tick(6.0)
    (second,) = fake.launches.values()
    assert second.attempt == 2 and second.env["LABRUN_ATTEMPT"] == "2"
    fake.finish(second, 0)
    runner.tick(7.0)
    assert runner.done()
    task = store.task_by_name(runner.run.id, "t[0]")
    assert task is not None and task.state is TaskState.SUCCEEDED and task.failures == 1
    assert [a.outcome for a in store.attempts(task.id)] == [Outcome.FAILED, Outcome.SUCCEEDED]


def test_retries_exhausted_fails_the_task(tmp_path: Path) -> None:
    fake = FakeExecutor()
    runner, store = make_runner(tmp_path, job(), fake)
    now = 0.0
    for _ in range(3):
        runner.tick(now)
        (launch,) = fake.launches.values()
        fake.finish(launch, 2)
        runner.tick(now + 1)  # records the end; the retry waits for its backoff
        now += 100
    assert runner.done()
    assert runner._finish(now) is RunState.FAILED
    task = store.task_by_name(runner.run.id, "t[0]")
    assert task is not None and task.state is TaskState.FAILED and "all 2 retries used" in (task.reason or "")


def test_config_error_is_not_retried(tmp_path: Path) -> None:
    fake = FakeExecutor()
    fake.fail_start = "command not found: 'nope'"
    runner, store = make_runner(tmp_path, job(), fake)
    runner.tick(0.0)
    assert runner.done()
    task = store.task_by_name(runner.run.id, "t[0]")
    assert task is not None and task.state is TaskState.FAILED
    (attempt,) = store.attempts(task.id)
    assert attempt.outcome is Outcome.CONFIG_ERROR and attempt.detail == "command not found: 'nope'"


def test_timeout_sends_term_then_kill_after_grace(tmp_path: Path) -> None:
    fake = FakeExecutor(obeys={signal.SIGKILL})  # ignores SIGTERM
    runner, store = make_runner(tmp_path, job(defaults_extra='timeout = "30s"\ngrace = "5s"'), fake)
    assert runner.tick(0.0) == START_COMMIT_DELAY  # the start's pid, committed with the next transaction
    assert runner.tick(START_COMMIT_DELAY) == 30.0
    (launch,) = fake.launches.values()
    assert runner.tick(30.0) == 35.0
    assert fake.signals == [(launch.attempt_id, signal.SIGTERM)]
    runner.tick(35.0)
    assert fake.signals[-1] == (launch.attempt_id, signal.SIGKILL)
    runner.tick(35.1)
    task = store.task_by_name(runner.run.id, "t[0]")
    assert task is not None
    (attempt, *_) = store.attempts(task.id)
    assert attempt.outcome is Outcome.TIMEOUT and task.failures == 1


def test_shutdown_kills_without_counting_and_task_can_run_again(tmp_path: Path) -> None:
    fake = FakeExecutor(obeys={signal.SIGTERM, signal.SIGKILL})
    runner, store = make_runner(tmp_path, job('["a", "b", "c"]'), fake)
    runner.tick(0.0)
    assert len(fake.launches) == 2
    runner.request_stop(Stop.SHUTDOWN)
    runner.tick(1.0)  # sends TERM
    runner.tick(1.1)  # collects the ends
    assert runner.done() and not fake.launches
    assert runner._finish(1.2) is RunState.INTERRUPTED
    states = {t.name: t for t in store.tasks(runner.run.id)}
    assert {t.state for t in states.values()} == {TaskState.READY}
    assert all(t.failures == 0 for t in states.values())
    killed = [a.outcome for t in states.values() for a in store.attempts(t.id)]
    assert killed == [Outcome.KILLED, Outcome.KILLED]


def test_a_task_bigger_than_every_node_fails_at_once(tmp_path: Path) -> None:
    fake = FakeExecutor()
    runner, store = make_runner(tmp_path, job(defaults_extra="cpus = 16"), fake, cpus=2)
    runner.tick(0.0)
    task = store.task_by_name(runner.run.id, "t[0]")
    assert task is not None and task.state is TaskState.FAILED
    assert "needs 16 cpus" in (task.reason or "") and "largest node (local) has 2 cpus" in (task.reason or "")


class QueuedExecutor(FakeExecutor):
    """Its attempts wait in a cluster's queue (as Slurm's do while the partition is full)."""

    def queued(self) -> dict[int, str]:
        return dict.fromkeys(self.launches, "Resources")


def test_the_plain_progress_line_says_how_many_attempts_wait_in_a_clusters_queue(tmp_path: Path) -> None:
    out = io.StringIO()
    runner, _ = make_runner(tmp_path, job('["a", "b"]'), QueuedExecutor(obeys=set()))
    runner.reporter = PlainReporter(out, interval=0)
    runner.tick(0.0)
    assert "0/2 done: 2 running; 2 queued in a cluster: 2 Resources" in out.getvalue(), out.getvalue()
