"""A backend registered by a test runs a job through the real `labrun.app.run_job`.

The "inline" backend below runs attempts inside this process (its "command" is echoed
to the attempt's stdout). Nothing in the runner, app or CLI names it: registering it is
all it takes for labrun.toml to accept its keys, for `labrun check` to run its checks,
for `labrun nodes` to list it and for a run to place tasks on it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from labrun.app import RunOptions, open_store, run_job
from labrun.backends import registry
from labrun.backends.base import Backend, Connection, NodeControl, NodeRow
from labrun.backends.view import node_states
from labrun.config.job import JobSpec, load_job
from labrun.config.lab import LabConfig, NodeConfig, NodeSpec, load_lab
from labrun.config.schema import Key
from labrun.errors import ConfigError
from labrun.executors.base import Executor, Waker
from labrun.model import Facts, Launch, Runtime, Started
from labrun.preflight.core import Check, passed
from labrun.preflight.from_job import preflight
from labrun.rows import AttemptRow
from labrun.states import RunState


@dataclass(frozen=True)
class InlineNode(NodeConfig):
    backend: ClassVar[str] = "inline"
    slots: int = 1

    def declared(self) -> NodeSpec:
        return NodeSpec(self.name, float(self.slots), 1 << 40)


class InlineExecutor(Executor):
    """Ends every attempt at once with exit 0; its stdout is the command's words."""

    def __init__(self, waker: Waker) -> None:
        self.waker = waker
        self.ended: list[tuple[int, Facts]] = []

    def start(self, launch: Launch) -> Started:
        os.makedirs(os.path.dirname(launch.stdout_path), exist_ok=True)
        Path(launch.stdout_path).write_text(" ".join(launch.argv) + "\n")
        self.ended.append((launch.attempt_id, Facts(0, None, time.time())))
        self.waker.wake()
        return Started(ref=f"inline:{launch.attempt_id}", mechanism="inline")

    def finished(self) -> list[tuple[int, Facts]]:
        ended, self.ended = self.ended, []
        return ended

    def signal(self, attempt_id: int, signum: int) -> None:
        pass

    def running(self) -> list[int]:
        return []


class InlineControl(NodeControl):
    def running(self, attempts: Sequence[AttemptRow]) -> list[int]:
        return []

    def signal(self, attempts: Sequence[AttemptRow], signum: int) -> None:
        pass

    def sweep(self, attempts: Sequence[AttemptRow]) -> list[str]:
        return []


class InlineBackend(Backend):
    name = "inline"
    help = "Attempts inside labrun's own process (a test backend)."
    keys = (Key("slots", "int", 1, "Attempts at once.", minimum=1, maximum=64),)

    def node(self, name: str, values: Mapping[str, Any]) -> NodeConfig:
        return InlineNode(name, slots=values["slots"])

    def connect(self, lab: LabConfig, nodes: Sequence[NodeConfig], waker: Waker) -> Connection:
        executors: dict[tuple[str, str], Executor] = {
            (n.name, Runtime.PROCESS): InlineExecutor(waker) for n in nodes
        }
        return Connection(executors, [n.declared() for n in nodes])

    def checks(self, lab: LabConfig, nodes: Sequence[NodeConfig], job: JobSpec) -> list[Check]:
        return [Check(f"inline {n.name}", lambda _timeout: passed("always ready")) for n in nodes]

    def rows(self, lab: LabConfig, nodes: Sequence[NodeConfig]) -> list[NodeRow]:
        return [
            NodeRow(n.name, self.name, "online", n.declared().cpus, None, (), (Runtime.PROCESS,))
            for n in nodes
        ]

    def control(self, lab: LabConfig, node: NodeConfig) -> NodeControl:
        return InlineControl()


@pytest.fixture
def inline_backend() -> Iterator[None]:
    registry.register(InlineBackend())
    yield
    registry.unregister("inline")


def write_lab(tmp_path: Path, table: str) -> LabConfig:
    path = tmp_path / "labrun.toml"
    path.write_text(f'state_dir = "{tmp_path}/state"\n[nodes.local]\ncpus = 1\n[nodes.ram]\n{table}')
    os.environ.pop("LABRUN_STATE_DIR", None)
    return load_lab(str(path))


def test_a_job_runs_on_a_backend_registered_by_the_test(tmp_path: Path, inline_backend: None) -> None:
    lab = write_lab(tmp_path, 'backend = "inline"\nslots = 3\n')
    assert [(n.name, n.backend) for n in lab.nodes] == [("local", "local"), ("ram", "inline")]
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\nname = "inline"\n[[tasks]]\nname = "t"\nitems = { range = [0, 5] }\n'
        'nodes = ["ram"]\ncommand = "echo hello {item}"\n'
    )
    names = [r.name for r in preflight(load_job(str(job)), lab).results]
    assert "inline ram" in names  # its own check, asked through the registry
    result = run_job(str(job), lab, RunOptions(quiet=True))
    assert result.state is RunState.SUCCEEDED
    store, paths = open_store(lab)
    attempts = list(store.run_attempts(result.run.id))
    assert len(attempts) == 5
    assert {(a.node, a.mechanism) for a in attempts} == {("ram", "inline")}
    task = store.task_by_name(result.run.id, "t[3]")
    assert task is not None
    assert Path(paths.log(result.run.id, "t[3]", 1, "stdout")).read_text() == "echo hello 3\n"
    rows = {row["name"]: row for row in node_states(lab, store)}
    assert rows["ram"]["backend"] == "inline" and rows["ram"]["cpus"] == 3.0


def test_its_keys_are_validated_from_its_own_table(tmp_path: Path, inline_backend: None) -> None:
    with pytest.raises(ConfigError) as info:
        write_lab(tmp_path, 'backend = "inline"\nslots = 0\nslot = 2\n')
    text = str(info.value)
    assert "labrun.toml:6:1: nodes.ram.slots: must be at least 1" in text
    assert "labrun.toml:7:1: nodes.ram.slot: unknown key 'slot' (did you mean 'slots'?)" in text
    schema = registry.lab_schema()
    tables = schema["properties"]["nodes"]["additionalProperties"]["anyOf"]  # type: ignore[index]
    assert any("slots" in table["properties"] for table in tables)
