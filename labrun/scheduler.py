"""Ready tasks × free capacity → placements. Pure: no I/O, no clock.

Tasks are placed in queue order. A task that does not fit now keeps its place: its
needs are reserved on the node that will fit it soonest, so smaller tasks behind it only
use what is left and cannot starve it. Among the nodes that fit, the one with the most
free CPU (as a fraction of its size) wins, which spreads work instead of filling one
node first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from labrun.model import Runtime


@dataclass(frozen=True)
class Demand:
    task_id: int
    cpus: float
    memory: int
    runtime: Runtime = Runtime.PROCESS
    nodes: tuple[str, ...] = ()  # allowed nodes; empty: any
    gpus: int = 0


@dataclass(frozen=True)
class NodeCapacity:
    name: str
    cpus: float  # total
    memory: int  # total
    cpus_used: float = 0.0
    memory_used: int = 0
    runtimes: frozenset[Runtime] = frozenset({Runtime.PROCESS})
    gpus: int = 0  # total
    gpus_used: int = 0


@dataclass(frozen=True)
class Placement:
    task_id: int
    node: str


@dataclass(frozen=True)
class Plan:
    placements: tuple[Placement, ...]
    never_fits: tuple[int, ...]  # task ids larger than every node


_EPS = 1e-9


def can_host(node: NodeCapacity, demand: Demand) -> bool:
    """Whether the node could run the task when idle."""
    return (
        demand.runtime in node.runtimes
        and (not demand.nodes or node.name in demand.nodes)
        and demand.cpus <= node.cpus + _EPS
        and demand.memory <= node.memory
        and demand.gpus <= node.gpus
    )


def fits_somewhere(demand: Demand, nodes: Sequence[NodeCapacity]) -> bool:
    return any(can_host(n, demand) for n in nodes)


def place(
    ready: Sequence[Demand],
    nodes: Sequence[NodeCapacity],
    slots: int,
    avoid: frozenset[str] = frozenset(),
) -> Plan:
    """Place as many of `ready` (in order) as capacity and `slots` (parallel cap) allow.

    Nodes in `avoid` (too many failures in this run) only take a task no other node can host.
    """
    free = {n.name: [n.cpus - n.cpus_used, n.memory - n.memory_used, n.gpus - n.gpus_used] for n in nodes}
    size = {n.name: n.cpus for n in nodes}
    placements: list[Placement] = []
    never: list[int] = []
    for demand in ready:
        if len(placements) >= slots:
            break
        if not fits_somewhere(demand, nodes):
            never.append(demand.task_id)
            continue
        usable = [n for n in nodes if n.name not in avoid and can_host(n, demand)]
        allowed = [n.name for n in usable] or [n.name for n in nodes if can_host(n, demand)]
        candidates = [
            name
            for name, (cpu, mem, gpu) in free.items()
            if name in allowed and demand.cpus <= cpu + _EPS and demand.memory <= mem and demand.gpus <= gpu
        ]
        if candidates:
            best = max(candidates, key=lambda name: (free[name][0] / size[name], free[name][1]))
            free[best][0] -= demand.cpus
            free[best][1] -= demand.memory
            free[best][2] -= demand.gpus
            placements.append(Placement(demand.task_id, best))
            continue
        # Reserve for the waiting task on the node where it fits in total, so later
        # smaller tasks cannot keep it waiting forever.
        if allowed:
            name = allowed[0]
            free[name][0] -= demand.cpus
            free[name][1] -= demand.memory
            free[name][2] -= demand.gpus
    return Plan(tuple(placements), tuple(never))
