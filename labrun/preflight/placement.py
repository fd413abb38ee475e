"""Can every task run somewhere? The checks `labrun check` makes per task before a run.

A task fits a node when the node is one it may use (`nodes = [...]`), offers its runtime,
and has its CPUs, memory and GPUs (the scheduler's own rule, `scheduler.can_host`). A
CPU list to pin to (`cpuset`) must name CPUs this machine has. An ssh node's "auto"
values (`NodeConfig.auto`) are not known before it is probed: they do not rule a task out here (the run
probes the node and places with what it finds).

`fits_without(job, lab, left_out)` answers the question an offline node raises: can the
run go ahead without it?
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence

from labrun.config.job import JobSpec, TaskSpec
from labrun.config.lab import LabConfig
from labrun.preflight.core import Check, Verdict, failed, passed
from labrun.scheduler import Demand, NodeCapacity, can_host
from labrun.units import format_size

UNKNOWN = float("inf")  # an ssh node's "auto" value before its probe


def capacities(lab: LabConfig) -> list[NodeCapacity]:
    """Every node of the lab, whatever its backend, as labrun.toml declares it."""
    nodes = []
    for node in lab.nodes:
        spec, auto = node.declared(), node.auto()
        nodes.append(
            NodeCapacity(
                spec.name,
                UNKNOWN if "cpus" in auto else spec.cpus,
                2**62 if "memory" in auto else spec.memory,
                runtimes=frozenset(spec.runtimes),
                gpus=2**31 if "gpus" in auto else len(spec.gpus),
            )
        )
    return nodes


def demand(task: TaskSpec) -> Demand:
    return Demand(0, task.cpus, task.memory, task.runtime, task.nodes, task.gpus)


def fits_without(job: JobSpec, lab: LabConfig, left_out: set[str]) -> list[str]:
    """The tasks that could run only on the nodes in `left_out` (empty: the run can go on)."""
    nodes = [n for n in capacities(lab) if n.name not in left_out]
    return [t.name for t in job.all_tasks if not any(can_host(n, demand(t)) for n in nodes)]


def placement_checks(job: JobSpec, lab: LabConfig) -> list[Check]:
    nodes = capacities(lab)
    checks = [task_fits(task, nodes, lab) for task in job.all_tasks]
    checks += [cpuset_exists(t.name, t.cpuset, local_cpus()) for t in job.all_tasks if t.cpuset]
    return checks


def task_fits(task: TaskSpec, nodes: Sequence[NodeCapacity], lab: LabConfig) -> Check:
    def probe(_timeout: float) -> Verdict:
        need = describe(task.cpus, task.memory, task.gpus)
        hosts = [n.name for n in nodes if can_host(n, demand(task))]
        if hosts:
            return passed(f"asks {need}; fits on {', '.join(hosts)}")
        return _why_not(task, need, nodes, lab)

    return Check(f"resources {task.name}", probe)


def _why_not(task: TaskSpec, need: str, nodes: Sequence[NodeCapacity], lab: LabConfig) -> Verdict:
    config = lab.file or "labrun.toml"
    names = [n.name for n in nodes]
    unknown = [name for name in task.nodes if name not in names]
    if unknown and len(unknown) == len(task.nodes):
        close = difflib.get_close_matches(unknown[0], names, n=1)
        fix = f'write nodes = ["{close[0]}"]' if close else f"define [nodes.{unknown[0]}] in {config}"
        return failed(
            f"task {task.name} may run only on {', '.join(unknown)}, which {config} does not define "
            f"(its nodes: {', '.join(names)})",
            f"{fix}, or remove nodes from task {task.name}",
        )
    allowed = [n for n in nodes if not task.nodes or n.name in task.nodes]
    if not any(task.runtime in n.runtimes for n in allowed):
        return failed(
            f"task {task.name} needs runtime {task.runtime}, which none of {_names(allowed)} offers",
            f"set runtime to one they offer ({_runtimes(allowed)}), or add it to runtimes in [nodes.NAME]",
        )
    if task.gpus and not any(n.gpus >= task.gpus for n in allowed):
        most = max(allowed, key=lambda n: n.gpus)
        have = f"{most.name} has {most.gpus}" if most.gpus else "no node has a GPU"
        here = lab.nodes[0].declared() if lab.nodes else None  # the local node comes first
        local = "" if here is None or here.gpus else " (NVML finds none on this machine)"
        return failed(
            f"task {task.name} asks {task.gpus} GPU{'s' if task.gpus > 1 else ''}; {have}{local}",
            f"set gpus = 0 for task {task.name}, or add a node with GPUs to {config}",
        )
    return failed(
        f"task {task.name} asks {need}; {_largest(allowed)}",
        f"lower cpus/memory of task {task.name} to what a node has, or add a bigger node",
    )


def _names(nodes: Sequence[NodeCapacity]) -> str:
    return ", ".join(n.name for n in nodes)


def _runtimes(nodes: Sequence[NodeCapacity]) -> str:
    return ", ".join(sorted({rt for n in nodes for rt in n.runtimes}))


def describe(cpus: float, memory: int | None, gpus: int = 0) -> str:
    text = f"{cpus:g} cpu{'' if cpus == 1 else 's'}"
    text += "" if memory is None else f", {format_size(memory)}"
    return text + (f", {gpus} GPU{'s' if gpus > 1 else ''}" if gpus else "")


def _largest(nodes: Sequence[NodeCapacity]) -> str:
    known = [n for n in nodes if n.cpus != UNKNOWN]
    if not known:
        return "no node has that much"
    by_cpus = max(known, key=lambda n: (n.cpus, n.memory))
    by_memory = max(known, key=lambda n: (n.memory, n.cpus))
    text = f"the largest node is {by_cpus.name} ({describe(by_cpus.cpus, by_cpus.memory)})"
    if by_memory is not by_cpus:
        text += f"; the most memory is on {by_memory.name} ({describe(by_memory.cpus, by_memory.memory)})"
    return text


def local_cpus() -> set[int]:
    """The CPUs this process may run on (a container or a cpuset may allow fewer than exist)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def parse_cpu_list(text: str) -> set[int]:
    """The kernel's list syntax, "0-3,6" → {0, 1, 2, 3, 6} (validated by the job parser)."""
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def cpu_list(cpus: set[int]) -> str:
    """{0, 1, 2, 3, 6} → "0-3,6"."""
    ranges: list[str] = []
    ordered = sorted(cpus)
    start = prev = ordered[0] if ordered else 0
    for cpu in [*ordered[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        ranges.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(ranges) if ordered else ""


def cpuset_exists(task: str, cpuset: str, available: set[int]) -> Check:
    def probe(_timeout: float) -> Verdict:
        missing = parse_cpu_list(cpuset) - available
        if not missing:
            return passed(f"CPUs {cpuset} exist here")
        usable = parse_cpu_list(cpuset) & available
        fix = f'cpuset = "{cpu_list(usable or available)}"'
        return failed(
            f"task {task} pins to CPUs {cpuset}; this machine has no CPU {cpu_list(missing)} "
            f"(it has {cpu_list(available)})",
            f"set {fix} for task {task}, or remove cpuset",
        )

    return Check(f"cpuset {task}", probe)
