"""The process runtime: each attempt in its own session and process group, no isolation.

Ends are noticed through a pidfd per attempt registered with the runner's `Waker`, so the
runner sleeps until a child exits instead of polling. `wait4` gives the exit status and
the child's CPU time. Without a cgroup there is no kernel OOM counter and no peak to read:
attempts that run longer than a second have their process tree's RSS sampled about once
a second (`tick`, which the runner calls when `wake_at` says) for a best-effort peak and
the attempt's memory series (`labrun.memseries`, at most 200 points, kept with its end).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from labrun import attempt_facts, private
from labrun.executors import escapes
from labrun.executors.base import Executor, Waker
from labrun.executors.procfs import (
    alive,
    group_members,
    kill_group,
    process_start_time,
    start_tick,
    stop_signal,
)
from labrun.executors.sampling import SAMPLE_AFTER, SAMPLE_EVERY, Series, tree_rss
from labrun.model import Facts, Launch, LaunchError, Runtime, Started
from labrun.paths import run_dir_of

_UNKNOWN_EXIT = (
    "adopted after a runner restart, and it left no exit status: its process group was "
    "killed with SIGKILL (by someone other than labrun, or at a shutdown), or it was stopped "
    "before its command began"
)
_LOG_FLAGS = os.O_WRONLY | os.O_TRUNC


@dataclass
class _Child:
    launch: Launch
    pid: int  # the attempt's wrapper shell, leader of its process group
    pidfd: int | None
    key: str = ""  # escapes.attempt_key: what its processes carry in their environment
    started: float = 0.0  # time.time() at start; memory is sampled from SAMPLE_AFTER on
    peak: int | None = None  # largest process-tree RSS sampled
    series: Series | None = None  # what was sampled, over time (from the first sample on)
    pid_start: float | None = None  # its start time, when `start_tick` could tell it at the spawn


@dataclass
class _Adopted:
    """An attempt started by an earlier runner: not our child, so wait4 cannot reap it."""

    launch: Launch
    pid: int
    pid_start: float | None
    pidfd: int | None
    running: bool  # False: it ended while no runner watched; its exit file says how


# Every attempt runs under this POSIX sh wrapper, the leader of its own session. It runs
# the command in a child and waits, appends "ATTEMPT STATUS" to its run's exits file (fd 4,
# opened O_APPEND by the executor: no file to create per attempt), where a later runner
# reads it after adopting the attempt, then ends as the command did: a status above 128 is
# the shell's "killed by signal N", raised again on itself. It never execs the command, so
# the record is left whatever the command is (dash would exec a last simple command itself
# and drop an EXIT trap). It sets no traps: labrun's stop signals go to the command's
# processes, not to it (`stop_signal`). Its own stderr is /dev/null, so the "Terminated" it
# would print for a signalled command stays out of the task's log; the command gets the
# log, and the subshell execs it. $1: the working directory (posix_spawn has no cwd); $2:
# the attempt id; $3: the run's directory, unused but for `find_wrapper` (with $2 it names
# the attempt in `ps`, unique across state directories). Costs the attempt about 0.6 ms of
# CPU (a dash exec and a fork).
WRAPPER = """cd "$1" || exit 126
a=$2
shift 3
exec 3>&2 2>/dev/null
("$@" 2>&3 3>&- 4>&-)
s=$?
echo "$a $s" >&4
if [ "$s" -gt 128 ] && [ "$s" -lt 160 ]; then kill -$((s - 128)) $$; fi
exit "$s"
"""
WRAPPER_NAME = "labrun-attempt"  # $0 of the wrapper: what `ps` shows for it
# Python ignores these; an ignored signal stays ignored across exec, so without this an
# attempt's `zcat big.gz | head` would end in "Broken pipe" errors, not a quiet SIGPIPE.
RESTORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
EXITS_FD = 4


def wrapped(launch: Launch, argv: Sequence[str] | None = None) -> tuple[str, ...]:
    """The argv that runs `argv` (default: the launch's) under WRAPPER in its workdir."""
    return (*_wrapper_head(launch), *(argv or launch.argv))


def _wrapper_head(launch: Launch) -> tuple[str, ...]:
    return ("/bin/sh", "-c", WRAPPER, WRAPPER_NAME, launch.workdir, str(launch.attempt_id), _run_dir(launch))


def _run_dir(launch: Launch) -> str:
    """The run's directory: where its exits file and its attempts' logs are."""
    return run_dir_of(launch.stdout_path)


def _escape_key(launch: Launch) -> str:
    return escapes.attempt_key(_run_dir(launch), launch.attempt_id)


def find_wrapper(launch: Launch) -> int | None:
    """The pid of the attempt's wrapper, found by its command line: for an attempt whose pid
    was never recorded (the runner died between the spawn and that commit)."""
    return find_wrapper_of(launch.attempt_id, _run_dir(launch))


def find_wrapper_of(attempt_id: int, run_dir: str) -> int | None:
    """The pid of the wrapper whose arguments name this attempt id and run directory (with
    the run directory, unique across state directories on this machine)."""
    head = b"\0".join(arg.encode() for arg in ("/bin/sh", "-c", WRAPPER, WRAPPER_NAME)) + b"\0"
    name = b"\0" + str(attempt_id).encode() + b"\0" + run_dir.encode() + b"\0"
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:
            continue
        if cmdline.startswith(head) and cmdline.find(b"\0", len(head)) == cmdline.find(name, len(head)):
            return int(entry.name)
    return None


def facts_from_record(launch: Launch, code: int, ended: float) -> Facts:
    """An attempt's end as its wrapper recorded it: 129-159 are signals, as the wrapper raised them."""
    if 128 < code < 160:
        return Facts(None, code - 128, ended)
    missing = attempt_facts.missing_outputs(launch.outputs) if code == 0 else ()
    return Facts(code, None, ended, missing_outputs=missing)


class CommandCheck:
    """The "command not found" and "not executable" errors a spawn gives, before the spawn:
    the wrapper shell would only exit 127. A name found on a PATH is remembered."""

    def __init__(self) -> None:
        self.found: set[tuple[str, str]] = set()

    def check(self, command: str, workdir: str, path: str) -> None:
        if "/" in command:
            program = os.path.join(workdir, command)
            if not os.path.exists(program):
                raise LaunchError(f"command not found: {command!r} (no such file); fix the command")
            if os.path.isdir(program) or not os.access(program, os.X_OK):
                raise LaunchError(f"{command!r} is not executable: check its permissions")
            return
        if (command, path) in self.found:
            return
        if shutil.which(command, path=path) is None:
            raise LaunchError(
                f"command not found: {command!r} (not on PATH and not a file); install it or fix the command"
            )
        self.found.add((command, path))


def open_logs(launch: Launch) -> tuple[int, int]:
    """The attempt's two logs, made afresh. Their directory (the run's) exists: made with
    its exits file (`ProcessExecutor._exits_fd`); made here only when it does not."""
    try:
        out = private.open_fd(launch.stdout_path, _LOG_FLAGS)
    except FileNotFoundError:
        private.makedirs(os.path.dirname(launch.stdout_path))
        out = private.open_fd(launch.stdout_path, _LOG_FLAGS)
    try:
        return out, private.open_fd(launch.stderr_path, _LOG_FLAGS)
    except OSError:
        os.close(out)
        raise


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
    samples_memory = True  # no kernel high-water mark here: the peak is the largest sample

    def __init__(self, waker: Waker) -> None:
        self.waker = waker
        self.polling = False  # True when an end cannot wake the Waker (no pidfd): poll
        self.next_sample_at = math.inf  # when the next RSS sample is due
        self.children: dict[int, _Child] = {}
        self.adopted: dict[int, _Adopted] = {}
        self._base_env = dict(os.environ)
        self.commands = CommandCheck()
        self._reaping = False  # asked escapes to make this process a subreaper (until close)
        self._exit_fds: dict[str, int] = {}  # a run's exits file -> open for the wrappers
        self._exit_logs: dict[str, attempt_facts.ExitLog] = {}  # ... -> what adoption read of it

    def spawn(
        self,
        launch: Launch,
        argv: Sequence[str],
        around: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> tuple[int, float | None]:
        """Start argv (`wrapped` or a prefix around it) in a new session with logs
        redirected; its pid, and its start time when `start_tick` could tell it.

        `around` is entered for the spawn only (the cgroup runtime spawns from inside the
        attempt's cgroup). posix_spawn costs the runner about 40% of a Popen per attempt."""
        if not os.path.isdir(launch.workdir):
            raise LaunchError(f"the working directory {launch.workdir} does not exist")
        base = self._base_env
        if launch.withheld:  # other tasks' secrets: this one does not declare them
            base = {k: v for k, v in base.items() if k not in launch.withheld}
        env = {**base, **launch.env, escapes.KEY_VARIABLE: _escape_key(launch)}
        self.commands.check(launch.argv[0], launch.workdir, env.get("PATH", os.defpath))
        exits = self._exits_fd(launch)  # makes the run's directory, at its first attempt here
        try:
            out, err = open_logs(launch)
        except OSError as exc:
            where = os.path.dirname(launch.stdout_path)
            raise LaunchError(
                f"cannot create the attempt's logs in {where}: {exc.strerror}; free space on that "
                "disk or make the state directory writable, then `labrun run --resume`"
            ) from None
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out, 1),
            (os.POSIX_SPAWN_DUP2, err, 2),
            (os.POSIX_SPAWN_DUP2, exits, EXITS_FD),
        ]
        try:
            with around():
                # setsid: its own session and process group, so signals reach the whole tree
                before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
                pid = os.posix_spawn(
                    argv[0], list(argv), env, file_actions=actions, setsid=True, setsigdef=RESTORED_SIGNALS
                )
                return pid, start_tick(before, time.clock_gettime_ns(time.CLOCK_BOOTTIME))
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte that came from outside the job file
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise LaunchError(f"cannot start {launch.argv[0]!r}: {reason}") from None
        finally:
            os.close(out)
            os.close(err)

    def _exits_fd(self, launch: Launch) -> int:
        """The run's exits file, open for appending (one descriptor per run, kept)."""
        path = os.path.join(_run_dir(launch), attempt_facts.EXITS_FILE)
        fd = self._exit_fds.get(path)
        if fd is None:
            try:
                private.makedirs(os.path.dirname(path))
                fd = self._exit_fds[path] = private.open_append(path)
            except OSError as exc:
                raise LaunchError(
                    f"cannot open the run's exit records {path}: {exc.strerror}; free space on that "
                    "disk or make the state directory writable, then `labrun run --resume`"
                ) from None
        return fd

    def exit_status(self, launch: Launch) -> int | None:
        """The status the attempt's wrapper recorded, or None when it left none."""
        path = os.path.join(_run_dir(launch), attempt_facts.EXITS_FILE)
        log = self._exit_logs.get(path)
        if log is None:
            log = self._exit_logs[path] = attempt_facts.ExitLog(path)
        return log.status(launch.attempt_id)

    def close(self) -> None:
        fds, self._exit_fds = self._exit_fds, {}
        for fd in fds.values():
            os.close(fd)
        # escapees of ended attempts; those still running are left, as a runner that dies leaves them
        escapes.sweep({c.pid for c in self.children.values()})
        if self._reaping:
            escapes.release()
            self._reaping = False

    def start(self, launch: Launch) -> Started:
        if not self._reaping:  # so what leaves an attempt's process group comes back to us
            escapes.acquire()
            self._reaping = True
        pid, pid_start = self.spawn(launch, wrapped(launch))
        self._watch(launch, pid, pid_start)
        return Started(pid=pid, mechanism="process")  # its start time: `identified`

    def identified(self, attempt_id: int, started: Started) -> Started:
        """The start time of an attempt's process, read when its start is committed and only
        while it is still ours: a child not reaped yet (alive or a zombie) keeps its pid. One
        that ended meanwhile has its end recorded in the same transaction and is never
        adopted, so its start time is never needed: a short attempt costs one /proc read less."""
        child = self.children.get(attempt_id)
        if started.pid is None or started.pid_start is not None or child is None:
            return started
        pid_start = child.pid_start if child.pid_start is not None else process_start_time(started.pid)
        return dataclasses.replace(started, pid_start=pid_start)

    def _watch(self, launch: Launch, pid: int, pid_start: float | None) -> None:
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None  # old kernel: a fallback poll (`wake_at`) notices the exit
            self.polling = True
        if pidfd is not None:
            self.waker.watch(pidfd)
        started = time.time()
        key = _escape_key(launch)
        self.children[launch.attempt_id] = _Child(launch, pid, pidfd, key, started, pid_start=pid_start)
        escapes.running.add(key)
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
        """Sample the memory of attempts that ran SAMPLE_AFTER or more, about once a second,
        all in one round: into each one's series, and its peak.

        Short attempts are never sampled: they cost nothing, and their peak stays unknown."""
        due = [c for c in self.children.values() if now - c.started >= SAMPLE_AFTER]
        if due:
            sizes = self.memory_now(due)
            for child in due:
                size = sizes.get(child.launch.attempt_id)
                if size is None:
                    continue
                if child.peak is None or size > child.peak:
                    child.peak = size
                if child.series is None:
                    child.series = Series(child.started)
                child.series.add(now, size)
        waiting = [c.started + SAMPLE_AFTER for c in self.children.values() if now - c.started < SAMPLE_AFTER]
        self.next_sample_at = now + SAMPLE_EVERY if due else min(waiting, default=math.inf)

    def memory_now(self, children: Sequence[_Child]) -> dict[int, int]:
        """{attempt id: bytes in use now}: here the process tree's RSS (one /proc pass for all)."""
        sizes = tree_rss([c.pid for c in children])
        return {c.launch.attempt_id: sizes[c.pid] for c in children if c.pid in sizes}

    def adopt(self, attempt_id: int, launch: Launch, started: Started) -> bool:
        """Watch a process an earlier runner started; its end wakes us through a pidfd.

        One that already ended is taken too when its shell left an exit status: the next
        `finished()` reports it, so a task that completed while no runner ran is not re-run.
        """
        if started.pid is None:  # launching when its runner died: spawned or not?
            pid = find_wrapper(launch)
            if pid is not None:
                started = dataclasses.replace(started, pid=pid, pid_start=process_start_time(pid))
        if started.pid is None or not alive(started.pid, started.pid_start):
            if self.exit_status(launch) is None:
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
            code = self.exit_status(child.launch)
            if code is None:
                facts = Facts(None, None, time.time(), lost=True, detail=_UNKNOWN_EXIT)
            else:
                facts = facts_from_record(child.launch, code, time.time())
            done.append((attempt_id, self._ended(attempt_id, None, facts)))
        return done

    def finished(self) -> list[tuple[int, Facts]]:
        done = self._adopted_finished() if self.adopted else []
        ended = []
        for attempt_id, child in list(self.children.items()):
            try:
                pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status, usage = child.pid, -1, None
            if pid == 0:
                continue
            kill_group(child.pid)
            self._forget(attempt_id, child)
            escapes.running.discard(child.key)
            ended.append((attempt_id, child, status, usage))
        if ended:  # what left their process groups goes too (before a cgroup is emptied)
            escapes.sweep({c.pid for c in self.children.values()})
        for attempt_id, child, status, usage in ended:
            facts = facts_from_status(child.launch, status, usage)
            done.append((attempt_id, self._ended(attempt_id, child, facts)))
        return done

    def _ended(self, attempt_id: int, child: _Child | None, facts: Facts) -> Facts:
        """Facts completed with what this runtime measured; subclasses add their own.

        `child` is None for an adopted attempt: nothing was sampled here."""
        if child is None or child.series is None:
            return facts
        facts = dataclasses.replace(facts, memory_series=child.series.encode())
        if child.peak is None or not self.samples_memory:
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
        pid = child.pid if child is not None else other.pid if other is not None else None
        if pid is None:
            return
        if signum == signal.SIGKILL:
            kill_group(pid)
        else:
            stop_signal(pid, signum, lambda: group_members(pid))

    def running(self) -> list[int]:
        return [*self.children, *self.adopted]
