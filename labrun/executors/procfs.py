"""What /proc says of a process (is it still the one we started, when did it start), and
stop signals to an attempt's process group: shared by the process and cgroup runtimes
and by the local backend's adoption checks."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable


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


# The kernel stamps a new process with CLOCK_BOOTTIME and /proc shows it in whole clock
# ticks (`starttime`, floored). Read before and after a spawn, the clock brackets it: when
# both readings fall in one tick, that tick is the child's start time, and no /proc read is
# needed (30 us a start); else (a spawn across a tick's edge) /proc is read as before.
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_TICK_NS = 1_000_000_000 // _CLK_TCK if 1_000_000_000 % _CLK_TCK == 0 else 0  # 0: never pinned


def start_tick(before_ns: int, after_ns: int) -> float | None:
    """The start time (as `process_start_time` reads it) of a process spawned between two
    CLOCK_BOOTTIME readings, when they pin it down."""
    if not _TICK_NS or before_ns // _TICK_NS != after_ns // _TICK_NS:
        return None
    return float(before_ns // _TICK_NS)


def group_members(pgid: int) -> list[int]:
    """The processes of process group `pgid`, from /proc (read only when stopping)."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields is not None and fields[2] == str(pgid).encode():
                members.append(int(entry.name))
    return members


def stop_signal(leader: int, signum: int, members: Callable[[], list[int]]) -> None:
    """Deliver a stop signal to an attempt whose wrapper is `leader`.

    SIGKILL goes to everything. Any other signal goes to the command's processes only: the
    wrapper must live to record how the command ended. Before the wrapper has started the
    command, the wrapper itself gets the signal and dies with it (so a signal right after
    a start is never lost; what it may have begun meanwhile goes with its group)."""
    others = [pid for pid in members() if pid != leader]
    for pid in others or [leader]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def kill_group(pgid: int) -> None:
    """What an attempt left running in its process group ends with it."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
