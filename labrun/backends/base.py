"""The backend seam: what a kind of node (this machine, ssh, next Slurm) supplies to labrun.

A `Backend` owns the `[nodes.NAME]` tables it recognises. It declares their keys once
(`keys`, the same `Key`s as job keys), builds a typed `NodeConfig` from the validated
values, and for its nodes supplies:

    connect(lab, nodes, waker)  -> Connection: executors per (node, runtime), node specs
                                   with probed capacity, a message per node left out
    checks(lab, nodes, job)     -> preflight checks (`labrun check`, and before `run`)
    rows(lab, nodes)            -> one `NodeRow` per node for `labrun nodes`
    control(lab, node)          -> a `NodeControl`: signal, find and sweep attempts
                                   without a runner (`labrun cancel` of a dead runner's
                                   run)
    waiting(lab, node, attempts)
                                -> why open attempts have not started (a queue's reason)
    sweep_orphans(lab, nodes, live)
                                -> remove what this state directory's attempts left on
                                   these nodes (containers...) unless `live()` holds their
                                   attempt id; one line per thing removed (resume, gc)

Adoption after a runner restart is the executors' (`Executor.adopt`), which `connect`
returns. The registry (`registry.py`) is the only list of backends: the runner, app and
CLI never name one.
"""

from __future__ import annotations

import abc
import signal
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from labrun.config.job import JobSpec
from labrun.config.lab import LabConfig, NodeConfig, NodeSpec
from labrun.config.schema import Key
from labrun.executors.base import Executor, Waker
from labrun.model import Runtime
from labrun.preflight.core import Check
from labrun.rows import AttemptRow

STOP_POLL = 0.1  # how often a runner-less stop looks whether the attempts ended


@dataclass
class Connection:
    """What connecting a backend's nodes gave: executors, node specs, and what failed."""

    executors: dict[tuple[str, Runtime], Executor] = field(default_factory=dict)
    nodes: list[NodeSpec] = field(default_factory=list)  # only nodes that answered
    problems: list[str] = field(default_factory=list)  # "node X is left out of this run: why"

    def merge(self, other: Connection) -> None:
        self.executors.update(other.executors)
        self.nodes += other.nodes
        self.problems += other.problems


@dataclass(frozen=True)
class NodeRow:
    """One line of `labrun nodes` (before running attempts are added)."""

    name: str
    backend: str
    state: str  # "online" or "offline"
    cpus: float | None
    memory: int | None
    gpus: tuple[int, ...]
    runtimes: tuple[Runtime, ...]
    error: str = ""


class NodeControl(abc.ABC):
    """One node's attempts, reached without a runner: by attempt id, as the store knows them."""

    @abc.abstractmethod
    def running(self, attempts: Sequence[AttemptRow]) -> list[int]:
        """Ids of the attempts that still run on the node."""

    @abc.abstractmethod
    def signal(self, attempts: Sequence[AttemptRow], signum: int) -> None:
        """Send `signum` to everything each attempt started; ended ones are skipped."""

    @abc.abstractmethod
    def sweep(self, attempts: Sequence[AttemptRow]) -> list[str]:
        """Leave nothing of these attempts on the node: kill what runs, remove what they
        left (containers, cgroups). What was found, one description each."""

    def close(self) -> None:  # noqa: B027 - optional: most controls hold nothing
        """Release connections."""


def stop_attempts(control: NodeControl, attempts: Sequence[AttemptRow], grace: float) -> list[int]:
    """TERM what runs, KILL and sweep after `grace`; the ids that were running."""
    running = control.running(attempts)
    mine = [a for a in attempts if a.id in running]
    if mine:
        control.signal(mine, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and control.running(mine):
            time.sleep(STOP_POLL)
    control.sweep(attempts)
    return running


class Backend(abc.ABC):
    """A kind of node. Subclasses set `name`, `help`, `keys` and implement the methods."""

    name: str = ""
    help: str = ""
    keys: tuple[Key, ...] = ()
    required: tuple[str, ...] = ()  # keys a table of this backend must have
    implicit: tuple[str, ...] = ()  # nodes that exist without a table (e.g. "local")
    names: tuple[str, ...] | None = None  # the only node names it allows; None: any

    def claims(self, name: str, table: Mapping[str, Any]) -> bool:
        """Whether a table without `backend = ...` is this backend's (e.g. it has `ssh`)."""
        return self.names is not None and name in self.names

    @abc.abstractmethod
    def node(self, name: str, values: Mapping[str, Any]) -> NodeConfig:
        """The typed node config from validated values (every key present, defaults filled)."""

    def problems(self, node: NodeConfig) -> list[tuple[str, str, str]]:
        """(key, message, hint) for what is wrong across keys; checked after each key alone."""
        return []

    @abc.abstractmethod
    def connect(self, lab: LabConfig, nodes: Sequence[NodeConfig], waker: Waker) -> Connection:
        """Executors and node specs for `nodes`; a node that does not answer is left out."""

    def checks(self, lab: LabConfig, nodes: Sequence[NodeConfig], job: JobSpec) -> list[Check]:
        """Preflight checks for `job` on these nodes."""
        return []

    @abc.abstractmethod
    def rows(self, lab: LabConfig, nodes: Sequence[NodeConfig]) -> list[NodeRow]:
        """One row per node for `labrun nodes`."""

    @abc.abstractmethod
    def control(self, lab: LabConfig, node: NodeConfig) -> NodeControl:
        """Reach the node's attempts without a runner."""

    def waiting(self, lab: LabConfig, node: NodeConfig, attempts: Sequence[AttemptRow]) -> dict[int, str]:
        """Why open attempts on `node` have not started yet (a cluster queue's reason), by
        attempt id; attempts that run, or a backend without a queue, are left out."""
        return {}

    def sweep_orphans(
        self, lab: LabConfig, nodes: Sequence[NodeConfig], live: Callable[[], Collection[int]]
    ) -> list[str]:
        """Remove what attempts of this state directory (`lab.state_dir`) left on these nodes
        whose attempt is not open any more; one description per thing removed. `live()`
        gives the open attempt ids: call it AFTER listing what exists, so that something a
        live runner made just now (its attempt committed before it was made) is kept."""
        return []
