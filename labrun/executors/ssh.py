"""Attempts on a node reached over SSH, through labrun's agent there.

`start` asks the agent to launch the attempt detached from the SSH session, so a dropped
connection does not kill it. Ends are found by polling: one `poll` request per node per
`POLL_INTERVAL` over the long-lived session, for all the node's attempts at once, which
also brings back new stdout/stderr bytes; they are appended to the attempt's log files
on the head as they come (so `labrun logs -f` is live).

A node that does not answer for `lost_after` seconds goes offline: its running attempts
are reported lost (not counted against the task; the runner re-runs them where it can)
and `online` is False so the runner places nothing there. The executor keeps trying to
reconnect; when the node answers again it is online, and the attempts that were given up
on are killed there, since they have been re-run elsewhere.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labrun.config.lab import NodeSpec
from labrun.executors.base import Executor, Facts, Launch, Started
from labrun.ssh.session import AgentSession
from labrun.ssh.transport import SshError

POLL_INTERVAL = 0.5
RECONNECT_INTERVAL = 2.0


@dataclass
class _Remote:
    launch: Launch
    key: str
    offsets: list[int] = field(default_factory=lambda: [0, 0])
    confirmed: bool = True  # False when the start request got no answer


def attempt_key(launch: Launch) -> str:
    return f"r{launch.run_id}-a{launch.attempt_id}"


class SshExecutor(Executor):
    runtime = "process"

    def __init__(
        self,
        session: AgentSession,
        lost_after: float = 60.0,
        clock: Callable[[], float] = time.time,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.session, self.lost_after, self.clock = session, lost_after, clock
        self.poll_interval = poll_interval
        self.node = session.target.node
        self.attempts: dict[int, _Remote] = {}
        self.orphans: list[str] = []  # keys of attempts reported lost: killed when the node returns
        self.last_ok = clock()
        self.next_poll = 0.0
        self.next_connect = 0.0
        self.online = True
        self.error = ""
        self.capacity: NodeSpec | None = None  # what the node offers (set by labrun.ssh.nodes)

    # -- connection ---------------------------------------------------------------------

    def _ensure(self, now: float) -> bool:
        if self.session.connected:
            return True
        if now < self.next_connect:
            return False
        self.next_connect = now + RECONNECT_INTERVAL
        try:
            self.session.connect()
        except SshError as exc:
            self.error = str(exc)
            return False
        self._back_online(now)
        return True

    def _back_online(self, now: float) -> None:
        self.last_ok, self.online, self.error = now, True, ""
        for key in self.orphans:
            try:
                self.session.request("kill", key=key, signal=9)
            except SshError:
                return
        self.orphans.clear()

    # -- the seam -------------------------------------------------------------------------

    def start(self, launch: Launch) -> Started:
        remote = _Remote(launch, attempt_key(launch))
        _truncate(launch)
        request: dict[str, Any] = {
            "key": remote.key,
            "argv": list(launch.argv),
            "env": dict(launch.env),
            "cwd": launch.workdir,
            "outputs": list(launch.outputs),
        }
        try:
            if not self._ensure(self.clock()):
                raise SshError(self.error or f"node {self.node} is not connected")
            answer = self.session.request("start", **request)
            ref = f"{self.node}:{answer['dir']}"
        except SshError as exc:
            # unknown whether it started: polling finds out, and loss handling covers the rest
            remote.confirmed, ref = False, f"{self.node}:?"
            self.error = str(exc)
        self.attempts[launch.attempt_id] = remote
        self.next_poll = min(self.next_poll, self.clock() + self.poll_interval)
        return Started(ref=ref, mechanism="ssh-process")

    def wake_at(self) -> float | None:
        if not self.attempts and self.online:
            return None
        return self.next_poll

    def finished(self) -> list[tuple[int, Facts]]:
        now = self.clock()
        if now < self.next_poll or (not self.attempts and self.online):
            return []
        self.next_poll = now + self.poll_interval
        answer = None
        if self._ensure(now):
            try:
                offsets = {r.key: r.offsets for r in self.attempts.values()}
                answer = self.session.request("poll", attempts=offsets)
                self.last_ok = now
            except SshError as exc:
                self.error = str(exc)
        if answer is None:
            return self._maybe_lost(now)
        done = []
        for attempt_id, remote in list(self.attempts.items()):
            facts = self._absorb(remote, answer["attempts"].get(remote.key) or {}, now)
            if facts is not None:
                del self.attempts[attempt_id]
                done.append((attempt_id, facts))
        return done

    def _maybe_lost(self, now: float) -> list[tuple[int, Facts]]:
        if now - self.last_ok < self.lost_after:
            return []
        self.online = False
        detail = f"node {self.node} did not answer for {now - self.last_ok:.0f}s: {self.error}"
        lost = [(i, Facts(None, None, now, lost=True, detail=detail)) for i in self.attempts]
        self.orphans.extend(r.key for r in self.attempts.values())
        self.attempts.clear()
        return lost

    def _absorb(self, remote: _Remote, info: dict[str, Any], now: float) -> Facts | None:
        short = True
        for index, stream in enumerate(("stdout", "stderr")):
            data = base64.b64decode(info.get(stream) or "")
            if data:
                path = remote.launch.stdout_path if index == 0 else remote.launch.stderr_path
                with open(path, "ab") as handle:
                    handle.write(data)
                remote.offsets[index] += len(data)
            short = short and len(data) < (1 << 20)
        status = info.get("status")
        if status is None:
            if remote.confirmed:
                return None
            why = f"the start on node {self.node} was not confirmed"
            return Facts(None, None, now, lost=True, detail=why)
        if "ended" not in status or not short:
            return None  # still running, or logs still to fetch
        return _facts(status, self.node)

    def signal(self, attempt_id: int, signum: int) -> None:
        remote = self.attempts.get(attempt_id)
        if remote is None or not self.session.connected:
            return
        try:
            self.session.request("kill", key=remote.key, signal=int(signum))
        except SshError as exc:
            self.error = str(exc)

    def running(self) -> list[int]:
        return list(self.attempts)

    def close(self) -> None:
        self.session.close()
        self.session.target.close()


def _facts(status: dict[str, Any], node: str) -> Facts:
    ended = float(status["ended"])
    if status.get("start_error"):
        return Facts(None, None, ended, start_error=f"on node {node}: {status['start_error']}")
    missing = tuple(status.get("missing") or ())
    return Facts(
        status.get("exit"),
        status.get("signal"),
        ended,
        cpu_seconds=status.get("cpu"),
        missing_outputs=missing,
    )


def _truncate(launch: Launch) -> None:
    os.makedirs(os.path.dirname(launch.stdout_path), mode=0o700, exist_ok=True)
    for path in (launch.stdout_path, launch.stderr_path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
