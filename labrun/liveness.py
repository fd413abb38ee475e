"""Whether the runner a run row names is still alive, as a reader can tell without writing.

A runner killed with SIGKILL (or a machine that lost power) leaves its run `running` in the
store until the next `--resume`. Readers (`runs`, `status`, `why`) show such a run as
`interrupted`: on the machine that ran it, its pid is gone or is no labrun process any
more. A run started on another host is taken at its word.
"""

from __future__ import annotations

import os

from labrun.rows import RunRow
from labrun.states import RunState

UNFINISHED = (RunState.RUNNING,)


def runner_gone(run: RunRow, host: str | None = None) -> bool:
    """True when `run` is recorded as running but its runner on this host is dead."""
    if run.state not in UNFINISHED or run.pid is None:
        return False
    if run.host is not None and run.host != (host or os.uname().nodename):
        return False
    return not labrun_alive(run.pid)


def labrun_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine and is a labrun process. Where that
    cannot be told (another user's process, no /proc), it counts as alive."""
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return b"labrun" in cmdline


def seen_state(run: RunRow) -> RunState:
    """The state to show for `run`: `interrupted` where its runner died without saying so."""
    return RunState.INTERRUPTED if runner_gone(run) else run.state
