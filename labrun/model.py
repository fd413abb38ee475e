"""The plain data that crosses the executor seam: what to start, what was started, what was observed.

No internal imports: the store, the decisions and every executor depend on this module,
never the other way round.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Runtime(str, enum.Enum):
    """Where an attempt runs on its node."""

    PROCESS = "process"
    CGROUP = "cgroup"
    DOCKER = "docker"


@dataclass(frozen=True)
class Launch:
    """Everything an executor needs to start one attempt; all placeholders already filled."""

    attempt_id: int
    run_id: int
    task_name: str
    attempt: int
    argv: tuple[str, ...]
    env: Mapping[str, str]  # added to the runner's environment
    workdir: str
    stdout_path: str
    stderr_path: str
    cpus: float
    memory: int  # bytes; the limit where the runtime can enforce one
    outputs: tuple[str, ...] = ()  # absolute paths that must exist and be non-empty after exit 0
    options: Mapping[str, object] = field(default_factory=dict)  # runtime-specific keys


@dataclass(frozen=True)
class Started:
    """How to recognise a started attempt again (for adoption after a runner crash)."""

    pid: int | None = None
    pid_start: float | None = None  # process start time, so a reused pid is not mistaken
    ref: str | None = None  # container id, remote status path, ...
    mechanism: str = ""  # e.g. "process", "cgroup-v1", "docker"


@dataclass(frozen=True)
class Facts:
    """What was observed about an attempt that ended. Interpretation is `outcome.py`'s job."""

    exit_code: int | None  # None when the process was killed by a signal
    signal: int | None
    ended: float
    oom_kills: int = 0  # the kernel's counter for the attempt's cgroup
    oom_killed: bool = False  # the container runtime says so (Docker's State.OOMKilled)
    peak_memory: int | None = None
    cpu_seconds: float | None = None
    missing_outputs: tuple[str, ...] = ()
    lost: bool = False  # vanished without an exit record
    start_error: str = ""  # could not start at all (LaunchError's message)
    detail: str = ""


class LaunchError(Exception):
    """The attempt cannot start, and retrying will not help. The message says why and the fix."""
