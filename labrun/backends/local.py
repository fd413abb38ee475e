"""This machine as a node: `[nodes.local]`, its process, cgroup and docker runtimes.

    [nodes.local]
    cpus = "auto"          # or a number
    memory = "auto"        # or a size
    gpus = "auto"          # or a list of device indices; "auto" asks NVML
    runtimes = ["process", "cgroup", "docker"]

The node exists without a table. Executors are cheap to build: the cgroup executor
detects its mechanism on its first start, the Docker executor connects on its first
start. Without a runner, attempts are found by what the store recorded: a process group
by pid and start time (so a reused pid is not mistaken), a cgroup by name, a container
by its labels (this state directory's id and the attempt id; local_docker.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from labrun.backends.base import Backend, Connection, NodeControl, NodeRow
from labrun.backends.local_docker import Containers
from labrun.config.job import JobSpec
from labrun.config.lab import LabConfig, NodeConfig, NodeSpec, local_capacity
from labrun.config.schema import Key
from labrun.executors.base import Executor, Waker
from labrun.executors.cgroup import CgroupExecutor
from labrun.executors.docker import DockerExecutor
from labrun.executors.process import ProcessExecutor, find_wrapper_of
from labrun.executors.procfs import alive
from labrun.model import Runtime
from labrun.paths import StatePaths
from labrun.preflight.core import Check
from labrun.rows import AttemptRow
from labrun.units import SIZE_HELP

LOCAL_RUNTIMES = tuple(runtime.value for runtime in Runtime)

LOCAL_KEYS: tuple[Key, ...] = (
    Key(
        "cpus",
        "auto_cpus",
        None,
        'CPUs attempts may use here: "auto" (all this process may use) or a number.',
    ),
    Key(
        "memory", "auto_size", None, 'Memory attempts may use here: "auto" (all of it) or ' + SIZE_HELP + "."
    ),
    Key(
        "gpus",
        "gpus",
        None,
        'GPU indices attempts may be given: "auto" (what NVML sees) or a list like [0, 1].',
    ),
    Key(
        "runtimes",
        "runtimes",
        LOCAL_RUNTIMES,
        "Runtimes offered here (cgroup and docker say at launch and in `labrun check` if they cannot work).",
        choices=LOCAL_RUNTIMES,
    ),
)


@dataclass(frozen=True)
class LocalNode(NodeConfig):
    backend: ClassVar[str] = "local"
    cpus: float = 1.0
    memory: int = 0
    gpus: tuple[int, ...] = ()
    runtimes: tuple[Runtime, ...] = tuple(Runtime)

    def declared(self) -> NodeSpec:
        return NodeSpec(self.name, self.cpus, self.memory, self.runtimes, self.gpus)


def _makers(waker: Waker, state_dir: str) -> Mapping[Runtime, Callable[[], Executor]]:
    return {
        Runtime.PROCESS: lambda: ProcessExecutor(waker),
        Runtime.CGROUP: lambda: CgroupExecutor(waker),
        Runtime.DOCKER: lambda: DockerExecutor(waker, state_dir=state_dir),
    }


class LocalBackend(Backend):
    name = "local"
    help = "This machine: attempts run as process groups, in cgroups, or in Docker containers."
    keys = LOCAL_KEYS
    implicit = ("local",)
    names = ("local",)

    def node(self, name: str, values: Mapping[str, Any]) -> NodeConfig:
        cpus, memory = local_capacity()
        gpus = values["gpus"]
        if gpus is None:
            from labrun.gpus import local_gpu_indices

            gpus = local_gpu_indices()
        return LocalNode(
            name,
            cpus=values["cpus"] if values["cpus"] is not None else cpus,
            memory=values["memory"] if values["memory"] is not None else memory,
            gpus=gpus,
            runtimes=values["runtimes"],
        )

    def connect(self, lab: LabConfig, nodes: Sequence[NodeConfig], waker: Waker) -> Connection:
        makers = _makers(waker, lab.state_dir)
        connection = Connection()
        for node in nodes:
            spec = node.declared()
            connection.nodes.append(spec)
            connection.executors.update({(node.name, rt): makers[rt]() for rt in spec.runtimes})
        return connection

    def checks(self, lab: LabConfig, nodes: Sequence[NodeConfig], job: JobSpec) -> list[Check]:
        """The runtimes of the tasks that may run here (a task pinned to other nodes, a
        Slurm partition say, is isolated there)."""
        from labrun.isolation import isolation_checks

        here = {n.name for n in nodes}
        local = tuple(t for t in job.tasks if not t.nodes or here.intersection(t.nodes))
        return isolation_checks(dataclasses.replace(job, tasks=local))

    def rows(self, lab: LabConfig, nodes: Sequence[NodeConfig]) -> list[NodeRow]:
        specs = [n.declared() for n in nodes]
        return [NodeRow(s.name, self.name, "online", s.cpus, s.memory, s.gpus, s.runtimes) for s in specs]

    def control(self, lab: LabConfig, node: NodeConfig) -> NodeControl:
        return LocalControl(lab.state_dir)

    def sweep_orphans(
        self, lab: LabConfig, nodes: Sequence[NodeConfig], live: Callable[[], Collection[int]]
    ) -> list[str]:
        """Containers of this state directory whose attempt is not open (its runner died
        after recording the end, or the run finished): removed, with their cgroup parents."""
        if not any(isinstance(n, LocalNode) and Runtime.DOCKER in n.runtimes for n in nodes):
            return []
        containers = Containers(lab.state_dir)
        try:
            return containers.orphans(live)
        finally:
            containers.close()


def _group_of(attempt: AttemptRow, paths: StatePaths) -> int | None:
    """The live process group of a process or cgroup attempt: by its recorded pid, or, when
    its runner died before recording one, by its wrapper's command line."""
    if attempt.pid:
        return attempt.pid if alive(attempt.pid, attempt.pid_start) else None
    return find_wrapper_of(attempt.id, paths.run_dir(attempt.run_id))


class LocalControl(NodeControl):
    """This machine's attempts: process groups (and their cgroups) and Docker containers."""

    def __init__(self, state_dir: str, base_url: str | None = None) -> None:
        self._containers = Containers(state_dir, base_url)
        self._paths = StatePaths(state_dir)

    def running(self, attempts: Sequence[AttemptRow]) -> list[int]:
        out = []
        for attempt in attempts:
            if attempt.runtime is Runtime.DOCKER:
                if self._containers.of(attempt.id, everything=False):
                    out.append(attempt.id)
            elif _group_of(attempt, self._paths) is not None:
                out.append(attempt.id)
        return out

    def signal(self, attempts: Sequence[AttemptRow], signum: int) -> None:
        for attempt in attempts:
            if attempt.runtime is Runtime.DOCKER:
                self._containers.kill(attempt.id, signum)
            elif (pid := _group_of(attempt, self._paths)) is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signum)

    def sweep(self, attempts: Sequence[AttemptRow]) -> list[str]:
        found = []
        for attempt in attempts:
            if attempt.runtime is Runtime.DOCKER:
                found += self._containers.remove(attempt.id)
                continue
            if (pid := _group_of(attempt, self._paths)) is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                found.append(f"process group {pid} of attempt {attempt.id}")
            if attempt.runtime is Runtime.CGROUP and attempt.ref:
                found += _remove_cgroup(attempt)
        return found

    def close(self) -> None:
        self._containers.close()


def _remove_cgroup(attempt: AttemptRow) -> list[str]:
    """The attempt's cgroup, with anything still in it killed; a cgroup already gone is fine."""
    from labrun.cgroup import CgroupError, detect, open_existing

    try:
        cg = open_existing(detect(), attempt.ref or "")
        if cg is None:
            return []
        cg.remove()
    except CgroupError:
        return []
    return [f"cgroup {attempt.ref} of attempt {attempt.id}"]
