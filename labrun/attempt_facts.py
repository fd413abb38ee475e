"""An ended attempt → the facts it leaves: the rules every runtime and every node share.

Standard library only, Python >= 3.8: shipped to SSH nodes inside the agent's zipapp
(labrun/ssh/session.py) like `labrun.cgroup`. The head's executors (process, cgroup,
docker) and the agent's monitor call the same functions, so a rule decided here holds
on every runtime and every node:

- **Output present** (`output_present`): a declared output counts when it is a regular
  file (or anything but a directory) with at least one byte, or a directory with at
  least one entry. Symlinks are followed: a dangling one is missing. An empty file, an
  empty directory, a missing path or one that cannot be read is missing, and an attempt
  that exits 0 with a missing output is `no_output`.
- **Exit record**: how an attempt ended, from a wait status (`exit_of`), or from the
  line the attempt's wrapper shell appends to its run's exits file (`ExitLog`), which
  outlives the runner that started the attempt.
- **A container's signal** (`container_signal`): Docker reports only its init's exit
  code; a 128+N exit is signal N when that signal was sent to it (by labrun, or the OOM
  killer's SIGKILL), and a plain exit code otherwise.
- **Cgroup notes**: an attempt cgroup's counters when it ended, and the notes that say
  what could not be measured (`read_cgroup`).
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

EXITS_FILE = "exits"  # in a run's directory: "ATTEMPT_ID STATUS" lines the wrappers append

NO_OOM_COUNTER = "this kernel keeps no OOM-kill counter: an OOM kill cannot be told apart"


# -- outputs -------------------------------------------------------------------------------


def output_present(path: str) -> bool:
    """Whether a declared output is there: a non-empty file, or a directory with an entry."""
    try:
        info = os.stat(path)  # follows symlinks: a dangling one raises
    except (OSError, ValueError):
        return False
    if not stat.S_ISDIR(info.st_mode):
        return info.st_size > 0
    try:
        with os.scandir(path) as entries:
            return any(True for _ in entries)
    except OSError:
        return False


def missing_outputs(paths: Iterable[str]) -> tuple[str, ...]:
    """The declared outputs that are not present, in the order they were declared."""
    return tuple(path for path in paths if not output_present(path))


# -- exit records --------------------------------------------------------------------------


def exit_of(wait_status: int) -> tuple[int | None, int | None]:
    """(exit code, signal) from a wait status: one of them is None."""
    if os.WIFSIGNALED(wait_status):
        return None, os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status), None


class ExitLog:
    """The statuses attempts' wrappers appended to one run's exits file, read incrementally.

    Each wrapper appends one short line with a single write to a descriptor opened with
    O_APPEND, so lines never interleave; a line cut short by a full disk is skipped."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.statuses: dict[int, int] = {}

    def status(self, attempt_id: int) -> int | None:
        """The exit status attempt `attempt_id` left, or None when it left none (yet)."""
        if attempt_id not in self.statuses:
            self._read_more()
        return self.statuses.get(attempt_id)

    def _read_more(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
                self.statuses[int(fields[0])] = int(fields[1])


def container_signal(exit_code: int | None, oom_killed: bool, sent: Iterable[int]) -> int | None:
    """The signal behind a container's 128+N exit, when one is known to have been sent to it:
    by labrun (`sent`), or by the OOM killer. None: a plain exit code (a task may exit 143)."""
    if exit_code is None or exit_code <= 128:
        return None
    signum = exit_code - 128
    if (oom_killed and signum == signal.SIGKILL) or signum in set(sent):
        return signum
    return None


# -- cgroups -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CgroupReading:
    """An ended attempt's cgroup counters; None where they could not be read."""

    oom_kills: int | None
    peak_memory: int | None
    cpu_seconds: float | None
    notes: tuple[str, ...]  # what could not be measured, for `labrun why`


def read_cgroup(cg: Any) -> CgroupReading:
    """The counters of an attempt's cgroup (`labrun.cgroup.AttemptCgroup`), read once it ended.

    Never raises: counters that cannot be read become a note, since the attempt's end
    must still be recorded."""
    try:
        usage = cg.usage()
    except Exception as exc:  # CgroupError, OSError, ValueError: recorded, not raised
        return CgroupReading(None, None, None, (f"cgroup counters unreadable: {exc}",))
    notes = () if usage.oom_kills is not None else (NO_OOM_COUNTER,)
    return CgroupReading(usage.oom_kills, usage.peak_memory, usage.cpu_seconds, notes)


def join_notes(*notes: str) -> str:
    """One note from several; empty ones are left out."""
    return "; ".join(note for note in notes if note)
