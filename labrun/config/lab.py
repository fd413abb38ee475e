"""The lab configuration, labrun.toml: where state lives and which nodes run attempts.

Looked up in order: --config, $LABRUN_CONFIG, ./labrun.toml, ~/.config/labrun/labrun.toml.
None of them existing is fine: every value has a default. $LABRUN_STATE_DIR overrides
`state_dir` (tests and one-off runs use it). Each `[nodes.NAME]` table belongs to one
backend (labrun/backends/registry.py), which declares its keys and parses it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from labrun.config.labschema import LAB_KEYS, validate_table
from labrun.config.locate import NUL_BYTE, locate, nearest, nul_bytes
from labrun.errors import ConfigError, Problem
from labrun.model import Runtime
from labrun.readfile import NotReadable, read_regular

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]


@dataclass(frozen=True)
class NodeSpec:
    """A node as the scheduler sees it: its capacity, runtimes and GPUs."""

    name: str
    cpus: float
    memory: int
    runtimes: tuple[Runtime, ...] = (Runtime.PROCESS,)
    gpus: tuple[int, ...] = ()  # device indices attempts may be given
    # a queue (a cluster): cpus, memory and gpus are what ONE attempt may ask for, and at
    # most `max_jobs` attempts are placed there at once. None: capacity shared by attempts
    max_jobs: int | None = None


@dataclass(frozen=True)
class NodeConfig:
    """One `[nodes.NAME]` table of labrun.toml, owned by the backend named `backend`.

    Each backend subclasses it with its own typed keys (labrun/backends/)."""

    backend: ClassVar[str] = ""
    name: str

    def declared(self) -> NodeSpec:
        """The capacity labrun.toml declares; values left "auto" are 0 until the node is asked."""
        return NodeSpec(self.name, 0.0, 0)

    def auto(self) -> frozenset[str]:
        """Which of cpus, memory and gpus are left "auto": unknown until the node is asked
        (preflight does not rule a task out on them)."""
        return frozenset()


@dataclass(frozen=True)
class LabConfig:
    file: str | None  # None: built-in defaults
    state_dir: str
    nodes: tuple[NodeConfig, ...] = ()  # the local node first: task 0 runs on it
    node_max_failures: int = 5  # counted failures of a run on one node before it is avoided

    def node(self, name: str) -> NodeConfig | None:
        return next((n for n in self.nodes if n.name == name), None)

    @property
    def declared(self) -> tuple[NodeSpec, ...]:
        """Every node's declared capacity (without asking any node)."""
        return tuple(n.declared() for n in self.nodes)


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "labrun")


def local_capacity() -> tuple[float, int]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return float(cpus or 1), int(memory)


def find_config(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    env = os.environ.get("LABRUN_CONFIG")
    if env:
        return env
    for candidate in ("labrun.toml", os.path.expanduser("~/.config/labrun/labrun.toml")):
        if os.path.isfile(candidate):
            return candidate
    return None


def read_lab(path: str | None) -> tuple[dict[str, Any], str]:
    """The parsed table and the text of labrun.toml (empty when there is none)."""
    if path is None:
        return {}, ""
    try:
        text = read_regular(path, 16 * 1024 * 1024).decode("utf-8")
        return tomllib.loads(text), text
    except (NotReadable, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(path, None, None, "", f"cannot read: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(path, None, None, "", f"invalid TOML: {exc}")]) from None


def load_lab(explicit: str | None = None) -> LabConfig:
    # The registry knows every backend and imports their executors: imported here so that
    # backends may import this module for NodeSpec and LabConfig.
    from labrun.backends.registry import parse_nodes

    path = find_config(explicit)
    data, text = read_lab(path)
    positions = locate(text)
    problems: list[Problem] = []

    def problem(keys: tuple[str, ...], message: str, hint: str = "") -> None:
        line, col = nearest(positions, keys)
        problems.append(Problem(path or "labrun.toml", line, col, ".".join(keys), message, hint))

    for where in nul_bytes(data, ()):
        problem(tuple(str(k) for k in where), NUL_BYTE, "remove it")
    if problems:
        raise ConfigError(problems)

    base = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    values = validate_table(LAB_KEYS, data, (), problem, base, ignore=("nodes",))
    state_dir = os.environ.get("LABRUN_STATE_DIR") or os.path.expanduser(
        values["state_dir"] or default_state_dir()
    )
    if path is not None and not os.path.isabs(state_dir):
        state_dir = os.path.join(base, state_dir)
    nodes = parse_nodes(data.get("nodes", {}), base, problem)
    if problems:
        raise ConfigError(problems)
    return LabConfig(
        file=path,
        state_dir=os.path.abspath(state_dir),
        nodes=nodes,
        node_max_failures=values["node_max_failures"],
    )
