"""The runner's list of its own children (where escapees of attempts are re-parented), read
from /proc after every end through one descriptor kept open."""

from __future__ import annotations

import os
import signal

from labrun.executors import escapes


def test_every_child_is_listed_past_the_first_page_and_after_some_end() -> None:
    """/proc fills one page (about 680 pids) a read: a runner with more children still
    sees them all; a reread lists the children as they are now, not as they were."""
    children = [os.posix_spawn("/bin/sleep", ["sleep", "60"], dict(os.environ)) for _ in range(900)]
    try:
        assert set(children) <= escapes._children()
        for pid in children[:450]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        found = escapes._children()
        assert set(children[450:]) <= found and not set(children[:450]) & found
    finally:
        for pid in children[450:]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
