"""`labrun cancel RUN`: end a run for good, from another terminal.

If a runner holds the job's lock it is asked to cancel (SIGUSR1): it stops launching,
sends TERM and then KILL after `grace` to what runs, and records the tasks `cancelled`.
If no runner holds the lock (it was killed), the run is cancelled here: processes an
earlier runner left behind are stopped and every unfinished task is marked cancelled.
"""

from __future__ import annotations

import os
import signal
import time

from labrun.errors import LockHeld, UsageError
from labrun.executors.process import alive
from labrun.ledger import Ledger
from labrun.lock import JobLock, holder
from labrun.paths import StatePaths
from labrun.rows import RunRow
from labrun.states import Outcome, RunState, TaskState
from labrun.store import Store

UNFINISHED = (RunState.RUNNING, RunState.INTERRUPTED)
STOP_WAIT = 5.0  # seconds between TERM and KILL for processes a dead runner left behind


def cancel_run(store: Store, paths: StatePaths, run: RunRow, wait: float = 60.0) -> str:
    """Cancel `run`; returns a line saying what was done."""
    if run.state not in UNFINISHED:
        raise UsageError(f"run {run.id} is already {run.state.value}: there is nothing to cancel")
    lock = JobLock(paths.lock(run.job), run.job)
    deadline = time.monotonic() + wait
    signalled: int | None = None
    while time.monotonic() < deadline:
        try:
            with lock.hold(False):
                return _cancel_here(store, run)  # no runner: nobody else writes this run
        except LockHeld:
            pass
        now = store.run(run.id)
        if now is not None and now.state not in UNFINISHED:
            return f"run {run.id}: {now.state.value} (its runner, pid {signalled}, stopped its attempts)"
        info = holder(lock.path)
        pid = info.get("pid")
        if info.get("run") not in (None, run.id):
            return _cancel_here(store, run)  # the runner drives another run of the job
        if isinstance(pid, int) and info.get("run") == run.id and signalled != pid:
            os.kill(pid, signal.SIGUSR1)  # the runner's handler: Stop.CANCEL
            signalled = pid
        time.sleep(0.1)
    return f"run {run.id}: asked its runner (pid {signalled}) to cancel; it is still stopping its attempts"


def _stop_leftovers(store: Store, run: RunRow) -> list[int]:
    """TERM, then KILL, what an earlier runner started and left running; their attempt ids."""
    attempts = [a for a in store.open_attempts(run.id) if a.pid and alive(a.pid, a.pid_start)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for attempt in attempts:
            if alive(attempt.pid or 0, attempt.pid_start):
                try:
                    os.killpg(attempt.pid or 0, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        end = time.monotonic() + STOP_WAIT
        while time.monotonic() < end and any(alive(a.pid or 0, a.pid_start) for a in attempts):
            time.sleep(0.05)
    return [a.id for a in attempts]


def _cancel_here(store: Store, run: RunRow) -> str:
    stopped = _stop_leftovers(store, run)
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
    return f"run {run.id}: cancelled ({len(stopped)} leftover attempt(s) stopped)"
