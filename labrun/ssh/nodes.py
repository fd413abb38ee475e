"""The lab's ssh nodes: connecting their agents, and their capacity with "auto" resolved.

`connect_all` connects the given `[nodes.NAME]`s in parallel (each connect is an SSH handshake
and a probe). A node that cannot be reached when a run starts is left out of that run,
with the reason; one that goes away later is handled by its executor (lost attempts,
offline until it answers again). "auto" cpus, memory and GPUs come from the probe.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from labrun.config.lab import LabConfig, NodeSpec
from labrun.ssh.config import SshNodeSpec
from labrun.ssh.session import AgentSession
from labrun.ssh.transport import SshError, SshTarget


@dataclass(frozen=True)
class Connected:
    spec: SshNodeSpec
    session: AgentSession | None
    error: str = ""


def target_of(lab: LabConfig, node: SshNodeSpec) -> SshTarget:
    return SshTarget(
        node=node.name,
        destination=node.ssh,
        control_dir=os.path.join(lab.state_dir, "ssh"),
        ssh_config=node.ssh_config,
        options=node.ssh_options,
        accept_new_host_keys=node.accept_new_host_keys,
    )


def _connect(lab: LabConfig, node: SshNodeSpec) -> Connected:
    session = AgentSession(target_of(lab, node), node.workdir)
    try:
        session.connect()
    except SshError as exc:
        session.close()
        return Connected(node, None, str(exc))
    return Connected(node, session)


def connect_all(lab: LabConfig, nodes: Sequence[SshNodeSpec]) -> list[Connected]:
    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(nodes))) as pool:
        return list(pool.map(lambda node: _connect(lab, node), nodes))


def node_spec(spec: SshNodeSpec, probe: dict[str, Any]) -> NodeSpec:
    """The node's capacity: configured values, with "auto" ones from the probe."""
    gpus = spec.gpus if spec.gpus is not None else tuple(int(g["index"]) for g in probe.get("gpus", []))
    return NodeSpec(
        spec.name,
        spec.cpus if spec.cpus is not None else float(probe["cpus"]),
        spec.memory if spec.memory is not None else int(probe["memory"]),
        spec.runtimes,
        gpus,
    )
