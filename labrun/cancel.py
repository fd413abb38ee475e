"""`labrun cancel RUN`: end a run for good, from another terminal.

If a runner holds the job's lock it is asked to cancel (SIGUSR1): it stops launching,
sends TERM and then KILL after `grace` to what runs, and records the tasks `cancelled`.
If no runner holds the lock (it was killed), the run is cancelled here: what an earlier
runner left running is stopped through the backend of the node it runs on (a process
group, a container found by its attempt label, a remote attempt by the agent's record),
and every unfinished task is marked cancelled.
"""

from __future__ import annotations

import os
import signal
import time

from labrun.backends.registry import stop_run_attempts
from labrun.config.lab import LabConfig
from labrun.errors import LockHeld, UsageError
from labrun.ledger import Ledger
from labrun.lock import JobLock, holder
from labrun.paths import StatePaths
from labrun.rows import RunRow
from labrun.states import Outcome, RunState, TaskState
from labrun.store import Store

UNFINISHED = (RunState.RUNNING, RunState.INTERRUPTED)
STOP_WAIT = 5.0  # seconds between TERM and KILL for attempts a dead runner left behind


def cancel_run(store: Store, paths: StatePaths, lab: LabConfig, run: RunRow, wait: float = 60.0) -> str:
    """Cancel `run`; returns a line saying what was done."""
    if run.state not in UNFINISHED:
        raise UsageError(f"run {run.id} is already {run.state.value}: there is nothing to cancel")
    lock = JobLock(paths.lock(run.job), run.job)
    deadline = time.monotonic() + wait
    signalled: int | None = None
    while time.monotonic() < deadline:
        try:
            with lock.hold(False):
                now = store.run(run.id)
                if now is not None and now.state not in UNFINISHED:  # its runner just finished it
                    return _finished_by_runner(now, signalled)
                return _cancel_here(store, lab, run)  # no runner: nobody else writes this run
        except LockHeld:
            pass
        now = store.run(run.id)
        if now is not None and now.state not in UNFINISHED:
            return _finished_by_runner(now, signalled)
        info = holder(lock.path)
        pid = info.get("pid")
        if info.get("run") not in (None, run.id):
            return _cancel_here(store, lab, run)  # the runner drives another run of the job
        if isinstance(pid, int) and info.get("run") == run.id and signalled != pid:
            os.kill(pid, signal.SIGUSR1)  # the runner's handler: Stop.CANCEL
            signalled = pid
        time.sleep(0.1)
    return f"run {run.id}: asked its runner (pid {signalled}) to cancel; it is still stopping its attempts"


def _finished_by_runner(run: RunRow, signalled: int | None) -> str:
    return f"run {run.id}: {run.state.value} (its runner, pid {signalled}, stopped its attempts)"


def _cancel_here(store: Store, lab: LabConfig, run: RunRow) -> str:
    """TERM, then KILL, what an earlier runner started and left running, through each
    attempt's backend; then every open attempt and unfinished task is recorded."""
    stopped, problems = stop_run_attempts(lab, store.open_attempts(run.id), STOP_WAIT)
    now = time.time()
    detail = "cancelled by `labrun cancel` while no runner was driving the run"
    ledger = Ledger(store, run.id)
    with ledger.tx():
        for attempt in store.open_attempts(run.id):
            outcome = Outcome.KILLED if attempt.id in stopped else Outcome.LOST
            ledger.abandon(attempt, outcome, detail, now)
        unfinished = [TaskState.WAITING, TaskState.READY, TaskState.RUNNING]
        for task in list(store.tasks(run.id, unfinished)):
            ledger.cancel(task, "run cancelled", now)
        store.set_run_state(run.id, RunState.CANCELLED, now, "run cancelled by `labrun cancel`")
    text = f"run {run.id}: cancelled ({len(stopped)} leftover attempt(s) stopped)"
    return "\n".join([text, *(f"labrun: {p}" for p in problems)])
