"""The lab configuration, labrun.toml: where state lives and what the local node offers.

Looked up in order: --config, $LABRUN_CONFIG, ./labrun.toml, ~/.config/labrun/labrun.toml.
None of them existing is fine: every value has a default. $LABRUN_STATE_DIR overrides
`state_dir` (tests and one-off runs use it).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from labrun.config.locate import locate, nearest
from labrun.config.nodes import SshNodeSpec, parse_gpus, parse_ssh_node
from labrun.errors import ConfigError, Problem
from labrun.model import Runtime
from labrun.units import parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]


@dataclass(frozen=True)
class NodeSpec:
    name: str
    cpus: float
    memory: int
    runtimes: tuple[Runtime, ...] = (Runtime.PROCESS,)
    gpus: tuple[int, ...] = ()  # device indices attempts may be given


# What the local machine offers; cgroup and docker report at launch (and in `labrun check`)
# when this machine cannot provide them.
LOCAL_RUNTIMES = tuple(Runtime)


@dataclass(frozen=True)
class LabConfig:
    file: str | None  # None: built-in defaults
    state_dir: str
    local: NodeSpec
    ssh_nodes: tuple[SshNodeSpec, ...] = ()
    node_max_failures: int = 5  # counted failures of a run on one node before it is avoided

    @property
    def nodes(self) -> tuple[NodeSpec, ...]:
        """Every node a job may use; the local machine first.

        An ssh node's "auto" values are 0 here: `labrun.ssh.nodes` fills them in from the
        node's probe when it connects.
        """
        remote = tuple(
            NodeSpec(n.name, n.cpus or 0.0, n.memory or 0, n.runtimes, n.gpus or ()) for n in self.ssh_nodes
        )
        return (self.local, *remote)


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


def load_lab(explicit: str | None = None) -> LabConfig:
    path = find_config(explicit)
    data: dict[str, Any] = {}
    problems: list[Problem] = []
    text = ""
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            data = tomllib.loads(text)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([Problem(path, None, None, "", f"cannot read: {exc}")]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([Problem(path, None, None, "", f"invalid TOML: {exc}")]) from None
    positions = locate(text)

    def problem(keys: tuple[str, ...], message: str, hint: str = "") -> None:
        line, col = nearest(positions, keys)
        problems.append(Problem(path or "labrun.toml", line, col, ".".join(keys), message, hint))

    for key in data:
        if key not in ("state_dir", "nodes", "node_max_failures"):
            problem((key,), f"unknown key {key!r}", "known keys: state_dir, nodes, node_max_failures")
    state_dir = data.get("state_dir", default_state_dir())
    if not isinstance(state_dir, str) or not state_dir:
        problem(("state_dir",), "expected a directory path (a string)")
        state_dir = default_state_dir()
    state_dir = os.environ.get("LABRUN_STATE_DIR") or os.path.expanduser(state_dir)
    if path is not None and not os.path.isabs(state_dir):
        state_dir = os.path.join(os.path.dirname(os.path.abspath(path)), state_dir)
    local = _local_node(data.get("nodes", {}), problem)
    ssh_nodes = _ssh_nodes(data.get("nodes", {}), path, problem)
    max_failures = data.get("node_max_failures", 5)
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
        problem(("node_max_failures",), f"expected a positive integer, got {max_failures!r}")
    if problems:
        raise ConfigError(problems)
    return LabConfig(
        file=path,
        state_dir=os.path.abspath(state_dir),
        local=local,
        ssh_nodes=ssh_nodes,
        node_max_failures=max_failures,
    )


def _ssh_nodes(nodes: object, path: str | None, problem: Any) -> tuple[SshNodeSpec, ...]:
    if not isinstance(nodes, dict):
        return ()
    base = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    found = (parse_ssh_node(name, table, base, problem) for name, table in nodes.items() if name != "local")
    return tuple(node for node in found if node is not None)


def _local_node(nodes: object, problem: Any) -> NodeSpec:
    cpus, memory = local_capacity()
    if not isinstance(nodes, dict):
        problem(("nodes",), "expected tables [nodes.NAME]")
        return NodeSpec("local", cpus, memory, LOCAL_RUNTIMES)
    table = nodes.get("local", {})
    for key in table:
        if key not in ("cpus", "memory", "gpus"):
            problem(("nodes", "local", key), f"unknown key {key!r}", "known keys: cpus, memory, gpus")
    raw_cpus = table.get("cpus", "auto")
    if raw_cpus != "auto":
        if isinstance(raw_cpus, bool) or not isinstance(raw_cpus, (int, float)) or raw_cpus <= 0:
            problem(
                ("nodes", "local", "cpus"),
                f'expected "auto" or a positive number, got {raw_cpus!r}',
            )
        else:
            cpus = float(raw_cpus)
    raw_memory = table.get("memory", "auto")
    if raw_memory != "auto":
        try:
            memory = parse_size(raw_memory)
        except ValueError as exc:
            problem(("nodes", "local", "memory"), str(exc))
    gpus = parse_gpus(table.get("gpus", "auto"), ("nodes", "local", "gpus"), problem)
    if gpus is None:
        from labrun.gpus import local_gpu_indices

        gpus = local_gpu_indices()
    return NodeSpec("local", cpus, memory, LOCAL_RUNTIMES, gpus=gpus)
