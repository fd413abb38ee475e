"""Where attempts may go now: the run's nodes as the runner sees them in flight.

The free room of each node (CPUs, memory, GPUs, queue slots) is what the attempts in flight
leave; `scheduler.place` decides from it. This holds that bookkeeping apart from the loop:
the capacity of each node, the nodes to avoid after repeated failures, which GPUs an
attempt gets, and why a task can never be placed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Protocol

from labrun.config.job import TaskSpec
from labrun.config.lab import NodeSpec
from labrun.executors.base import Executor
from labrun.gpus import assign
from labrun.model import Launch, Runtime
from labrun.rows import TaskRow
from labrun.scheduler import Demand, NodeCapacity, Plan, place
from labrun.units import format_size


class InFlight(Protocol):
    """What the room needs of an attempt in flight (the runner's `Active`)."""

    node: str
    spec: TaskSpec
    launch: Launch
    gpus: tuple[int, ...]


class Room:
    def __init__(
        self,
        nodes: Sequence[NodeSpec],
        specs: Mapping[str, TaskSpec],
        executors: Mapping[tuple[str, Runtime], Executor],
        active: Mapping[int, InFlight],
        max_parallel: int | None,
        node_max_failures: int,
    ) -> None:
        self.nodes, self.specs, self.executors, self.active = nodes, specs, executors, active
        self.max_parallel = max_parallel
        self.node_max_failures = node_max_failures
        self.node_failures: dict[str, int] = {}  # counted failures of this run per node

    def slots(self) -> int:
        cap = self.max_parallel if self.max_parallel is not None else math.inf
        return int(min(cap - len(self.active), 1_000_000))

    def could_start(self) -> float:
        """An upper bound on how many more attempts fit now, from free CPUs alone."""
        least = self._least_cpus
        if least is None:
            return math.inf  # read as before, so a task no node can hold fails at once
        capacity = self.capacity()
        free = sum(max(0.0, node.cpus - node.cpus_used) for node in capacity if node.max_jobs is None)
        queued = sum(max(0, node.max_jobs - node.jobs_used) for node in capacity if node.max_jobs is not None)
        return math.floor((free + 1e-9) / least) + queued

    @functools.cached_property
    def _least_cpus(self) -> float | None:
        """The fewest CPUs a task asks for; None when some asks for none, or for more than
        any node has (the run's tasks and nodes are fixed: asked at every tick, computed once)."""
        least = min((spec.cpus for spec in self.specs.values()), default=0.0)
        most = max((spec.cpus for spec in self.specs.values()), default=0.0)
        if least <= 0 or most > max(node.cpus for node in self.nodes):
            return None
        return least

    def plan(self, ready: list[TaskRow]) -> Plan:
        return place([self.demand(t) for t in ready], self.capacity(), self.slots(), self.avoid())

    def capacity(self) -> list[NodeCapacity]:
        used: dict[str, list[float]] = {node.name: [0.0, 0.0, 0.0, 0.0] for node in self.nodes}
        for act in self.active.values():
            used[act.node][0] += act.spec.cpus
            used[act.node][1] += act.launch.memory
            used[act.node][2] += len(act.gpus)
            used[act.node][3] += 1
        for node in self.nodes:
            if not self.online(node.name):  # offline: nothing fits now, tasks wait for it
                used[node.name] = [node.cpus, node.memory, len(node.gpus), float(node.max_jobs or 0)]
        return [
            NodeCapacity(
                node.name,
                node.cpus,
                node.memory,
                used[node.name][0],
                int(used[node.name][1]),
                frozenset(rt for (name, rt) in self.executors if name == node.name),
                len(node.gpus),
                int(used[node.name][2]),
                node.max_jobs,
                int(used[node.name][3]),
            )
            for node in self.nodes
        ]

    def online(self, node: str) -> bool:
        return all(ex.online for (name, _), ex in self.executors.items() if name == node)

    def avoid(self) -> frozenset[str]:
        return frozenset(n for n, count in self.node_failures.items() if count >= self.node_max_failures)

    def gpus_for(self, node: str, count: int) -> tuple[int, ...]:
        if not count:
            return ()
        spec = next(n for n in self.nodes if n.name == node)
        if spec.max_jobs is not None:  # a queue: its scheduler picks the devices; this is the count
            return tuple(range(count))
        busy = [gpu for act in self.active.values() if act.node == node for gpu in act.gpus]
        return assign(count, spec.gpus, busy)

    def demand(self, task: TaskRow) -> Demand:
        spec = self.specs[task.spec]
        nodes = (self.nodes[0].name,) if task.seq == 0 else spec.nodes  # task 0: the head node
        return Demand(task.id, spec.cpus, task.memory, spec.runtime, nodes, spec.gpus)

    def never_fits(self, task: TaskRow) -> str:
        spec = self.specs[task.spec]
        hosts = [n for n in self.nodes if (n.name, spec.runtime) in self.executors]
        if not hosts:
            return f"needs runtime {spec.runtime!r}, which no node offers"
        if spec.nodes and not any(n.name in spec.nodes for n in hosts):
            known = ", ".join(n.name for n in hosts)
            return (
                f"may only run on {', '.join(spec.nodes)}, not among this run's nodes ({known}): "
                "a node that did not answer when the run started is left out"
            )
        if spec.gpus > max(len(n.gpus) for n in hosts):
            return f"needs {spec.gpus} GPUs; no node has that many"
        big = max(hosts, key=lambda n: (n.memory, n.cpus))
        return (
            f"needs {spec.cpus:g} cpus and {format_size(task.memory)} memory; the largest node "
            f"({big.name}) has {big.cpus:g} cpus and {format_size(big.memory)}"
        )

    def nodes_for(self, demand: Demand) -> tuple[list[str], list[str]]:
        """The nodes a copy fits on now, and those that could ever hold it."""
        capacity, avoid = self.capacity(), self.avoid()
        free, able = [], []
        for node in capacity:
            if demand.nodes and node.name not in demand.nodes:
                continue
            pinned = dataclasses.replace(demand, nodes=(node.name,))
            if place([pinned], capacity, self.slots(), avoid).placements:
                free.append(node.name)
            whole = dataclasses.replace(node, cpus_used=0.0, memory_used=0, gpus_used=0, jobs_used=0)
            if node.name not in avoid and place([pinned], [whole], 1).placements:
                able.append(node.name)
        return free, able
