"""Processes that left their attempt's process group (`setsid`, a daemonizing fork) end with it.

Without a cgroup or a container nothing holds such a process: SIGKILL to the attempt's
group misses it, and it outlives the attempt. So the runner makes itself a child
subreaper (prctl PR_SET_CHILD_SUBREAPER): an orphan of any attempt becomes the runner's
child instead of init's. Each attempt carries `LABRUN_ATTEMPT_KEY` in its environment
(inherited by everything it starts); when attempts end, the runner's children that carry
the key of an attempt no longer running in this process are killed, with their group,
and reaped. Only the process runtime turns this on (a cgroup or a container holds its
escapees already). Limits: an escapee of an attempt whose runner died (then adopted by a
later runner) was re-parented to init and is not found; one that ends before any sweep
sees it stays a zombie of the runner until the runner exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

KEY_VARIABLE = "LABRUN_ATTEMPT_KEY"
_PR_SET_CHILD_SUBREAPER = 36

running: set[str] = set()  # keys of the attempts running in this process, every executor's
_subreaper = False
_users = 0  # executors that asked for it and are not closed
_seen: set[int] = set()  # escapees seen alive (killed, or of a running attempt): reaped when they end


def attempt_key(run_dir: str, attempt_id: int) -> str:
    return f"{run_dir}:{attempt_id}"


def acquire() -> bool:
    """An executor needs the runner to be a subreaper (until it `release`s); False where
    the kernel (or libc) does not offer it."""
    global _subreaper, _users
    _users += 1
    if _users == 1:
        _subreaper = _prctl(1)
    return _subreaper


def release() -> None:
    """The last executor is closed: the process is no subreaper any more (a program that
    runs labrun as a library keeps no such side effect after the run)."""
    global _subreaper, _users
    _users = max(0, _users - 1)
    if _users == 0 and _subreaper:
        _prctl(0)
        _subreaper = False


def _prctl(on: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, on, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def sweep(known: set[int]) -> list[int]:
    """Kill this process's children that carry the key of an attempt that is not running
    here any more (`known`: pids the executors wait for themselves); the pids killed."""
    if not _subreaper:
        return []
    killed = []
    for pid in _children() - known:
        key = _key_of(pid)  # None for a zombie: its environment is gone
        if key is None:
            continue
        _seen.add(pid)
        if key not in running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    _reap()
    return killed


def _reap() -> None:
    """Reap the escapees that ended (only those: other children have their own waiters).
    One that ended before any sweep saw it stays a zombie until the runner exits."""
    for pid in list(_seen):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _seen.discard(pid)


_children_fd: tuple[int, int] | None = None  # (pid, fd): the file below, kept open by this process


def _children() -> set[int]:
    """The children of this process's main thread: where the kernel re-parents orphans
    (its first live thread, which for a runner is the main one). Read after every end: the
    file stays open, and a read from offset 0 makes /proc fill it afresh (a page a read)."""
    global _children_fd
    pid = os.getpid()
    data = b""
    try:
        if _children_fd is None or _children_fd[0] != pid:  # a forked child opens its own
            _children_fd = (pid, os.open(f"/proc/self/task/{pid}/children", os.O_RDONLY | os.O_CLOEXEC))
        while chunk := os.pread(_children_fd[1], 65536, len(data)):
            data += chunk
    except OSError:
        return set()
    return {int(p) for p in data.split()}


def _key_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = handle.read()
    except OSError:
        return None
    prefix = KEY_VARIABLE.encode() + b"="
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None
