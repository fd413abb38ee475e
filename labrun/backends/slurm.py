"""The lab's Slurm cluster as a node (`[nodes.NAME]` with `slurm = {...}`).

    [nodes.hpc]
    slurm = { partition = "gpu", account = "lab", qos = "normal", options = ["--constraint=a100"] }
    max_jobs = 200     # queued + running Slurm jobs of one run at most
    poll = "30s"       # longest wait between state queries (one per poll for all jobs)

The cluster is the one Slurm's own commands find (SLURM_CONF, else the default
configuration). The node is a queue (`NodeSpec.max_jobs`): an attempt may ask for what the
partition's largest node has, and at most `max_jobs` attempts are submitted at once. Each
attempt is one job (executors/slurm.py) named after this state directory's id, the run
and the attempt: that name is how a restarted runner, `labrun cancel` and the orphan
sweep find the jobs, and how they leave other state directories' jobs alone.

Only the keys and the node's table are imported with the registry, at every labrun start;
Slurm's commands, the executor and the queries (executors/slurm*.py,
backends/slurm_cluster.py, backends/slurm_control.py) when a command uses a Slurm node.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from labrun import state_id
from labrun.backends.base import Backend, Connection, NodeControl, NodeRow
from labrun.config.job import JobSpec
from labrun.config.lab import LabConfig, NodeConfig, NodeSpec
from labrun.config.schema import Key
from labrun.executors.base import Waker
from labrun.executors.slurm_submit import SlurmOptions, managed
from labrun.model import Runtime
from labrun.preflight.core import Check
from labrun.rows import AttemptRow

SLURM_KEYS: tuple[Key, ...] = (
    Key(
        "slurm",
        "slurm",
        None,
        "The Slurm partition attempts are submitted to, as a table: "
        '{ partition = "NAME", account = "...", qos = "...", options = ["--constraint=a100"] } '
        "(every key optional; the cluster's default partition when none is named).",
    ),
    Key("max_jobs", "int", 100, "Queued and running Slurm jobs of one run at most.", minimum=1),
    Key(
        "poll",
        "silence",
        30.0,
        "Longest wait between two state queries (squeue, sacct) for all of a run's jobs; "
        "shorter right after something changed or a job's exit record appeared.",
    ),
)


@dataclass(frozen=True)
class SlurmNode(NodeConfig):
    backend: ClassVar[str] = "slurm"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    max_jobs: int = 100
    poll: float = 30.0

    def declared(self) -> NodeSpec:
        return NodeSpec(self.name, 0.0, 0, (Runtime.PROCESS,), (), self.max_jobs)

    def auto(self) -> frozenset[str]:
        return frozenset({"cpus", "memory", "gpus"})  # the partition's, known once asked


def _mine(nodes: Sequence[NodeConfig]) -> list[SlurmNode]:
    return [n for n in nodes if isinstance(n, SlurmNode)]


def _table(lab: LabConfig, node: str) -> str:
    return f"{lab.file or 'labrun.toml'} [nodes.{node}]"


class SlurmBackend(Backend):
    name = "slurm"
    help = (
        "A Slurm partition: each attempt is one sbatch job (the workdir and state directory must be shared)."
    )
    keys = SLURM_KEYS
    required = ("slurm",)

    def claims(self, name: str, table: Mapping[str, Any]) -> bool:
        return "slurm" in table

    def node(self, name: str, values: Mapping[str, Any]) -> NodeConfig:
        table = values["slurm"] or {}
        options = SlurmOptions(
            table.get("partition"), table.get("account"), table.get("qos"), table.get("options", ())
        )
        return SlurmNode(name, slurm=options, max_jobs=values["max_jobs"], poll=values["poll"])

    def problems(self, node: NodeConfig) -> list[tuple[str, str, str]]:
        assert isinstance(node, SlurmNode)
        return [
            (
                "slurm",
                f"slurm.options: {option!r} is set by labrun for every attempt",
                "remove it: labrun sets it from the task's cpus, memory, gpus, timeout and logs, "
                "or from slurm.partition, slurm.account and slurm.qos",
            )
            for option in node.slurm.options
            if managed(option)
        ]

    def connect(self, lab: LabConfig, nodes: Sequence[NodeConfig], waker: Waker) -> Connection:
        from labrun.backends.slurm_cluster import probe
        from labrun.executors.slurm import SlurmExecutor
        from labrun.executors.slurm_query import SlurmError

        connection = Connection()
        mine = _mine(nodes)
        if not mine:
            return connection
        state = state_id.ensure(lab.state_dir)
        for node in mine:
            try:
                partition = probe(node.slurm)
            except SlurmError as exc:
                connection.problems.append(f"node {node.name} is left out of this run: {exc}")
                continue
            names = tuple(h.name for h in partition.hosts)
            executor = SlurmExecutor(
                node.name, node.slurm, lab.state_dir, state, waker, node.poll, partition_nodes=names
            )
            connection.executors[(node.name, Runtime.PROCESS)] = executor
            gpus = tuple(range(partition.gpus))
            spec = NodeSpec(
                node.name, float(partition.cpus), partition.memory, (Runtime.PROCESS,), gpus, node.max_jobs
            )
            connection.nodes.append(spec)
        return connection

    def checks(self, lab: LabConfig, nodes: Sequence[NodeConfig], job: JobSpec) -> list[Check]:
        from labrun.backends.slurm_cluster import checks

        return [c for n in _mine(nodes) for c in checks(n.name, n.slurm, job, _table(lab, n.name))]

    def rows(self, lab: LabConfig, nodes: Sequence[NodeConfig]) -> list[NodeRow]:
        from labrun.backends.slurm_cluster import describe, probe
        from labrun.backends.slurm_control import queued_note
        from labrun.executors.slurm_query import SlurmError

        rows = []
        state = state_id.read(lab.state_dir)
        for node in _mine(nodes):
            try:
                partition = probe(node.slurm)
            except SlurmError as exc:
                rows.append(
                    NodeRow(node.name, self.name, "offline", None, None, (), (Runtime.PROCESS,), str(exc))
                )
                continue
            gpus = tuple(range(partition.gpus))
            note = describe(partition) + queued_note(state)
            rows.append(
                NodeRow(
                    node.name,
                    self.name,
                    "online",
                    float(partition.cpus),
                    partition.memory,
                    gpus,
                    (Runtime.PROCESS,),
                    note,
                )
            )
        return rows

    def control(self, lab: LabConfig, node: NodeConfig) -> NodeControl:
        from labrun.backends.slurm_control import SlurmControl

        return SlurmControl(state_id.read(lab.state_dir) or "")

    def waiting(self, lab: LabConfig, node: NodeConfig, attempts: Sequence[AttemptRow]) -> dict[int, str]:
        state = state_id.read(lab.state_dir)
        if state is None or not isinstance(node, SlurmNode):
            return {}
        from labrun.backends.slurm_control import pending

        partition = node.slurm.partition or "the default partition"
        return {
            attempt_id: f"queued in Slurm as job {job.job_id} on {partition}: {job.why_pending}"
            for attempt_id, job in pending(state, attempts).items()
        }

    def sweep_orphans(
        self, lab: LabConfig, nodes: Sequence[NodeConfig], live: Callable[[], Collection[int]]
    ) -> list[str]:
        """Queued or running jobs of this state directory whose attempt is not open any more
        (their runner died after recording the end, or was killed with the run cancelled):
        cancelled."""
        state = state_id.read(lab.state_dir)
        if not _mine(nodes) or state is None:
            return []
        from labrun.backends.slurm_control import cancel_orphans

        return cancel_orphans(state, live)
