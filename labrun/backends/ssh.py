"""Machines reached over SSH (`[nodes.NAME]` with `ssh = ...`), through labrun's agent there.

Wraps labrun/ssh/: the keys (ssh/config.py), connecting and probing (ssh/nodes.py), the
preflight checks and `labrun nodes` rows (ssh/report.py), and the executors
(executors/ssh.py: one `SshExecutor` per node polls for all its runtimes), and a node's
attempts without their runner (ssh/control.py).

Only the keys and the node's table are imported with the registry, at every labrun start;
the rest (sessions, the agent's source, executors) when a command uses an SSH node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from labrun import state_id
from labrun.backends.base import Backend, Connection, NodeControl, NodeRow
from labrun.config.job import JobSpec
from labrun.config.lab import LabConfig, NodeConfig
from labrun.executors.base import Waker
from labrun.preflight.core import Check
from labrun.ssh.config import SSH_KEYS, SshNodeSpec


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
        from labrun.executors.ssh import SshExecutor, SshRuntime
        from labrun.ssh.nodes import connect_all, node_spec

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
        from labrun.ssh.report import node_checks

        return node_checks(lab, _ssh_nodes(nodes))

    def rows(self, lab: LabConfig, nodes: Sequence[NodeConfig]) -> list[NodeRow]:
        from concurrent.futures import ThreadPoolExecutor

        from labrun.ssh.report import node_row

        mine = _ssh_nodes(nodes)
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(mine)))) as pool:
            return list(pool.map(lambda node: node_row(lab, node), mine))

    def control(self, lab: LabConfig, node: NodeConfig) -> NodeControl:
        from labrun.ssh.control import SshControl
        from labrun.ssh.nodes import target_of
        from labrun.ssh.session import AgentSession

        assert isinstance(node, SshNodeSpec)
        session = AgentSession(target_of(lab, node), node.workdir)
        session.connect()  # SshError says why the node cannot be reached
        return SshControl(session, state_id.read(lab.state_dir) or "")
