"""Failpoints: where the chaos tests make the runner SIGKILL itself, at an exact moment.

`LABRUN_FAILPOINT=NAME:N` (read once, at import) makes the runner send itself SIGKILL the
Nth time it passes the point NAME; `NAME:N:raise` raises an internal error there instead
(what a bug in labrun would do). Points: `claimed` (attempts claimed and committed,
nothing spawned yet), `spawned` (an attempt spawned, its pid not yet committed),
`docker-created` (a container created, not started), `ended` (ends collected from the
executors, not yet committed) and `recorded` (ends committed, the executors not yet told,
so a container is still there). A kill from outside rarely lands in those few
microseconds; these are the moments a resume must get right. Unset (always, outside
tests), a point costs one comparison.
"""

from __future__ import annotations

import os
import signal

_NAME, _, _REST = os.environ.get("LABRUN_FAILPOINT", "").partition(":")
_COUNT, _, _ACTION = _REST.partition(":")
_left = int(_COUNT) if _COUNT.isdigit() else 0


class Failpoint(Exception):
    """The internal error a `NAME:N:raise` failpoint raises."""


def reached(name: str) -> None:
    global _left
    if _left and name == _NAME:
        _left -= 1
        if _left:
            return
        if _ACTION == "raise":
            raise Failpoint(f"failpoint {name} reached")
        os.kill(os.getpid(), signal.SIGKILL)
