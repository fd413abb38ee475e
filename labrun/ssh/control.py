"""A node's attempts without their runner (`labrun cancel`, the orphan sweep): found by their
key `r<run>-a<attempt>` in the agent's records (`<workdir>/attempts/<key>/status.json`) and
signalled through the agent, which signals the process group, the cgroup or the container."""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from typing import Any

from labrun.backends.base import NodeControl
from labrun.executors.ssh import legacy_key, remote_key
from labrun.rows import AttemptRow
from labrun.ssh.session import AgentSession

SWEEP_WAIT = 30.0  # after KILL: until the agent's monitors recorded the ends (containers removed)


class SshControl(NodeControl):
    """A node's attempts through one agent session."""

    def __init__(self, session: AgentSession, state: str) -> None:
        self.session, self.state = session, state

    def _keys(self, attempt: AttemptRow) -> list[str]:
        """Its name on the node, and the one it had if it started before keys carried the state id."""
        return list(
            dict.fromkeys(
                [remote_key(self.state, attempt.run_id, attempt.id), legacy_key(attempt.run_id, attempt.id)]
            )
        )

    def _statuses(self, attempts: Sequence[AttemptRow]) -> dict[int, dict[str, Any]]:
        keys = {key: a.id for a in attempts for key in self._keys(a)}
        answer = self.session.request("poll", attempts={key: [0, 0] for key in keys})
        found: dict[int, dict[str, Any]] = {}
        for key, info in answer["attempts"].items():
            status = info.get("status") if info else None
            if status is not None or keys[key] not in found:
                found[keys[key]] = status or {}
        return found

    def running(self, attempts: Sequence[AttemptRow]) -> list[int]:
        if not attempts:
            return []
        return [
            i for i, status in self._statuses(attempts).items() if "pid" in status and "ended" not in status
        ]

    def signal(self, attempts: Sequence[AttemptRow], signum: int) -> None:
        for attempt in attempts:
            for key in self._keys(attempt):
                self.session.request("kill", key=key, signal=int(signum))

    def sweep(self, attempts: Sequence[AttemptRow]) -> list[str]:
        """KILL what still runs, then wait for the agent's monitors to record the ends: a
        container is removed before its end is recorded."""
        running = self.running(attempts)
        mine = [a for a in attempts if a.id in running]
        self.signal(mine, signal.SIGKILL)
        deadline = time.monotonic() + SWEEP_WAIT
        while mine and self.running(mine) and time.monotonic() < deadline:
            time.sleep(0.1)
        return [f"attempt {a.id} ({self._keys(a)[0]})" for a in mine]

    def close(self) -> None:
        self.session.close()
