"""One description of an attempt's container, for the Docker SDK on the head and the CLI on nodes.

Standard library only, Python >= 3.8: it is shipped to SSH nodes inside the agent's
zipapp (labrun/ssh/session.py), where `remote_docker` turns it into `docker run` argv.
The local executor (labrun/executors/docker.py) turns the same description into the
SDK's keyword arguments. So the labels, the user, the mounts, the limits and the
flags are decided here once, whichever way the container is made:

    container = describe(state=..., run_id=..., task=..., image=..., argv=..., memory=...)
    cli_flags(container)      # ["--label", "labrun.run=7", ..., "--memory", "268435456", ...]
    cli_run_argv(container)   # ["run", "-d", *flags, "--", image, *argv]

Environment values are not put on the CLI's command line (where `ps` on the node would
show secrets): the flags name each variable (`--env NAME`) and the caller passes the
values in the CLI's own environment (`container.env`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

ATTEMPT_LABEL = "labrun.attempt_id"  # what adoption and the orphan sweep look containers up by
# The state directory's id (labrun/state_id.py): attempt ids repeat across installations, so
# a container is ours only when it carries this label with our id, whatever its attempt id.
STATE_LABEL = "labrun.state"


@dataclass(frozen=True)
class Container:
    """What a container for one attempt is, independent of the client that makes it."""

    image: str
    argv: tuple[str, ...]
    labels: dict[str, str]
    user: str  # "uid:gid"
    workdir: str
    mounts: tuple[str, ...]  # host paths, mounted read-write at the same path inside
    env: dict[str, str] = field(default_factory=dict)
    memory: int = 0  # bytes; memory and memory+swap both (no swap: over it is an OOM kill); 0: none
    cpus: float = 0.0  # 0: no limit
    network: str | None = None  # None: the daemon's default
    privileged: bool = False
    gpus: tuple[str, ...] = ()  # device indices
    init: bool = True  # docker-init as PID 1 so signals reach the task's process group


def labels(run_id: int, task: str, attempt: int, attempt_id: int, state: str) -> dict[str, str]:
    return {
        STATE_LABEL: state,
        "labrun.run": str(run_id),
        "labrun.task": task,
        "labrun.attempt": str(attempt),
        ATTEMPT_LABEL: str(attempt_id),
    }


def init_env(init: bool) -> dict[str, str]:
    """docker-init (tini) forwards a signal to the task's process group, not only to the task:
    a SIGTERM then reaches a shell's children, as it does in the process runtime (killpg),
    so a training script under `sh -c` can checkpoint before the SIGKILL."""
    return {"TINI_KILL_PROCESS_GROUP": "1"} if init else {}


def ours(state: str, attempt_id: int | None = None) -> dict[str, list[str]]:
    """The daemon's `filters` for this state directory's containers (of one attempt, if given)."""
    wanted = [f"{STATE_LABEL}={state}"]
    if attempt_id is not None:
        wanted.append(f"{ATTEMPT_LABEL}={attempt_id}")
    return {"label": wanted}


def describe(
    *,
    state: str,
    run_id: int,
    task: str,
    attempt: int,
    attempt_id: int,
    image: str,
    argv: Iterable[str],
    env: dict[str, str],
    workdir: str,
    memory: int,
    cpus: float,
    gpus: Iterable[int] = (),
    shared: str | None = None,
    user: str | None = None,
    privileged: bool = False,
    network: str | None = None,
    init: bool = True,
) -> Container:
    """The container of one attempt. `user` None: the user running this code, on this machine
    (the runner's user on the head, the SSH user on a node), so files it writes are theirs."""
    mounts = [workdir] + ([shared] if shared and shared != workdir else [])
    init = init is not False
    return Container(
        image=image,
        argv=tuple(argv),
        labels=labels(run_id, task, attempt, attempt_id, state),
        user=user or f"{os.getuid()}:{os.getgid()}",
        workdir=workdir,
        mounts=tuple(mounts),
        env={**env, **init_env(init)},
        memory=max(0, int(memory)),
        cpus=max(0.0, float(cpus)),
        network=network or None,
        privileged=privileged is True,
        gpus=tuple(str(g) for g in gpus),
        init=init,
    )


def cli_flags(c: Container) -> list[str]:
    """The `docker run`/`docker create` options for the container (no image, no command)."""
    args = ["--user", c.user]
    if c.init:
        args.append("--init")
    for name in sorted(c.labels):
        args += ["--label", f"{name}={c.labels[name]}"]
    if c.memory > 0:
        args += ["--memory", str(c.memory), "--memory-swap", str(c.memory)]
    if c.cpus > 0:
        args += ["--cpus", f"{c.cpus:g}"]
    for path in c.mounts:
        args += ["--volume", f"{path}:{path}:rw"]
    args += ["--workdir", c.workdir]
    if c.network:
        args += ["--network", c.network]
    if c.privileged:
        args.append("--privileged")
    if c.gpus:
        args += ["--gpus", "device=" + ",".join(c.gpus)]
    for name in sorted(c.env):
        args += ["--env", name]  # the value comes from the CLI's environment: not on argv
    return args


def cli_run_argv(c: Container) -> list[str]:
    """`docker run -d ...` arguments (after `docker`); run with `cli_environment(c)`."""
    return ["run", "-d", *cli_flags(c), "--", c.image, *c.argv]


def state_note(state: dict[str, Any]) -> str:
    """What a container's inspected `State` says beyond its exit code: Docker's own error."""
    error = str(state.get("Error") or "").strip()
    return f"Docker State.Error: {error}" if error else ""  # diagnose.DOCKER_ERROR reads it


def cli_environment(c: Container, base: dict[str, str]) -> dict[str, str]:
    """The CLI's environment: `base` plus the container's variables, read by `--env NAME`."""
    return {**base, **c.env}
