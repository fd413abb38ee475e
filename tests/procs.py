"""Processes of this machine picked by what /proc shows of them (tests only)."""

from __future__ import annotations

import os
from collections.abc import Callable


def pids_where(proc_file: str, test: Callable[[bytes], bool]) -> list[int]:
    """Pids (this process left out) whose /proc/PID/`proc_file` ("cmdline", "environ")
    passes `test`. A zombie's command line and environment are empty."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/{proc_file}", "rb") as handle:
                if test(handle.read()):
                    found.append(int(entry))
        except OSError:
            continue
    return found
