"""The lab's ssh nodes as the runner sees them: connected executors and resolved capacity.

`connect_all` connects every `[nodes.NAME]` in parallel (each connect is an SSH handshake
and a probe). A node that cannot be reached when a run starts is left out of that run,
with the reason; one that goes away later is handled by its executor (lost attempts,
offline until it answers again). "auto" cpus, memory and GPUs come from the probe.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from labrun.config.lab import LabConfig, NodeSpec
from labrun.config.nodes import SshNodeSpec
from labrun.executors.base import Executor, Waker
from labrun.executors.ssh import SshExecutor, SshRuntime
from labrun.model import Runtime
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


def connect_all(lab: LabConfig) -> list[Connected]:
    if not lab.ssh_nodes:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(lab.ssh_nodes))) as pool:
        return list(pool.map(lambda node: _connect(lab, node), lab.ssh_nodes))


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


def ssh_executors(
    lab: LabConfig, waker: Waker | None = None
) -> tuple[dict[tuple[str, Runtime], Executor], list[str]]:
    """Executors for the nodes that answered, and one message per node that did not.

    Each node's first runtime gets its SshExecutor (the one that polls the node); each
    further runtime an SshRuntime that starts attempts through it."""
    executors: dict[tuple[str, Runtime], Executor] = {}
    problems = []
    for found in connect_all(lab):
        if found.session is None:
            problems.append(f"node {found.spec.name} is left out of this run: {found.error}")
            continue
        first, *others = found.spec.runtimes
        executor = SshExecutor(found.session, lost_after=found.spec.lost_after, waker=waker, runtime=first)
        executor.capacity = node_spec(found.spec, found.session.probe)
        executors[(found.spec.name, first)] = executor
        for runtime in others:  # one agent session per node; the SshExecutor polls for all
            executors[(found.spec.name, runtime)] = SshRuntime(executor, runtime)
    return executors, problems


def resolved_nodes(lab: LabConfig, executors: dict[tuple[str, Runtime], Any]) -> tuple[NodeSpec, ...]:
    """The local node and each connected ssh node with its probed capacity."""
    remote = [ex.capacity for (name, _), ex in executors.items() if isinstance(ex, SshExecutor)]
    return (lab.local, *[spec for spec in remote if spec is not None])
