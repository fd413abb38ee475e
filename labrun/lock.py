"""One runner per job at a time: an OS file lock, released by the kernel when its holder dies.

A flock is tied to the open file, so a runner killed with SIGKILL leaves no stale lock
behind. Who holds it is written beside it, so the refusal can name the run and the pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator

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


class JobLock:
    def __init__(self, path: str, job: str) -> None:
        from filelock import FileLock

        self.path, self.job = path, job
        self._lock = FileLock(path)

    @contextlib.contextmanager
    def hold(self, wait: bool) -> Iterator[JobLock]:
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            raise LockHeld(describe_holder(self.job, self.path)) from None
        try:
            self.record(None)
            yield self
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.path + ".holder")
            self._lock.release()

    def record(self, run_id: int | None) -> None:
        info = {"pid": os.getpid(), "run": run_id, "since": time.time()}
        tmp = self.path + ".holder.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(info, handle)
        os.replace(tmp, self.path + ".holder")
