"""A node that stops answering without dying (issue 12, finding 5): its attempts are given
up within `lost_after` plus a margin, they stop themselves on the node (fencing, so the
work is not done twice), and reconnecting to a hung node never stalls the runner's loop."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sshd import SshdLab
from test_ssh_nodes import launch, node_executor, wait_for

from labrun.executors.ssh import FENCE_MARGIN

LOST_AFTER = 3.0


def _status(tmp_path: Path) -> dict[str, object]:
    try:
        data: dict[str, object] = json.loads(
            (tmp_path / "remote-node-a/attempts/r1-a1/status.json").read_text()
        )
    except (OSError, ValueError):
        return {}
    return data


def test_a_silent_node_is_given_up_within_lost_after_and_its_attempt_is_fenced(
    tmp_path: Path, sshd_lab: SshdLab
) -> None:
    server, executor = node_executor(tmp_path, sshd_lab, LOST_AFTER)
    marker = tmp_path / "finished-there"
    try:
        executor.start(launch(tmp_path, ("sh", "-c", f"sleep 8; echo done > {marker}"), 1))
        assert not wait_for(executor, 1, limit=1.0)  # running, polled
        server.freeze()  # connected, but nothing answers: no EOF, no error, only silence
        frozen = time.monotonic()
        facts = wait_for(executor, 1, limit=60)
        silent_for = time.monotonic() - frozen
        assert facts[1].lost and "node-a did not answer" in facts[1].detail  # type: ignore[attr-defined]
        # before: 15 s at least whatever lost_after said, and a freeze of 25 s went unseen
        assert LOST_AFTER <= silent_for < LOST_AFTER + FENCE_MARGIN + 10, silent_for
        assert not executor.online
        # fencing: nothing renewed its lease, so its monitor on the node killed it there
        deadline = time.monotonic() + 30
        while "fenced" not in _status(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        status = _status(tmp_path)
        assert "fenced" in status and status.get("signal") == 9, status
        time.sleep(8)  # the sleep would have finished by now had it not been stopped
        assert not marker.exists(), "an attempt given up as lost went on beside its rerun"
    finally:
        server.thaw()
        executor.close()


def test_reconnecting_to_a_hung_node_does_not_stall_the_loop(tmp_path: Path, sshd_lab: SshdLab) -> None:
    server, executor = node_executor(tmp_path, sshd_lab, lost_after=1.0)
    try:
        executor.start(launch(tmp_path, ("sleep", "30"), 1))
        server.freeze()
        assert wait_for(executor, 1, limit=60)[1].lost  # type: ignore[attr-defined]
        # now every reconnect meets a listener that accepts and never speaks: each
        # finished() must come back at once (the connect waits in its own thread)
        calls, began = 0, time.monotonic()
        while time.monotonic() - began < 5:
            executor.finished()
            calls += 1
            time.sleep(0.05)
        assert calls > 20, f"finished() was called {calls} times in 5 s: the loop blocked on the node"
        assert executor._connecting is not None and not executor.online  # still trying, still offline
        server.thaw()
        deadline = time.monotonic() + 60
        while not executor.online and time.monotonic() < deadline:
            executor.finished()
            time.sleep(0.1)
        assert executor.online  # back, in the background, once the node answers
    finally:
        server.thaw()
        executor.close()
