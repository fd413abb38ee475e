"""What `labrun check` and `labrun nodes` say about the lab's ssh nodes.

`node_checks(lab, nodes)` gives preflight `Check`s per ssh node: reachable, Python version, free
disk in its work directory, the runtimes it claims, its GPUs. The node is connected and
probed once; the five checks share that probe. `node_row(lab, node)` is the node's row
of `labrun nodes`: online with its probed capacity, or offline with the reason.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from labrun.backends.base import NodeRow
from labrun.config.lab import LabConfig
from labrun.preflight.core import Check, Verdict, failed, passed
from labrun.ssh.config import SshNodeSpec
from labrun.ssh.nodes import node_spec, target_of
from labrun.ssh.session import AgentSession
from labrun.ssh.transport import SshError
from labrun.units import format_size

MIN_PYTHON = (3, 8)
MIN_FREE_DISK = 1024**3


@dataclass
class _Probe:
    """One node's probe, made on first use and shared by its checks."""

    lab: LabConfig
    node: SshNodeSpec
    lock: threading.Lock = field(default_factory=threading.Lock)
    result: dict[str, Any] | None = None
    error: str = ""
    done: bool = False

    def get(self, timeout: float) -> dict[str, Any] | None:
        with self.lock:
            if not self.done:
                session = AgentSession(target_of(self.lab, self.node), self.node.workdir)
                try:
                    self.result = session.connect(timeout=timeout)
                except SshError as exc:
                    self.error = str(exc)
                finally:
                    session.close()
                self.done = True
            return self.result


def node_checks(lab: LabConfig, nodes: Sequence[SshNodeSpec]) -> list[Check]:
    checks = []
    for node in nodes:
        probe = _Probe(lab, node)
        checks += [
            Check(f"node {node.name} reachable", partial(_reachable, probe)),
            Check(f"node {node.name} python", partial(_python, probe)),
            Check(f"node {node.name} free disk", partial(_disk, probe)),
            Check(f"node {node.name} runtimes", partial(_runtimes, probe)),
            Check(f"node {node.name} gpus", partial(_gpus, probe)),
        ]
    return checks


def _unreachable(probe: _Probe) -> Verdict:
    return failed(f"not reachable: {probe.error}", f"fix the connection to node {probe.node.name} first")


def _reachable(probe: _Probe, timeout: float) -> Verdict:
    found = probe.get(timeout)
    if found is None:
        return failed(
            f"node {probe.node.name} ({probe.node.ssh}): {probe.error}",
            f"make `ssh {probe.node.ssh} true` work from here, or remove [nodes.{probe.node.name}]",
        )
    return passed(f"{probe.node.ssh} answers (host {found.get('hostname', '?')})")


def _python(probe: _Probe, timeout: float) -> Verdict:
    found = probe.get(timeout)
    if found is None:
        return _unreachable(probe)
    version = tuple(int(x) for x in str(found["python"]).split(".")[:2])
    if version < MIN_PYTHON:
        return failed(f"python3 is {found['python']}", f"install Python 3.8 or newer on {probe.node.name}")
    return passed(f"python3 {found['python']}")


def _disk(probe: _Probe, timeout: float) -> Verdict:
    found = probe.get(timeout)
    if found is None:
        return _unreachable(probe)
    free = int(found["free_disk"])
    text = f"{format_size(free)} free in {found['workdir']}"
    if free < MIN_FREE_DISK:
        return failed(text, f"free space there or set workdir in [nodes.{probe.node.name}]")
    return passed(text)


def _runtimes(probe: _Probe, timeout: float) -> Verdict:
    found = probe.get(timeout)
    if found is None:
        return _unreachable(probe)
    missing = [rt for rt in probe.node.runtimes if rt not in found["runtimes"]]
    if missing:
        return failed(
            f"claims {', '.join(missing)}, which the node does not offer",
            f"install it there or drop it from runtimes in [nodes.{probe.node.name}]",
        )
    return passed(", ".join(probe.node.runtimes))


def _gpus(probe: _Probe, timeout: float) -> Verdict:
    found = probe.get(timeout)
    if found is None:
        return _unreachable(probe)
    seen = {int(g["index"]): g for g in found.get("gpus", [])}
    wanted = probe.node.gpus if probe.node.gpus is not None else tuple(seen)
    absent = [i for i in wanted if i not in seen]
    if absent:
        return failed(
            f"GPU indices {absent} are not on the node (nvidia-smi sees {sorted(seen) or 'none'})",
            f'fix gpus in [nodes.{probe.node.name}] or use gpus = "auto"',
        )
    names = ", ".join(f"{i}: {seen[i]['name']}" for i in wanted)
    return passed(names or "none")


def node_row(lab: LabConfig, node: SshNodeSpec, timeout: float = 15.0) -> NodeRow:
    """The node as `labrun nodes` shows it: probed when it answers, as configured when not."""
    probe = _Probe(lab, node)
    found = probe.get(timeout)
    if found is None:
        declared = (node.cpus, node.memory, node.gpus or (), node.runtimes)
        return NodeRow(node.name, "ssh", "offline", *declared, error=probe.error)
    spec = node_spec(node, found)
    return NodeRow(node.name, "ssh", "online", spec.cpus, spec.memory, spec.gpus, spec.runtimes)
