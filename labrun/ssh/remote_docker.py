"""The agent's `docker` runtime on a node: the node's `docker` CLI, standard library only.

Shipped inside the agent's zipapp (Python >= 3.8). The CLI talks to whatever daemon the
node's environment names (DOCKER_HOST as the SSH session gets it, else the default socket).

    container = start(spec)          # `docker run -d`, raises DockerStartError with the fix
    monitor(container, out, err)     # logs streamed live; exit code and OOMKilled read
                                     # before `docker rm`
    kill(container, signum)

What the container is (labels, user, mounts, limits, network, GPUs, init) is decided by
`labrun.docker_args`, shipped beside this file: the same builder the head's Docker
executor uses, so a container looks the same locally and on a node. The request carries
the attempt as the head's `Launch` and `model.DockerOptions` describe it (the options as
`model.options_wire` writes them); `container_of` reads it. With no `user` option the
container runs as the SSH user's uid:gid.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from labrun import docker_args

DOCKER_TIMEOUT = 60.0  # one CLI call; a daemon that slow is reported, not waited on forever


class DockerStartError(Exception):
    """The container could not be created: the message says why and what to do on the node."""


def _docker(
    args: list[str], timeout: float = DOCKER_TIMEOUT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["docker", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=env,
            universal_newlines=True,  # noqa: UP021 - Python 3.6+ nodes
        )
    except FileNotFoundError:
        raise DockerStartError("the docker CLI is not installed on this node") from None
    except subprocess.TimeoutExpired:
        raise DockerStartError(f"`docker {args[0]}` did not answer within {timeout:g}s") from None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def container_of(spec: dict[str, Any]) -> docker_args.Container:
    """The container the head's request describes (its fields, and `options` as a plain dict)."""
    options = spec.get("options") or {}
    return docker_args.describe(
        state=str(spec.get("state") or ""),  # the head's state directory (labrun/state_id.py)
        run_id=int(spec["run_id"]),
        task=str(spec["task"]),
        attempt=int(spec["attempt"]),
        attempt_id=int(spec["attempt_id"]),
        image=str(options.get("image") or ""),
        argv=spec["argv"],
        env=dict(spec.get("env") or {}),
        workdir=str(spec.get("cwd") or ""),
        memory=int(spec.get("memory") or 0),
        cpus=float(spec.get("cpus") or 0),
        gpus=spec.get("gpus") or (),
        shared=options.get("shared"),
        user=options.get("user"),
        privileged=options.get("privileged") is True,
        network=options.get("network"),
        init=options.get("init", True) is not False,
    )


def start(spec: dict[str, Any]) -> str:
    """Create and start the container; its id."""
    container = container_of(spec)
    image = container.image
    if not image:
        raise DockerStartError("runtime docker needs an `image` on the task")
    found = _docker(["image", "inspect", "--format", "{{.Id}}", image])
    if found.returncode != 0:
        if "no such image" in found.stderr.lower():
            tar = (spec.get("options") or {}).get("image_tar") or "IMAGE.tar"
            raise DockerStartError(
                f"image {image} is not on this node; load it there with `docker load -i {tar}` "
                "(labrun pulls nothing on remote nodes)"
            )
        raise DockerStartError(f"the node's docker daemon did not answer: {_last_line(found.stderr)}")
    environment = docker_args.cli_environment(container, dict(os.environ))
    done = _docker(docker_args.cli_run_argv(container), env=environment)
    if done.returncode != 0:
        raise DockerStartError(f"`docker run` failed: {_last_line(done.stderr)}")
    return str(done.stdout.strip())


def monitor(container: str, out: int, err: int) -> dict[str, Any]:
    """Wait for the container; its logs go to `out`/`err` as they come. Then remove it."""
    logs = subprocess.Popen(
        ["docker", "logs", "--follow", container], stdin=subprocess.DEVNULL, stdout=out, stderr=err
    )
    # `docker wait` blocks until the container stops, however long the task takes
    waited = subprocess.run(
        ["docker", "wait", container],
        capture_output=True,
        check=False,
        universal_newlines=True,  # noqa: UP021 - Python 3.6+ nodes
    )
    try:
        logs.wait(timeout=DOCKER_TIMEOUT)  # follows to the end, then exits
    except subprocess.TimeoutExpired:
        logs.kill()
        logs.wait()
    facts: dict[str, Any] = {}
    state = _docker(["inspect", "--format", "{{json .State}}", container])
    if state.returncode == 0:
        parsed = json.loads(state.stdout)
        facts["exit"] = int(parsed.get("ExitCode", 0))
        facts["oom_killed"] = bool(parsed.get("OOMKilled"))
        if docker_args.state_note(parsed):
            facts["detail"] = docker_args.state_note(parsed)
    elif waited.returncode == 0 and waited.stdout.strip().isdigit():
        facts["exit"] = int(waited.stdout.strip())
        facts["detail"] = f"container state unreadable: {_last_line(state.stderr)}"
    else:
        facts["detail"] = f"container {container[:12]} vanished: {_last_line(waited.stderr)}"
    _docker(["rm", "--force", "--volumes", container])
    return facts


def kill(container: str, signum: int) -> bool:
    try:
        return _docker(["kill", "--signal", str(signum), container], timeout=10).returncode == 0
    except DockerStartError:
        return False
