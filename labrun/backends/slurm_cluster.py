"""What a Slurm node's partition offers, and `labrun check`'s questions to Slurm.

`probe(options)` asks `scontrol` for the partition (the cluster's default one when none is
named): its state and nodes, and each node's CPUs, memory and GPUs. The largest of them
is what one attempt may ask for (the node's `NodeSpec`, a queue of `max_jobs`).

`checks(node, job)`: Slurm's commands answer and the partition is up; each task that may
run on the node fits it, asked with `sbatch --test-only` and the exact arguments a run
would submit (a refusal names the partition's largest node and what it has); and the
filesystem the attempts' logs, exit records and workdir live on must be one the cluster's
nodes share at the same path, which labrun states and does not test (a probe job could
wait in a busy queue for hours).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from labrun.config.job import JobSpec, TaskSpec
from labrun.executors.slurm_query import SlurmError, run
from labrun.executors.slurm_submit import SlurmOptions, sbatch_args
from labrun.model import Launch
from labrun.preflight.core import Check, Verdict, failed, passed, warned
from labrun.units import format_size

MiB = 1 << 20
UP_STATES = ("UP",)


@dataclass(frozen=True)
class SlurmHost:
    name: str
    cpus: int
    memory: int  # bytes (RealMemory)
    gpus: int
    state: str


@dataclass(frozen=True)
class Partition:
    name: str
    state: str
    hosts: tuple[SlurmHost, ...]
    max_time: str = ""

    @property
    def largest(self) -> SlurmHost | None:
        return max(self.hosts, key=lambda h: (h.memory, h.cpus, h.gpus), default=None)

    @property
    def cpus(self) -> int:
        return max((h.cpus for h in self.hosts), default=0)

    @property
    def memory(self) -> int:
        return max((h.memory for h in self.hosts), default=0)

    @property
    def gpus(self) -> int:
        return max((h.gpus for h in self.hosts), default=0)


def _fields(line: str) -> dict[str, str]:
    """scontrol's one-line "Key=Value Key=Value" records."""
    return {m.group(1): m.group(2) for m in re.finditer(r"(\w+)=(\S*)", line)}


def _gpus(gres: str) -> int:
    return sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", gres))


def probe(options: SlurmOptions) -> Partition:
    """The partition as Slurm describes it now; SlurmError when Slurm does not answer or
    knows no such partition (the message says which)."""
    argv = ["scontrol", "-o", "show", "partition"]
    records = [
        _fields(line) for line in run(argv + ([options.partition] if options.partition else [])).splitlines()
    ]
    records = [r for r in records if r.get("PartitionName")]
    if not options.partition:
        records = [r for r in records if r.get("Default") == "YES"]
        if not records:
            raise SlurmError(
                'the cluster has no default partition: name one with slurm = { partition = "..." }'
            )
    if not records:
        raise SlurmError(f"Slurm knows no partition {options.partition!r} (see `sinfo -s`)")
    part = records[0]
    names = run(["scontrol", "show", "hostnames", part.get("Nodes", "")]).split() if part.get("Nodes") else []
    hosts = []
    if names:
        for line in run(["scontrol", "-o", "show", "node", ",".join(names)]).splitlines():
            node = _fields(line)
            if node.get("NodeName"):
                hosts.append(
                    SlurmHost(
                        node["NodeName"],
                        int(node.get("CPUTot", "0") or 0),
                        int(node.get("RealMemory", "0") or 0) * MiB,
                        _gpus(node.get("Gres", "")),
                        node.get("State", ""),
                    )
                )
    return Partition(part["PartitionName"], part.get("State", ""), tuple(hosts), part.get("MaxTime", ""))


def describe(partition: Partition) -> str:
    big = partition.largest
    if big is None:
        return f"partition {partition.name} has no nodes"
    gpus = f", {big.gpus} GPUs" if big.gpus else ""
    return (
        f"partition {partition.name} ({partition.state}, {len(partition.hosts)} node(s)); its largest node "
        f"{big.name} has {big.cpus} cpus, {format_size(big.memory)}{gpus}"
    )


# -- preflight -----------------------------------------------------------------------------


@dataclass
class _Shared:
    """One probe per node, shared by its checks (made on first use)."""

    options: SlurmOptions
    result: Partition | None = None
    error: str = ""
    done: bool = False

    def get(self) -> Partition | None:
        if not self.done:
            try:
                self.result = probe(self.options)
            except SlurmError as exc:
                self.error = str(exc)
            self.done = True
        return self.result


def checks(node: str, options: SlurmOptions, job: JobSpec, table: str) -> list[Check]:
    """`table`: where the node is configured, for the messages ("labrun.toml [nodes.hpc]")."""
    shared = _Shared(options)
    found: list[Check] = [Check(f"node {node}: Slurm partition up", partial(_partition_up, shared, table))]
    for task in job.all_tasks:
        if not task.nodes or node in task.nodes:
            probe_fn: Callable[[float], Verdict] = partial(
                _task_fits, shared, node, options, task, job, table
            )
            found.append(Check(f"node {node}: task {task.name} fits", probe_fn))
    found.append(Check(f"node {node}: shared filesystem", partial(_shared_fs, job, node)))
    return found


def _partition_up(shared: _Shared, table: str, timeout: float) -> Verdict:
    partition = shared.get()
    if partition is None:
        return failed(shared.error, f"check Slurm's configuration (SLURM_CONF) and {table} slurm.partition")
    if partition.state not in UP_STATES:
        return failed(describe(partition), f"wait until the partition is UP, or choose another in {table}")
    return passed(describe(partition))


def _task_fits(
    shared: _Shared,
    node: str,
    options: SlurmOptions,
    task: TaskSpec,
    job: JobSpec,
    table: str,
    timeout: float,
) -> Verdict:
    partition = shared.get()
    if partition is None:
        return failed(f"not asked: {shared.error}", "fix the partition check first")
    launch = _example_launch(task, job)
    with tempfile.TemporaryDirectory(prefix="labrun-check-") as scratch:
        script = os.path.join(scratch, "test.sh")
        with open(script, "w", encoding="utf-8") as handle:
            handle.write("#!/bin/sh\ntrue\n")
        argv = ["sbatch", "--test-only", *sbatch_args(options, f"labrun-check-{task.name}", launch), script]
        try:
            run(argv, timeout=max(1.0, timeout))
        except SlurmError as exc:
            ask = f"{task.cpus:g} cpus, {format_size(task.memory)}" + (
                f", {task.gpus} GPUs" if task.gpus else ""
            )
            big = partition.largest.name if partition.largest else "a node of the partition"
            return failed(
                f"task {task.name} ({ask}) cannot run on node {node}: Slurm says: {exc}; "
                + describe(partition),
                f"ask for no more than {big} has in the task's cpus, memory and gpus, "
                f"or choose another partition in {table}",
            )
    return passed(f"sbatch --test-only accepts task {task.name} on partition {partition.name}")


def _example_launch(task: TaskSpec, job: JobSpec) -> Launch:
    """The launch a run would submit for the task, as far as sbatch's arguments go."""
    return Launch(
        attempt_id=0,
        run_id=0,
        task_name=task.name,
        attempt=1,
        argv=("true",),
        env={},
        workdir=job.workdir,
        stdout_path="/dev/null",
        stderr_path="/dev/null",
        cpus=task.cpus,
        memory=task.memory,
        gpus=tuple(range(task.gpus)),
        time_limit=task.timeout + task.grace if task.timeout is not None else None,
    )


def _shared_fs(job: JobSpec, node: str, timeout: float) -> Verdict:
    return warned(
        f"attempts on node {node} write their logs and exit records into the state directory and run in "
        f"{job.workdir}: both must be on a filesystem the cluster's nodes mount at the same path "
        "(labrun does not test this)",
        "keep the state directory (state_dir in labrun.toml) and the job's workdir on the shared filesystem",
    )
