"""The end of an attempt's log, read from the end: a log may be gigabytes."""

from __future__ import annotations

import os

STDERR_LINES = 20  # what `why` and a failure's headline show of stderr
TAIL_BYTES = 64 * 1024  # 20 lines of stderr are in the last 64 KiB, or are too long to show anyway


def stderr_tail(path: str, lines: int = STDERR_LINES) -> list[str]:
    """The last `lines` lines of a file, read from its end: a log may be gigabytes."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - TAIL_BYTES))
            data = handle.read(TAIL_BYTES)
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    if len(data) == TAIL_BYTES and size > TAIL_BYTES:
        text = text[1:]  # the first line is cut
    return text[-lines:]
