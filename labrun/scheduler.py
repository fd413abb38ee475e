"""Ready tasks × free capacity → placements. Pure: no I/O, no clock.

Tasks are placed in queue order. A task that does not fit now keeps its place: its
needs are reserved on the node that will fit it soonest, so smaller tasks behind it only
use what is left and cannot starve it. Among the nodes that fit, the one with the most
free CPU (as a fraction of its size) wins, which spreads work instead of filling one
node first.

A queue node (a Slurm partition, `max_jobs` set) is sized per attempt: its cpus, memory
and gpus are what one attempt may ask for, and it takes at most `max_jobs` attempts at
once, whatever they ask; the cluster's own scheduler shares its machines out.
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
    max_jobs: int | None = None  # a queue: the sizes above are per attempt (see the docstring)
    jobs_used: int = 0


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
    free = {n.name: _free(n) for n in nodes}
    size = {n.name: n.cpus for n in nodes}
    queues = {n.name: n for n in nodes if n.max_jobs is not None}
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
        candidates = [name for name in allowed if _room(free[name], demand, name in queues)]
        if candidates:
            best = max(candidates, key=lambda name: _preference(free[name], size[name], name in queues))
            _take(free[best], demand, best in queues)
            placements.append(Placement(demand.task_id, best))
            continue
        # Reserve for the waiting task on the node where it fits in total, so later
        # smaller tasks cannot keep it waiting forever.
        if allowed:
            _take(free[allowed[0]], demand, allowed[0] in queues)
    return Plan(tuple(placements), tuple(never))


def _free(node: NodeCapacity) -> list[float]:
    """[cpus, memory, gpus] free; a queue's: [jobs free] (its sizes are per attempt)."""
    if node.max_jobs is not None:
        return [float(node.max_jobs - node.jobs_used)]
    return [node.cpus - node.cpus_used, node.memory - node.memory_used, node.gpus - node.gpus_used]


def _room(free: list[float], demand: Demand, queue: bool) -> bool:
    if queue:  # the per-attempt sizes were checked by can_host
        return free[0] >= 1
    return demand.cpus <= free[0] + _EPS and demand.memory <= free[1] and demand.gpus <= free[2]


def _take(free: list[float], demand: Demand, queue: bool) -> None:
    if queue:
        free[0] -= 1
        return
    free[0] -= demand.cpus
    free[1] -= demand.memory
    free[2] -= demand.gpus


def _preference(free: list[float], size: float, queue: bool) -> tuple[float, float]:
    """Most free CPU as a fraction of the node first; a queue with room ranks after an
    idle machine (work on hand starts at once there, a cluster may queue it)."""
    if queue:
        return (0.5 if free[0] >= 1 else 0.0, 0.0)
    return (free[0] / size if size else 0.0, free[1])
