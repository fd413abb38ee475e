"""One runner per job at a time: an OS file lock, released by the kernel when its holder dies.

A flock is tied to the open file, so a runner killed with SIGKILL leaves no stale lock
behind. Who holds it is written beside it, so the refusal can name the run and the pid.
Taken with `fcntl.flock` itself: the `filelock` package cost every start 20 ms of imports
for the same system call.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator

from labrun import private
from labrun.errors import LockHeld


def holder(path: str) -> dict[str, object]:
    try:
        with open(path + ".holder", encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def describe_holder(job: str, path: str) -> str:
    info = holder(path)
    pid, run = info.get("pid"), info.get("run")
    since = info.get("since")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    )
    run_text = f"run {run}" if run else "a run being set up"
    return (
        f"job {job!r} is already running: {run_text}, pid {pid or '?'}, since {when}. "
        "Wait for it, pass --wait to queue behind it (--if-running skip: exit 0 quietly, for cron), "
        "or stop it with `labrun cancel`."
    )


def waiting_for(job: str, path: str) -> str:
    info = holder(path)
    pid, run = info.get("pid"), info.get("run")
    run_text = f"run {run}" if run else "a run being set up"
    return (
        f"job {job!r} is already running ({run_text}, pid {pid or '?'}); --wait: waiting for it to "
        "end before starting (Ctrl-C to stop waiting)"
    )


class JobLock:
    def __init__(self, path: str, job: str) -> None:
        self.path, self.job = path, job

    @contextlib.contextmanager
    def hold(self, wait: bool, on_wait: Callable[[str], None] | None = None) -> Iterator[JobLock]:
        """The lock, or LockHeld at once; with `wait`, queue for it, and tell `on_wait`
        which run and pid it waits for (a blank screen looks like a hang)."""
        fd = private.open_fd(self.path, os.O_RDWR)  # close-on-exec: no attempt inherits the lock
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise LockHeld(describe_holder(self.job, self.path)) from None
                if on_wait is not None:
                    on_wait(waiting_for(self.job, self.path))
                fcntl.flock(fd, fcntl.LOCK_EX)  # Ctrl-C interrupts the wait
            try:
                self.record(None)
                yield self
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(self.path + ".holder")
        finally:
            os.close(fd)  # releases the lock

    def record(self, run_id: int | None) -> None:
        """Who holds the lock, for the refusal's message; a full disk leaves it unsaid
        (the lock itself holds), and the store's first write then says what is wrong."""
        info = {"pid": os.getpid(), "run": run_id, "since": time.time()}
        with contextlib.suppress(OSError):
            private.write_atomic(self.path + ".holder", json.dumps(info).encode())
