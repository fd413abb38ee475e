"""Where `report -o FILE` writes: a file only its owner can read (0600), whole or not at all.

A report streams (a 100,000-task run is never held in memory), so it is written into a
temporary file beside FILE and renamed over it once complete: a reader never sees half a
report, and a failure (full disk, Ctrl-C) leaves FILE as it was.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import IO

from labrun import private
from labrun.errors import UsageError


@contextlib.contextmanager
def written(path: str) -> Iterator[IO[str]]:
    """A text stream that becomes `path` (0600) when the block ends without an error."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(
            f"-o {path}: is a directory; give a file name, e.g. -o {path.rstrip('/')}/report.html"
        )
    if not os.path.isdir(directory):
        raise UsageError(
            f"-o {path}: the directory {directory} does not exist; "
            f"create it (mkdir -p {directory}) or write elsewhere"
        )
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    try:
        fd = private.open_fd(tmp, os.O_WRONLY | os.O_TRUNC)
    except OSError as exc:
        raise UsageError(
            f"-o {path}: cannot write in {directory} ({exc.strerror}); write elsewhere"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
