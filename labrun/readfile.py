"""Reading a file a user names (a job file, labrun.toml, an items file, task 0's manifest).

Opened without blocking and refused unless it is a regular file: a FIFO or a device given
as a job file would otherwise hang `labrun check` (or the runner) forever.
"""

from __future__ import annotations

import os
import stat


class NotReadable(OSError):
    """The message says why, in words a user can act on (`str(exc)`)."""

    def __str__(self) -> str:
        return str(self.args[0])


def read_regular(path: str, limit: int) -> bytes:
    """At most `limit` + 1 bytes of a regular file; NotReadable otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise NotReadable(exc.strerror or str(exc)) from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotReadable(f"it is {_kind(mode)}, not a regular file; give the path of a file")
        try:
            return handle.read(limit + 1)
        except OSError as exc:
            raise NotReadable(exc.strerror or str(exc)) from None


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"
