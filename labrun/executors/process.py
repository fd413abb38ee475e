"""The process runtime: each attempt in its own session and process group, no isolation.

Ends are noticed through a pidfd per attempt registered with the runner's `Waker`, so the
runner sleeps until a child exits instead of polling. `wait4` gives the exit status and
the child's CPU time. Without a cgroup there is no kernel OOM counter and no peak to read:
attempts that run longer than a second have their process tree's RSS sampled about once
a second (`tick`, which the runner calls when `wake_at` says) for a best-effort peak.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from labrun import attempt_facts
from labrun.executors.base import Executor, Waker
from labrun.executors.sampling import SAMPLE_AFTER, SAMPLE_EVERY, tree_rss
from labrun.model import Facts, Launch, LaunchError, Runtime, Started

_UNKNOWN_EXIT = (
    "adopted after a runner restart, and its exit status was not recorded (killed by a signal, "
    "or a command exec'd without a shell)"
)
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


@dataclass
class _Child:
    launch: Launch
    proc: subprocess.Popen[bytes]
    pidfd: int | None
    started: float = 0.0  # time.time() at start; memory is sampled from SAMPLE_AFTER on
    peak: int | None = None  # largest process-tree RSS sampled


@dataclass
class _Adopted:
    """An attempt started by an earlier runner: not our child, so wait4 cannot reap it."""

    launch: Launch
    pid: int
    pid_start: float | None
    pidfd: int | None
    running: bool  # False: it ended while no runner watched; its exit file says how


def attempt_dir(launch: Launch) -> str:
    return os.path.dirname(launch.stdout_path)


def with_exit_trap(launch: Launch) -> tuple[tuple[str, ...], dict[str, str]]:
    """argv and extra env that leave the exit status in the attempt directory.

    Only for commands that already run through /bin/sh -c: it costs a fork, not an exec."""
    argv = launch.argv
    if len(argv) >= 3 and argv[0] == "/bin/sh" and argv[1] == "-c":
        record = attempt_facts.exit_record_path(attempt_dir(launch))
        return (
            ("/bin/sh", "-c", attempt_facts.EXIT_TRAP + argv[2], *argv[3:]),
            {attempt_facts.EXIT_FILE_VARIABLE: record},
        )
    return argv, {}


def read_exit_file(launch: Launch) -> int | None:
    return attempt_facts.read_exit_record(attempt_dir(launch))


def _proc_stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    return stat[stat.rfind(b")") + 2 :].split()


def alive(pid: int, pid_start: float | None) -> bool:
    """The same process (pid and start time) still exists and has not exited."""
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in (b"Z", b"X") and float(fields[19]) == pid_start


def process_start_time(pid: int) -> float | None:
    """Start time of a process in clock ticks since boot (identifies it across pid reuse)."""
    fields = _proc_stat(pid)
    return None if fields is None else float(fields[19])


def open_logs(launch: Launch) -> tuple[int, int]:
    os.makedirs(os.path.dirname(launch.stdout_path), mode=0o700, exist_ok=True)
    out = os.open(launch.stdout_path, _LOG_FLAGS, 0o600)
    err = os.open(launch.stderr_path, _LOG_FLAGS, 0o600)
    return out, err


def kill_group(pgid: int) -> None:
    """What an attempt left running in its process group ends with it."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def facts_from_status(launch: Launch, status: int, usage: object | None) -> Facts:
    """Facts from a wait4 status (-1: the status was lost) and its resource usage."""
    ended = time.time()
    if status == -1:
        return Facts(None, None, ended, lost=True, detail="exit status was lost")
    exit_code, signum = attempt_facts.exit_of(status)
    # ru_maxrss is not reported: after vfork it counts the runner's own pages, not the task's
    cpu = getattr(usage, "ru_utime", 0.0) + getattr(usage, "ru_stime", 0.0)
    missing = attempt_facts.missing_outputs(launch.outputs) if exit_code == 0 else ()
    return Facts(exit_code, signum, ended, cpu_seconds=cpu, missing_outputs=missing)


FALLBACK_POLL = 0.05  # how often ends are looked for where the kernel has no pidfd


class ProcessExecutor(Executor):
    runtime = Runtime.PROCESS
    samples_memory = True  # no kernel high-water mark here: sample the tree's RSS

    def __init__(self, waker: Waker) -> None:
        self.waker = waker
        self.polling = False  # True when an end cannot wake the Waker (no pidfd): poll
        self.next_sample_at = math.inf  # when the next RSS sample is due
        self.children: dict[int, _Child] = {}
        self.adopted: dict[int, _Adopted] = {}
        self._base_env = dict(os.environ)

    def spawn(
        self,
        launch: Launch,
        argv: tuple[str, ...] | None = None,
        around: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> subprocess.Popen[bytes]:
        """Start argv (default: the launch's) in a new session with logs redirected.

        `around` is entered for the Popen call only (the cgroup runtime forks from inside
        the attempt's cgroup)."""
        if not os.path.isdir(launch.workdir):
            raise LaunchError(f"the working directory {launch.workdir} does not exist")
        out, err = open_logs(launch)
        wrapped, extra = with_exit_trap(launch)
        env = {**self._base_env, **launch.env, **extra}
        try:
            with around():
                return self._popen(launch, argv or wrapped, out, err, env)
        finally:
            os.close(out)
            os.close(err)

    def _popen(
        self, launch: Launch, argv: tuple[str, ...], out: int, err: int, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=launch.workdir,
                env=env,
                start_new_session=True,  # own process group: signals reach the whole tree
                close_fds=True,
            )
        except FileNotFoundError:
            raise LaunchError(
                f"command not found: {launch.argv[0]!r} (not on PATH and not a file); "
                "install it or fix the command"
            ) from None
        except PermissionError:
            raise LaunchError(f"{launch.argv[0]!r} is not executable: check its permissions") from None
        except OSError as exc:
            raise LaunchError(f"cannot start {launch.argv[0]!r}: {exc.strerror}") from None

    def start(self, launch: Launch) -> Started:
        proc = self.spawn(launch)
        self._watch(launch, proc)
        return Started(pid=proc.pid, pid_start=process_start_time(proc.pid), mechanism="process")

    def _watch(self, launch: Launch, proc: subprocess.Popen[bytes]) -> None:
        try:
            pidfd: int | None = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            pidfd = None  # old kernel: a fallback poll (`wake_at`) notices the exit
            self.polling = True
        if pidfd is not None:
            self.waker.watch(pidfd)
        started = time.time()
        self.children[launch.attempt_id] = _Child(launch, proc, pidfd, started)
        if self.samples_memory:
            self.next_sample_at = min(self.next_sample_at, started + SAMPLE_AFTER)

    def wake_at(self, now: float) -> float | None:
        times = [self.next_sample_at] if self.next_sample_at != math.inf else []
        if self.polling and (self.children or self.adopted):
            times.append(now + FALLBACK_POLL)
        return min(times) if times else None

    def tick(self, now: float) -> None:
        if self.next_sample_at <= now:
            self.sample(now)

    def sample(self, now: float) -> None:
        """Sample the RSS of attempts that ran SAMPLE_AFTER or more, about once a second.

        Short attempts are never sampled: they cost nothing, and their peak stays unknown."""
        due = [c for c in self.children.values() if now - c.started >= SAMPLE_AFTER]
        if due:
            sizes = tree_rss([c.proc.pid for c in due])
            for child in due:
                size = sizes.get(child.proc.pid)
                if size is not None and (child.peak is None or size > child.peak):
                    child.peak = size
        waiting = [c.started + SAMPLE_AFTER for c in self.children.values() if now - c.started < SAMPLE_AFTER]
        self.next_sample_at = now + SAMPLE_EVERY if due else min(waiting, default=math.inf)

    def adopt(self, attempt_id: int, launch: Launch, started: Started) -> bool:
        """Watch a process an earlier runner started; its end wakes us through a pidfd.

        One that already ended is taken too when its shell left an exit status: the next
        `finished()` reports it, so a task that completed while no runner ran is not re-run.
        """
        if started.pid is None or not alive(started.pid, started.pid_start):
            if read_exit_file(launch) is None:
                return False
            self.adopted[attempt_id] = _Adopted(launch, started.pid or 0, started.pid_start, None, False)
            self.waker.wake()
            return True
        try:
            pidfd: int | None = os.pidfd_open(started.pid)
        except (AttributeError, OSError):
            pidfd = None
            self.polling = True
        if pidfd is not None:
            self.waker.watch(pidfd)
        self.adopted[attempt_id] = _Adopted(launch, started.pid, started.pid_start, pidfd, True)
        return True

    def _adopted_finished(self) -> list[tuple[int, Facts]]:
        done = []
        for attempt_id, child in list(self.adopted.items()):
            if child.running and alive(child.pid, child.pid_start):
                continue
            if child.running:
                kill_group(child.pid)
            if child.pidfd is not None:
                self.waker.unwatch(child.pidfd)
                os.close(child.pidfd)
            del self.adopted[attempt_id]
            code = read_exit_file(child.launch)
            if code is None:
                facts = Facts(None, None, time.time(), lost=True, detail=_UNKNOWN_EXIT)
            else:
                missing = attempt_facts.missing_outputs(child.launch.outputs) if code == 0 else ()
                facts = Facts(code, None, time.time(), missing_outputs=missing)
            done.append((attempt_id, self._ended(attempt_id, None, facts)))
        return done

    def finished(self) -> list[tuple[int, Facts]]:
        done = self._adopted_finished() if self.adopted else []
        for attempt_id, child in list(self.children.items()):
            try:
                pid, status, usage = os.wait4(child.proc.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status, usage = child.proc.pid, -1, None
            if pid == 0:
                continue
            child.proc.returncode = status  # reaped here; keeps Popen from reaping it again
            kill_group(child.proc.pid)
            self._forget(attempt_id, child)
            facts = facts_from_status(child.launch, status, usage)
            done.append((attempt_id, self._ended(attempt_id, child, facts)))
        return done

    def _ended(self, attempt_id: int, child: _Child | None, facts: Facts) -> Facts:
        """Facts completed with what this runtime measured; subclasses add their own.

        `child` is None for an adopted attempt: nothing was sampled here."""
        if child is None or child.peak is None:
            return facts
        return dataclasses.replace(facts, peak_memory=child.peak)

    def _forget(self, attempt_id: int, child: _Child) -> None:
        if child.pidfd is not None:
            self.waker.unwatch(child.pidfd)
            os.close(child.pidfd)
        del self.children[attempt_id]

    def signal(self, attempt_id: int, signum: int) -> None:
        child = self.children.get(attempt_id)
        other = self.adopted.get(attempt_id)
        pid = child.proc.pid if child is not None else other.pid if other is not None else None
        if pid is None:
            return
        try:
            os.killpg(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def running(self) -> list[int]:
        return [*self.children, *self.adopted]
