"""Machines reached over SSH (`[nodes.NAME]` with `ssh = ...`), through labrun's agent there.

Wraps labrun/ssh/: the keys (ssh/config.py), connecting and probing (ssh/nodes.py), the
preflight checks and `labrun nodes` rows (ssh/report.py), and the executors
(executors/ssh.py: one `SshExecutor` per node polls for all its runtimes). Without a
runner, a node's attempts are found by their key `r<run>-a<attempt>` in the agent's
records (`<workdir>/attempts/<key>/status.json`) and signalled through the agent, which
signals the process group, the cgroup or the container.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from labrun import state_id
from labrun.backends.base import Backend, Connection, NodeControl, NodeRow
from labrun.config.job import JobSpec
from labrun.config.lab import LabConfig, NodeConfig
from labrun.executors.base import Waker
from labrun.executors.ssh import SshExecutor, SshRuntime, legacy_key, remote_key
from labrun.preflight.core import Check
from labrun.rows import AttemptRow
from labrun.ssh.config import SSH_KEYS, SshNodeSpec
from labrun.ssh.nodes import connect_all, node_spec, target_of
from labrun.ssh.report import node_checks, node_row
from labrun.ssh.session import AgentSession

SWEEP_WAIT = 30.0  # after KILL: until the agent's monitors recorded the ends (containers removed)


def _ssh_nodes(nodes: Sequence[NodeConfig]) -> list[SshNodeSpec]:
    return [n for n in nodes if isinstance(n, SshNodeSpec)]


class SshBackend(Backend):
    name = "ssh"
    help = "A machine reached over SSH; labrun copies its stdlib-only agent there (Python >= 3.8)."
    keys = SSH_KEYS
    required = ("ssh",)

    def claims(self, name: str, table: Mapping[str, Any]) -> bool:
        return "ssh" in table

    def node(self, name: str, values: Mapping[str, Any]) -> NodeConfig:
        return SshNodeSpec(name, **values)

    def problems(self, node: NodeConfig) -> list[tuple[str, str, str]]:
        assert isinstance(node, SshNodeSpec)
        if not node.ssh.strip() or node.ssh.startswith("-"):
            return [("ssh", 'expected ssh = "user@host" (a destination)', "")]
        return []

    def connect(self, lab: LabConfig, nodes: Sequence[NodeConfig], waker: Waker) -> Connection:
        """Each node's first runtime gets its SshExecutor (the one that polls the node); each
        further runtime an SshRuntime that starts attempts through it."""
        connection = Connection()
        # The state directory's id names its attempts on the nodes (and labels their
        # containers): another state directory using the same node workdir never takes them.
        try:
            state = state_id.ensure(lab.state_dir)
        except OSError:
            state = state_id.read(lab.state_dir) or ""
        for found in connect_all(lab, _ssh_nodes(nodes)):
            if found.session is None:
                connection.problems.append(f"node {found.spec.name} is left out of this run: {found.error}")
                continue
            first, *others = found.spec.runtimes
            executor = SshExecutor(
                found.session, lost_after=found.spec.lost_after, waker=waker, runtime=first, state=state
            )
            connection.executors[(found.spec.name, first)] = executor
            for runtime in others:  # one agent session per node; the SshExecutor polls for all
                connection.executors[(found.spec.name, runtime)] = SshRuntime(executor, runtime)
            connection.nodes.append(node_spec(found.spec, found.session.probe))
        return connection

    def checks(self, lab: LabConfig, nodes: Sequence[NodeConfig], job: JobSpec) -> list[Check]:
        return node_checks(lab, _ssh_nodes(nodes))

    def rows(self, lab: LabConfig, nodes: Sequence[NodeConfig]) -> list[NodeRow]:
        mine = _ssh_nodes(nodes)
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(mine)))) as pool:
            return list(pool.map(lambda node: node_row(lab, node), mine))

    def control(self, lab: LabConfig, node: NodeConfig) -> NodeControl:
        assert isinstance(node, SshNodeSpec)
        session = AgentSession(target_of(lab, node), node.workdir)
        session.connect()  # SshError says why the node cannot be reached
        return SshControl(session, state_id.read(lab.state_dir) or "")


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
