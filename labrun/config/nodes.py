"""`[nodes.NAME]` tables of labrun.toml for machines reached over SSH.

    [nodes.gpu-box]
    ssh = "alice@gpu-box"          # anything `ssh` accepts; the user's ~/.ssh/config applies
    ssh_config = "~/lab/ssh_config"  # optional: passed to ssh as -F
    ssh_options = ["Port=2222"]    # optional: each passed as -o
    cpus = "auto"                  # or a number; "auto" asks the node
    memory = "auto"                # or a size
    gpus = "auto"                  # or a list of device indices; "auto" asks nvidia-smi there
    runtimes = ["process", "cgroup"]   # or "docker" (the node's docker CLI and daemon)
    workdir = "~/.cache/labrun"    # on the node: the agent and the attempts' status and logs
    accept_new_host_keys = false   # true: trust a node's first host key (never a changed one)
    lost_after = "60s"             # silence after which its running attempts count as lost

Values left "auto" are None here and filled in from the node's probe when it connects.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from labrun.config.schema import NAME_RE
from labrun.model import Runtime
from labrun.units import parse_duration, parse_size

SSH_KEYS = (
    "ssh",
    "ssh_config",
    "ssh_options",
    "cpus",
    "memory",
    "gpus",
    "runtimes",
    "workdir",
    "accept_new_host_keys",
    "lost_after",
)
REMOTE_RUNTIMES = tuple(Runtime)  # what the agent can run
DEFAULT_WORKDIR = "~/.cache/labrun"

ProblemFn = Callable[..., None]


@dataclass(frozen=True)
class SshNodeSpec:
    name: str
    ssh: str
    ssh_config: str | None = None
    ssh_options: tuple[str, ...] = ()
    cpus: float | None = None  # None: "auto"
    memory: int | None = None
    gpus: tuple[int, ...] | None = None
    runtimes: tuple[Runtime, ...] = (Runtime.PROCESS,)
    workdir: str = DEFAULT_WORKDIR
    accept_new_host_keys: bool = False
    lost_after: float = 60.0


def parse_gpus(raw: object, where: tuple[str, ...], problem: ProblemFn) -> tuple[int, ...] | None:
    """ "auto" → None; a list of distinct non-negative indices → the tuple."""
    if raw == "auto":
        return None
    if (
        isinstance(raw, list)
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in raw)
        and len(set(raw)) == len(raw)
    ):
        return tuple(raw)
    problem(where, f'expected "auto" or a list of distinct GPU indices like [0, 1], got {raw!r}')
    return ()


def parse_ssh_node(name: str, table: object, base: str, problem: ProblemFn) -> SshNodeSpec | None:
    where = ("nodes", name)
    if not isinstance(table, dict):
        problem(where, f"expected a table [nodes.{name}]")
        return None
    if not NAME_RE.match(name):
        problem(where, f"node name {name!r} must use only letters, digits, '-' and '_'")
    for key in table:
        if key not in SSH_KEYS:
            problem((*where, key), f"unknown key {key!r}", "known keys: " + ", ".join(SSH_KEYS))
    values: dict[str, Any] = {}
    ssh = table.get("ssh")
    if not isinstance(ssh, str) or not ssh.strip() or ssh.startswith("-"):
        problem((*where, "ssh") if "ssh" in table else where, 'expected ssh = "user@host" (a destination)')
        return None
    for key, check in _CHECKS.items():
        if key in table:
            try:
                values[key] = check(table[key], base)
            except ValueError as exc:
                problem((*where, key), str(exc))
    if "gpus" in table:
        values["gpus"] = parse_gpus(table["gpus"], (*where, "gpus"), problem)
    return SshNodeSpec(name, ssh, **values)


def _path(value: object, base: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a file path (a string)")
    path = os.path.expanduser(value)
    return path if os.path.isabs(path) else os.path.join(base, path)


def _options(value: object, base: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise ValueError('expected a list of ssh options like ["Port=2222", "User=alice"]')
    return tuple(value)


def _cpus(value: object, base: str) -> float | None:
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f'expected "auto" or a positive number, got {value!r}')
    return float(value)


def _memory(value: object, base: str) -> int | None:
    return None if value == "auto" else parse_size(value)


def _runtimes(value: object, base: str) -> tuple[Runtime, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError('expected a non-empty list of runtimes like ["process"]')
    names = [r.value for r in REMOTE_RUNTIMES]
    unknown = [v for v in value if v not in names]
    if unknown:
        raise ValueError(
            f"runtime {unknown[0]!r} is not available on ssh nodes; supported there: {', '.join(names)}"
        )
    return tuple(Runtime(v) for v in value)


def _workdir(value: object, base: str) -> str:
    if not isinstance(value, str) or not (value.startswith("/") or value.startswith("~")):
        raise ValueError('expected an absolute path on the node, or one under ~ (e.g. "~/.cache/labrun")')
    return value


def _flag(value: object, base: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _duration(value: object, base: str) -> float:
    seconds = parse_duration(value)
    if seconds < 1:
        raise ValueError("must be at least 1s: shorter silences are normal network hiccups")
    return seconds


_CHECKS: Mapping[str, Callable[[object, str], Any]] = {
    "ssh_config": _path,
    "ssh_options": _options,
    "cpus": _cpus,
    "memory": _memory,
    "runtimes": _runtimes,
    "workdir": _workdir,
    "accept_new_host_keys": _flag,
    "lost_after": _duration,
}
