"""The executor seam.

An executor runs attempts of one runtime on one node. The runner gives it a `Launch`,
gets back a `Started` (what identifies the attempt if the runner must find it again),
later collects `Facts` from `finished()`, and calls `committed()` once the store holds
them. Executors report what they observed and
nothing more: exit code, signal, OOM-kill counter, peak memory, CPU time, missing
outputs. `outcome.classify` turns facts into an outcome.

The data that crosses the seam lives in `labrun.model`. The only exception an executor
raises from `start` is `model.LaunchError`: the attempt could not be started for a reason
retrying will not fix (command not found, bad workdir, image missing). Everything else it
reports as facts.
"""

from __future__ import annotations

import abc
import os
import selectors
from collections.abc import Sequence

from labrun.model import Facts, Launch, Runtime, Started


class Waker:
    """One selector the runner sleeps on; executors register what signals an attempt's end.

    The runner wakes when a registered file descriptor is readable (a pidfd, a pipe) or
    when its own next deadline comes, never on a fixed poll.
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._selector.register(self._read, selectors.EVENT_READ, None)

    def watch(self, fd: int) -> None:
        self._selector.register(fd, selectors.EVENT_READ, fd)

    def unwatch(self, fd: int) -> None:
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    def wake(self) -> None:
        """Interrupt a `wait` from a signal handler or another thread."""
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:
            pass

    @property
    def wake_fd(self) -> int:
        return self._write

    def wait(self, timeout: float | None) -> None:
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                try:
                    while os.read(self._read, 4096):
                        pass
                except BlockingIOError:
                    pass

    def close(self) -> None:
        self._selector.close()
        os.close(self._read)
        os.close(self._write)


class Executor(abc.ABC):
    """Runs attempts of one runtime on one node."""

    runtime: Runtime
    online: bool = True  # False while the node does not answer: the runner places nothing there

    def wake_at(self, now: float) -> float | None:
        """The one way an executor asks for the runner's attention without an event on the
        Waker: the time it wants `tick` and `finished()` called next (a sample due, a poll
        where an end cannot wake the Waker, a remote answer's deadline). None: only on an
        event. A time at or before `now` means now."""
        return None

    def tick(self, now: float) -> None:  # noqa: B027 - optional: most executors wait for events
        """Work that was due by `now` (the runner calls it when `wake_at(now) <= now`):
        sampling running attempts, polling. Never blocks."""

    @abc.abstractmethod
    def start(self, launch: Launch) -> Started:
        """Start the attempt, or raise LaunchError when it cannot start at all."""

    @abc.abstractmethod
    def finished(self) -> list[tuple[int, Facts]]:
        """(attempt_id, facts) for each attempt that ended since the last call. Never blocks."""

    def identified(self, attempt_id: int, started: Started) -> Started:
        """`started` as the runner commits it, a moment after `start` returned it (with the
        transaction that follows, often the one that records the attempt's end). An executor
        may fill in here what is costly to learn and needed only of an attempt that still
        runs then: the process runtimes read the process's start time here."""
        return started

    def committed(self, attempt_ids: Sequence[int]) -> None:  # noqa: B027 - optional
        """The runner committed the ends of these attempts (ids `finished()` returned; others
        are ignored): what an executor keeps as an attempt's exit record until then (a
        container) may go now. Until this call, a fresh executor's `adopt` after a runner
        crash must still find the attempt and report the same end."""

    @abc.abstractmethod
    def signal(self, attempt_id: int, signum: int) -> None:
        """Send a signal to everything the attempt started. A finished attempt is ignored."""

    @abc.abstractmethod
    def running(self) -> list[int]:
        """Attempt ids still running here."""

    def queued(self) -> dict[int, str]:
        """Attempts still waiting in a queue that is not labrun's (a Slurm partition), with
        the queue's reason (Resources, Priority...); shown in the live line."""
        return {}

    def adopt(self, attempt_id: int, launch: Launch, started: Started) -> bool:
        """Watch an attempt started by an earlier runner; False if it is gone."""
        return False

    def close(self) -> None:  # noqa: B027 - optional: most executors hold nothing
        """Release what the executor holds (not the attempts: those are stopped by signal)."""
