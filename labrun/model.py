"""The plain data that crosses the executor seam: what to start, what was started, what was observed.

No internal imports: the store, the decisions and every executor depend on this module,
never the other way round. Runtime names are `Runtime` members everywhere inside labrun;
they become strings only at the boundary (TOML in, SQLite and JSON out).

`Launch.options` holds one typed options dataclass per runtime (`ProcessOptions`,
`CgroupOptions`, `DockerOptions`), built from the task spec by `isolation.launch_options`.
An executor reads the one its runtime takes (`options_for`); an SSH node gets them as a
plain dict (`options_wire`), since its agent is standard library only.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import ClassVar, TypeVar


class Runtime(str, enum.Enum):
    """Where an attempt runs on its node."""

    PROCESS = "process"
    CGROUP = "cgroup"
    DOCKER = "docker"

    def __str__(self) -> str:  # in messages and f-strings: "docker", not "Runtime.DOCKER"
        return self.value


@dataclass(frozen=True)
class ProcessOptions:
    """The process runtime takes no options: isolation is what it lacks."""

    runtime: ClassVar[Runtime] = Runtime.PROCESS


@dataclass(frozen=True)
class CgroupOptions:
    runtime: ClassVar[Runtime] = Runtime.CGROUP

    cpuset: str | None = None  # CPUs to pin to, "0-3,6" (spaces removed)


@dataclass(frozen=True)
class DockerOptions:
    runtime: ClassVar[Runtime] = Runtime.DOCKER

    image: str = ""  # required: config/job.py refuses a docker task without one
    image_tar: str | None = None  # a `docker save` tarball loaded once when the image is missing
    shared: str | None = None  # the run's shared directory, mounted at the same path
    user: str | None = None  # "uid:gid" inside; None: the user labrun runs as, on that machine
    privileged: bool = False
    network: str | None = None  # network mode; None: the daemon's default
    init: bool = True  # docker-init as PID 1, so signals reach the task


RuntimeOptions = ProcessOptions | CgroupOptions | DockerOptions
_O = TypeVar("_O", ProcessOptions, CgroupOptions, DockerOptions)


def options_for(launch: Launch, kind: type[_O]) -> _O:
    """The launch's options as the runtime `kind` takes them. A launch with none (the default,
    `ProcessOptions`) gets the runtime's defaults; one built for another runtime is a bug in
    labrun (the runner picks the executor by the same runtime the options came from)."""
    if isinstance(launch.options, kind):
        return launch.options
    if isinstance(launch.options, ProcessOptions):
        return kind()
    raise TypeError(
        f"attempt {launch.attempt_id}: a {kind.runtime} executor was given {launch.options.runtime} options"
    )


def options_wire(options: RuntimeOptions) -> dict[str, object]:
    """The options as the agent on an SSH node reads them: a plain JSON object."""
    return {"runtime": options.runtime.value, **asdict(options)}


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
    outputs: tuple[str, ...] = ()  # absolute paths that must be present after exit 0 (attempt_facts)
    options: RuntimeOptions = field(default_factory=ProcessOptions)
    gpus: tuple[int, ...] = ()  # device indices this attempt holds alone (assigned at claim time)
    # removed from the runner's (or node's) environment before `env` is added: the secrets
    # other tasks of the job declare, which this one does not (`secrets.withheld`)
    withheld: tuple[str, ...] = ()
    # the longest the attempt may run (its absolute timeout plus grace), for schedulers that
    # plan with one (Slurm's --time); labrun enforces the timeout itself. None: no limit
    time_limit: float | None = None


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
    oom_killed: bool = False  # the container runtime says so (Docker's State.OOMKilled); kept apart
    peak_memory: int | None = None
    cpu_seconds: float | None = None
    missing_outputs: tuple[str, ...] = ()
    lost: bool = False  # vanished without an exit record
    timed_out: bool = False  # a cluster's scheduler stopped it at its time limit (Slurm TIMEOUT)
    start_error: str = ""  # could not start at all (LaunchError's message)
    detail: str = ""  # the executor's note (Docker's State.Error, unreadable counters, ...)
    # memory sampled while it ran, encoded by labrun.memseries (None: not sampled: it ended
    # within a second, or the runtime has no source); kept by the store with the end
    memory_series: str | None = None
    gpus: tuple[int, ...] = ()  # the device indices it held (the runner's assignment)


class LaunchError(Exception):
    """The attempt cannot start, and retrying will not help. The message says why and the fix."""
