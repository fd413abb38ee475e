"""What `labrun check` and `labrun nodes` say about the lab's nodes.

`node_checks(lab)` gives preflight `Check`s per ssh node: reachable, Python version, free
disk in its work directory, the runtimes it claims, its GPUs. The node is connected and
probed once; the five checks share that probe. `node_states(lab, store)` describes every
node (local included) for `labrun nodes`: state, resources total and in use, GPUs,
runtimes, running attempts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from labrun.config.lab import LabConfig
from labrun.config.nodes import SshNodeSpec
from labrun.preflight.core import Check, CheckResult, Verdict, failed, passed
from labrun.ssh.nodes import node_spec, target_of
from labrun.ssh.session import AgentSession
from labrun.ssh.transport import SshError
from labrun.states import RunState
from labrun.store import Store
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


def node_checks(lab: LabConfig) -> list[Check]:
    checks = []
    for node in lab.ssh_nodes:
        probe = _Probe(lab, node)
        checks += [
            Check(f"node {node.name} reachable", partial(_reachable, probe)),
            Check(f"node {node.name} python", partial(_python, probe)),
            Check(f"node {node.name} free disk", partial(_disk, probe)),
            Check(f"node {node.name} runtimes", partial(_runtimes, probe)),
            Check(f"node {node.name} gpus", partial(_gpus, probe)),
        ]
    return checks


def node_of(lab: LabConfig, check_name: str) -> str | None:
    """The ssh node a check of `node_checks` is about; None for any other check."""
    parts = check_name.split(" ")
    names = {node.name for node in lab.ssh_nodes}
    return parts[1] if len(parts) >= 3 and parts[0] == "node" and parts[1] in names else None


def unreachable_nodes(lab: LabConfig, results: Sequence[CheckResult]) -> set[str]:
    return {
        node
        for r in results
        if not r.ok and r.name.endswith(" reachable") and (node := node_of(lab, r.name)) is not None
    }


def _unreachable(probe: _Probe) -> Verdict:
    return failed(f"not reachable: {probe.error}", f"fix the connection to node {probe.node.name} first")


def _reachable(probe: _Probe, timeout: float) -> Verdict:
    found = probe.get(timeout)
    if found is None:
        return failed(
            probe.error,
            f"make `{target_of(probe.lab, probe.node).user_command('true')}` work from here, "
            f"or remove [nodes.{probe.node.name}]",
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


def node_states(lab: LabConfig, store: Store | None) -> list[dict[str, Any]]:
    """Every node: state, resources (total and in use), GPUs, runtimes, running attempts."""
    running = _running_attempts(store)
    rows = [_row("local", "online", lab.local.cpus, lab.local.memory, lab.local.gpus, lab.local.runtimes)]
    for node in lab.ssh_nodes:
        probe = _Probe(lab, node)
        found = probe.get(15.0)
        if found is None:
            gpus = node.gpus or ()
            rows.append(_row(node.name, "offline", node.cpus, node.memory, gpus, node.runtimes, probe.error))
            continue
        spec = node_spec(node, found)
        rows.append(_row(node.name, "online", spec.cpus, spec.memory, spec.gpus, spec.runtimes))
    for row in rows:
        mine = running.get(row["name"], [])
        row["running"] = [f"run {a['run']} {a['task']} #{a['attempt']}" for a in mine]
        row["cpus_used"] = sum(a["cpus"] for a in mine)
        row["memory_used"] = sum(a["memory"] for a in mine)
    return rows


def _row(
    name: str,
    state: str,
    cpus: float | None,
    memory: int | None,
    gpus: tuple[int, ...],
    runtimes: tuple[str, ...],
    error: str = "",
) -> dict[str, Any]:
    return {
        "name": name,
        "state": state,
        "cpus": cpus,
        "memory": memory,
        "gpus": list(gpus),
        "runtimes": list(runtimes),
        "error": error,
    }


def _running_attempts(store: Store | None) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    if store is None:
        return out
    for run in store.runs(limit=50):
        if run.state is not RunState.RUNNING:
            continue
        for attempt in store.open_attempts(run.id):
            task = store.task(attempt.task_id)
            out.setdefault(attempt.node, []).append(
                {
                    "run": run.id,
                    "task": task.name,
                    "attempt": attempt.n,
                    "cpus": 0.0,
                    "memory": attempt.memory_limit or 0,
                }
            )
    return out


def render_nodes(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        total = f"{row['cpus'] or 'auto'} cpus, {format_size(row['memory']) if row['memory'] else 'auto'}"
        used = f"{len(row['running'])} running, {format_size(row['memory_used'])} reserved"
        gpus = ",".join(map(str, row["gpus"])) or "none"
        lines.append(
            f"{row['name']:<12} {row['state']:<8} {total}; {used}; gpus {gpus}; "
            f"runtimes {', '.join(row['runtimes'])}"
        )
        if row["error"]:
            lines.append(f"{'':<12} {row['error']}")
        lines += [f"{'':<12} {item}" for item in row["running"]]
    return "\n".join(lines)
