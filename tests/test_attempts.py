"""Several attempts of one task: the first success wins, the others are superseded.

Through the runner with the fake executor (time is stepped, nothing sleeps) on a real
SQLite store: what is asserted is read back from the store's rows and event rows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_runner import FakeExecutor, make_runner

from labrun.config.job import parse_job
from labrun.config.lab import NodeSpec
from labrun.errors import StoreError
from labrun.executors.base import Waker
from labrun.executors.process import ProcessExecutor
from labrun.executors.procfs import alive, process_start_time, start_tick
from labrun.expand import instances
from labrun.migrations import MIGRATIONS
from labrun.model import Facts, Launch, Runtime, Started
from labrun.paths import StatePaths
from labrun.progress import Reporter
from labrun.resume import reconcile
from labrun.rows import TaskRow
from labrun.runner import START_COMMIT_DELAY, Runner
from labrun.states import (
    AttemptState,
    Outcome,
    RunState,
    Subject,
    TaskState,
    TransitionError,
    check_attempt_transition,
)
from labrun.store import Store

PAIR = """
[job]
name = "pair"
[defaults]
memory = "100MiB"
retries = 2
retry_delay = "10s"
grace = "5s"
[[tasks]]
name = "t"
command = "true"
[[tasks]]
name = "after"
command = "true"
depends_on = ["t"]
"""


def task(store: Store, runner: Runner, name: str) -> TaskRow:
    found = store.task_by_name(runner.run.id, name)
    assert found is not None
    return found


def two_attempts(tmp_path: Path, fake: FakeExecutor) -> tuple[Runner, Store, Launch, Launch]:
    """`t` with its first attempt and a second one asked for while the first runs."""
    runner, store = make_runner(tmp_path, PAIR, fake, cpus=4)
    runner.tick(0.0)
    (first,) = fake.launches.values()
    assert runner.launch_extra(task(store, runner, "t").id)
    runner.tick(1.0)
    second = next(launch for launch in fake.launches.values() if launch is not first)
    assert (first.attempt, second.attempt) == (1, 2)
    assert task(store, runner, "t").state is TaskState.RUNNING and runner.counts[TaskState.RUNNING] == 1
    return runner, store, first, second


def test_second_attempt_wins_first_is_superseded_and_dependents_released_once(tmp_path: Path) -> None:
    fake = FakeExecutor(obeys={signal.SIGKILL})  # the loser ignores TERM: KILL after grace
    runner, store, first, second = two_attempts(tmp_path, fake)
    fake.finish(second, 0)
    runner.tick(2.0)  # attempt 2 succeeded: the task succeeds, attempt 1 gets TERM
    t = task(store, runner, "t")
    assert t.state is TaskState.SUCCEEDED
    assert fake.signals == [(first.attempt_id, signal.SIGTERM)]
    after = task(store, runner, "after")
    assert after.state is TaskState.RUNNING  # released, and placed beside the loser
    runner.tick(7.0)  # grace over
    assert fake.signals[-1] == (first.attempt_id, signal.SIGKILL)
    runner.tick(7.1)  # the loser's end is collected
    (after_launch,) = [x for x in fake.launches.values() if x.task_name == "after"]
    fake.finish(after_launch, 0)
    runner.tick(8.0)
    assert runner.done() and runner._finish(9.0) is RunState.SUCCEEDED

    attempts = store.attempts(t.id)
    assert [(a.n, a.outcome, a.state) for a in attempts] == [
        (1, Outcome.SUPERSEDED, AttemptState.SUPERSEDED),
        (2, Outcome.SUCCEEDED, AttemptState.RECORDED),
    ]
    assert "another attempt succeeded first" in (attempts[0].detail or "")
    assert t.failures == 0 and t.attempts == 2  # superseded does not count
    task_events = [
        (e.from_state, e.to_state) for e in store.events(runner.run.id, t.id) if e.subject is Subject.TASK
    ]
    assert task_events == [("ready", "running"), ("running", "succeeded")]  # succeeded once
    released = [e for e in store.events(runner.run.id, after.id) if e.to_state == "ready"]
    assert len(released) == 1 and store.attempts(after.id)[0].n == 1  # released once, run once
    story = [(e.attempt, e.from_state, e.to_state, e.cause) for e in store.events(runner.run.id, t.id)]
    assert (1, "ended", "superseded", "superseded: attempt 2 succeeded first") in story
    assert (2, None, "launching", "on local: another attempt while the first runs") in story


def test_both_succeed_in_the_same_tick_the_first_seen_wins(tmp_path: Path) -> None:
    fake = FakeExecutor()
    runner, store, first, second = two_attempts(tmp_path, fake)
    fake.finish(first, 0)
    fake.finish(second, 0)
    runner.tick(2.0)
    t = task(store, runner, "t")
    assert t.state is TaskState.SUCCEEDED and t.failures == 0
    assert [a.outcome for a in store.attempts(t.id)] == [Outcome.SUCCEEDED, Outcome.SUPERSEDED]
    assert fake.signals == []  # nothing was left to stop
    assert len([e for e in store.events(runner.run.id, t.id) if e.to_state == "succeeded"]) == 1


def test_a_lost_attempt_beside_a_live_sibling_leaves_the_task_running(tmp_path: Path) -> None:
    fake = FakeExecutor()
    runner, store, first, second = two_attempts(tmp_path, fake)
    del fake.launches[first.attempt_id]
    fake.done.append((first.attempt_id, Facts(None, None, 2.0, lost=True, detail="node went away")))
    runner.tick(2.0)
    t = task(store, runner, "t")
    assert t.state is TaskState.RUNNING and runner.counts[TaskState.READY] == 0
    assert list(fake.launches) == [second.attempt_id]  # nothing new was started
    assert store.attempts(t.id)[0].outcome is Outcome.LOST
    # a counted failure of the last live attempt then decides: a retry after backoff
    fake.finish(second, 3)
    runner.tick(3.0)
    t = task(store, runner, "t")
    assert t.state is TaskState.READY and t.failures == 1 and t.not_before == 8.0


def test_a_counted_failure_beside_a_live_sibling_counts_then_the_sibling_wins(tmp_path: Path) -> None:
    fake = FakeExecutor()
    runner, store, first, second = two_attempts(tmp_path, fake)
    fake.finish(first, 1)
    runner.tick(2.0)
    t = task(store, runner, "t")
    assert t.state is TaskState.RUNNING and t.failures == 1  # counted, kept in the store
    fake.finish(second, 0)
    runner.tick(3.0)
    t = task(store, runner, "t")
    assert t.state is TaskState.SUCCEEDED and t.failures == 1
    assert [a.outcome for a in store.attempts(t.id)] == [Outcome.FAILED, Outcome.SUCCEEDED]


def test_extra_attempt_of_a_task_that_is_not_running_is_refused(tmp_path: Path) -> None:
    fake = FakeExecutor()
    runner, store = make_runner(tmp_path, PAIR, fake, cpus=4)
    runner.tick(0.0)
    assert not runner.launch_extra(task(store, runner, "after").id)  # still waiting


def test_attempt_transition_table() -> None:
    check_attempt_transition(AttemptState.LAUNCHING, AttemptState.RUNNING)
    check_attempt_transition(AttemptState.ENDED, AttemptState.SUPERSEDED)
    for old, new in [
        (AttemptState.RECORDED, AttemptState.RUNNING),
        (AttemptState.RUNNING, AttemptState.LAUNCHING),
        (AttemptState.SUPERSEDED, AttemptState.ENDED),
        (AttemptState.RUNNING, AttemptState.RECORDED),  # not without its end
    ]:
        with pytest.raises(TransitionError, match=f"{old.value} -> {new.value}"):
            check_attempt_transition(old, new)


def test_finishing_a_recorded_attempt_again_raises(tmp_path: Path) -> None:
    fake = FakeExecutor()
    runner, store = make_runner(tmp_path, PAIR, fake, cpus=4)
    runner.tick(0.0)
    (launch,) = fake.launches.values()
    fake.finish(launch, 0)
    runner.tick(1.0)
    (attempt,) = store.attempts(task(store, runner, "t").id)
    assert attempt.state is AttemptState.RECORDED
    facts = Facts(1, None, 2.0)
    with pytest.raises(StoreError, match="was recorded, not running"), store.tx():
        store.finish_attempt(
            attempt.id, facts, Outcome.FAILED, "again", AttemptState.RUNNING, AttemptState.RECORDED
        )
    with pytest.raises(TransitionError), store.tx():
        store.finish_attempt(
            attempt.id, facts, Outcome.FAILED, "again", AttemptState.RECORDED, AttemptState.RECORDED
        )
    assert store.attempt(attempt.id).outcome is Outcome.SUCCEEDED


class Adopting(FakeExecutor):
    """A fake executor of a restarted runner: adopts the attempts in `alive`."""

    def __init__(self, alive: set[int]) -> None:
        super().__init__()
        self.alive = alive

    def adopt(self, attempt_id: int, launch: Launch, started: Started) -> bool:
        if attempt_id not in self.alive:
            return False
        self.launches[attempt_id] = launch
        return True


def restarted(tmp_path: Path, runner: Runner, alive: set[int]) -> tuple[Runner, Adopting]:
    """A second runner on the same store and run, as after a SIGKILL and `--resume`."""
    fake = Adopting(alive)
    again = Runner(
        runner.store,
        runner.paths,
        runner.job,
        runner.run,
        runner.nodes,
        {("local", Runtime.PROCESS): fake},
        runner.waker,
        runner.reporter,
        rng=lambda: 0.0,
    )
    reconcile(again, 5.0)
    return again, fake


def test_resume_a_lost_attempt_beside_an_adopted_sibling_keeps_the_task_running(tmp_path: Path) -> None:
    runner, store, _first, second = two_attempts(tmp_path, FakeExecutor())
    again, fake = restarted(tmp_path, runner, alive={second.attempt_id})
    t = task(store, again, "t")
    assert t.state is TaskState.RUNNING and again.counts[TaskState.READY] == 0
    lost, adopted = store.attempts(t.id)
    assert (lost.outcome, lost.state) == (Outcome.LOST, AttemptState.ABANDONED)
    assert (adopted.outcome, adopted.state) == (None, AttemptState.RUNNING)
    again.tick(6.0)
    assert list(fake.launches) == [second.attempt_id]  # nothing started again
    fake.finish(fake.launches[second.attempt_id], 0)
    again.tick(7.0)
    assert task(store, again, "t").state is TaskState.SUCCEEDED


def test_resume_remembers_that_a_task_had_its_speculative_copy(tmp_path: Path) -> None:
    """Two attempts of t were open when the runner died (an original and its copy): the
    resumed runner gives t no further copy, whichever of the two it adopted."""
    for kept in ("first", "second"):
        runner, _store, first, second = two_attempts(tmp_path / kept, FakeExecutor())
        t_id = runner.active[first.attempt_id].task_id
        keep = first if kept == "first" else second
        again, _ = restarted(tmp_path / kept, runner, alive={keep.attempt_id})
        assert again.speculator.copied == {t_id}


def test_resume_with_every_attempt_lost_queues_the_task_again(tmp_path: Path) -> None:
    runner, store, _first, _second = two_attempts(tmp_path, FakeExecutor())
    again, _ = restarted(tmp_path, runner, alive=set())
    t = task(store, again, "t")
    assert t.state is TaskState.READY and t.failures == 0
    (requeued,) = [e for e in store.events(again.run.id, t.id) if e.to_state == "ready"]
    assert requeued.cause.startswith("attempt 1, 2 lost:")


def test_resume_stops_a_loser_whose_task_already_succeeded(tmp_path: Path) -> None:
    fake1 = FakeExecutor()
    runner, store, first, second = two_attempts(tmp_path, fake1)
    fake1.finish(second, 0)
    runner.tick(2.0)  # succeeded; the runner dies before the loser's end is seen
    again, fake = restarted(tmp_path, runner, alive={first.attempt_id})
    again.tick(6.0)
    assert fake.signals == [(first.attempt_id, signal.SIGTERM)]
    again.tick(11.0)  # KILL after grace; the fake obeys it
    again.tick(11.1)
    t = task(store, again, "t")
    assert [a.outcome for a in store.attempts(t.id)] == [Outcome.SUPERSEDED, Outcome.SUCCEEDED]
    assert t.state is TaskState.SUCCEEDED


def test_a_retried_task_tells_its_story_in_events(tmp_path: Path) -> None:
    fake = FakeExecutor()
    runner, store = make_runner(tmp_path, PAIR, fake, cpus=4)
    runner.tick(0.0)
    fake.finish(next(iter(fake.launches.values())), 3)
    runner.tick(1.0)
    runner.tick(6.0)
    fake.finish(next(iter(fake.launches.values())), 0)
    runner.tick(7.0)
    t = task(store, runner, "t")
    story = [
        (e.subject.value, e.attempt, e.from_state, e.to_state, e.cause)
        for e in store.events(runner.run.id, t.id)
    ]
    assert story == [
        ("task", 1, "ready", "running", "attempt 1 on local"),
        ("attempt", 1, "launching", "running", "started (pid 1001)"),
        ("attempt", 1, "running", "ended", "failed: exited 3"),
        ("attempt", 1, "ended", "recorded", "retry in 5.0s (1 retry left after it)"),
        (
            "task",
            1,
            "running",
            "ready",
            "attempt 1 on local: exited 3; retry in 5.0s (1 retry left after it)",
        ),
        ("task", 2, "ready", "running", "attempt 2 on local"),
        ("attempt", 2, "launching", "running", "started (pid 1002)"),
        ("attempt", 2, "running", "ended", "succeeded: exited 0"),
        ("attempt", 2, "ended", "recorded", "the task succeeded"),
        ("task", 2, "running", "succeeded", "attempt 2 on local: succeeded: exited 0"),
    ]


def test_a_database_of_the_previous_schema_migrates(tmp_path: Path) -> None:
    path = tmp_path / "labrun.db"
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 2")
    conn.executescript(
        """
        INSERT INTO runs (id, job, job_file, job_text, state, created)
            VALUES (1, 'j', 'j.toml', '', 'running', 0);
        INSERT INTO tasks (id, run_id, seq, name, spec, state, memory, attempts)
            VALUES (1, 1, 1, 't[0]', 't', 'running', 1, 3);
        INSERT INTO attempts (task_id, run_id, n, node, runtime, started, outcome)
            VALUES (1, 1, 1, 'local', 'process', 0, 'failed');
        INSERT INTO attempts (task_id, run_id, n, node, runtime, started, pid)
            VALUES (1, 1, 2, 'local', 'process', 0, 77);
        INSERT INTO attempts (task_id, run_id, n, node, runtime, started)
            VALUES (1, 1, 3, 'local', 'process', 0);
        INSERT INTO events (run_id, task_id, time, to_state, cause)
            VALUES (1, NULL, 0, 'running', 'run started');
        INSERT INTO events (run_id, task_id, attempt, time, from_state, to_state, cause)
            VALUES (1, 1, 2, 0, 'running', 'running', 'attempt 2 adopted');
        INSERT INTO events (run_id, task_id, attempt, time, from_state, to_state, cause)
            VALUES (1, 1, 1, 0, 'ready', 'running', 'attempt 1 on local');
        """
    )
    conn.commit()
    conn.close()
    store = Store(str(path))
    assert [a.state for a in store.attempts(1)] == [
        AttemptState.RECORDED,
        AttemptState.RUNNING,
        AttemptState.LAUNCHING,
    ]
    assert [e.subject for e in store.events(1)] == [Subject.RUN, Subject.ATTEMPT, Subject.TASK]


@contextlib.contextmanager
def process_runner(tmp_path: Path, body: str) -> Iterator[tuple[Runner, Store]]:
    """A runner of the job `body` with the real process executor on a 4-cpu node."""
    job = parse_job(body, str(tmp_path / "job.toml"))
    store = Store(str(tmp_path / "labrun.db"))
    with store.tx():
        run_id = store.create_run(job.name, job.file, job.text, time.time())
        store.add_tasks(run_id, instances(job))
    run = store.run(run_id)
    assert run is not None
    paths = StatePaths(str(tmp_path / "state"))
    paths.ensure()
    waker = Waker()
    executor = ProcessExecutor(waker)
    node = NodeSpec("local", 4, 8 * 1024**3)
    try:
        yield (
            Runner(store, paths, job, run, [node], {("local", Runtime.PROCESS): executor}, waker, Reporter()),
            store,
        )
    finally:
        executor.close()
        waker.close()


def test_a_second_attempt_of_real_processes_wins_and_the_first_is_stopped(tmp_path: Path) -> None:
    """End to end with the process executor: attempt 1 sleeps, attempt 2 (asked for while
    it runs) exits 0 at once; attempt 1's process is stopped with TERM and recorded superseded."""
    body = PAIR.replace(
        'command = "true"', """command = 'if [ "$LABRUN_ATTEMPT" = 1 ]; then sleep 60; fi'""", 1
    )
    with process_runner(tmp_path, body) as (runner, store):
        runner.tick(time.time())
        runner.tick(time.time() + START_COMMIT_DELAY)  # its start (pid) is committed by then
        t = task(store, runner, "t")
        (first,) = store.attempts(t.id)
        assert first.pid is not None and runner.launch_extra(t.id)
        assert runner.drive(time.time) is RunState.SUCCEEDED
    loser, winner = store.attempts(t.id)
    assert (loser.outcome, loser.state, loser.signal) == (
        Outcome.SUPERSEDED,
        AttemptState.SUPERSEDED,
        signal.SIGTERM,
    )
    assert (winner.outcome, winner.exit_code) == (Outcome.SUCCEEDED, 0)
    assert not alive(first.pid, first.pid_start)  # nothing left running
    assert task(store, runner, "t").failures == 0
    assert [a.outcome for a in store.attempts(task(store, runner, "after").id)] == [Outcome.SUCCEEDED]


def test_a_running_attempt_is_committed_with_its_start_time_and_an_ended_one_without(tmp_path: Path) -> None:
    """The process runtime reads a process's start time (what tells it from a later process
    with the same pid, for adoption) when the start is committed, and only of an attempt
    still running then: an attempt that ended first is recorded ended in that transaction."""
    gate = tmp_path / "go"
    body = PAIR.replace('command = "true"', f"command = 'while [ ! -e {gate} ]; do sleep 0.05; done'", 1)
    body = body.replace('depends_on = ["t"]', "")
    with process_runner(tmp_path, body) as (runner, store):
        runner.tick(time.time())  # both start; neither start is committed yet
        short = task(store, runner, "after")
        deadline = time.monotonic() + 30
        while not store.attempts(short.id)[0].outcome and time.monotonic() < deadline:
            runner.waker.wait(1.0)
            runner.tick(time.time())
        (ended,) = store.attempts(short.id)
        (running,) = store.attempts(task(store, runner, "t").id)
        assert ended.outcome is Outcome.SUCCEEDED and ended.pid is not None
        assert running.state is AttemptState.RUNNING and running.pid is not None
        assert running.pid_start is not None and alive(running.pid, running.pid_start)
        gate.write_text("go")
        assert runner.drive(time.time) is RunState.SUCCEEDED
    assert not alive(running.pid, running.pid_start)


def test_the_start_time_taken_at_the_spawn_is_the_one_proc_shows() -> None:
    """The spawn brackets a process's start with two CLOCK_BOOTTIME readings; when both fall
    in one clock tick, that tick is taken as its start time without reading /proc. It must
    be the start time /proc gives (what adoption compares), for every process it pins."""
    pinned = 0
    children = []
    try:
        for _ in range(40):
            before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            pid = os.posix_spawn("/bin/sleep", ["sleep", "30"], dict(os.environ))
            tick = start_tick(before, time.clock_gettime_ns(time.CLOCK_BOOTTIME))
            children.append(pid)
            if tick is not None:
                pinned += 1
                assert tick == process_start_time(pid)
        assert pinned >= 20  # a spawn takes well under a tick (10 ms): most are pinned
        assert start_tick(0, 10**10) is None  # readings ticks apart pin nothing
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
