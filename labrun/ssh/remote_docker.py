"""The agent's `docker` runtime on a node: the node's `docker` CLI, standard library only.

Shipped inside the agent's zipapp (Python >= 3.8). The CLI talks to whatever daemon the
node's environment names (DOCKER_HOST as the SSH session gets it, else the default socket).

    container = start(spec)          # `docker run -d`, raises DockerStartError with the fix
    monitor(container, out, err)     # logs streamed live; exit code and OOMKilled read
                                     # before `docker rm`
    kill(container, signum)

Containers carry labrun's labels (labrun.run/task/attempt), run as the SSH user's uid:gid
with --init, memory and memory+swap both at the attempt's limit, and the attempt's
workdir and the run's shared directory mounted at the same paths.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

DOCKER_TIMEOUT = 60.0  # one CLI call; a daemon that slow is reported, not waited on forever


class DockerStartError(Exception):
    """The container could not be created: the message says why and what to do on the node."""


def _docker(args: list[str], timeout: float = DOCKER_TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["docker", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            universal_newlines=True,  # noqa: UP021 - Python 3.6+ nodes
        )
    except FileNotFoundError:
        raise DockerStartError("the docker CLI is not installed on this node") from None
    except subprocess.TimeoutExpired:
        raise DockerStartError(f"`docker {args[0]}` did not answer within {timeout:g}s") from None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def run_args(spec: dict[str, Any]) -> list[str]:
    """`docker run -d ...` arguments for one attempt."""
    options = spec.get("options") or {}
    args = ["run", "-d", "--init", "--user", f"{os.getuid()}:{os.getgid()}"]
    labels = spec.get("labels") or {}
    for name in sorted(labels):
        args += ["--label", f"{name}={labels[name]}"]
    memory = int(spec.get("memory") or 0)
    if memory > 0:
        args += ["--memory", str(memory), "--memory-swap", str(memory)]
    if float(spec.get("cpus") or 0) > 0:
        args += ["--cpus", f"{float(spec['cpus']):g}"]
    for path in (spec.get("cwd"), options.get("shared")):
        if path:
            args += ["--volume", f"{path}:{path}"]
    if spec.get("cwd"):
        args += ["--workdir", spec["cwd"]]
    if options.get("network"):
        args += ["--network", str(options["network"])]
    if options.get("privileged") is True:
        args.append("--privileged")
    if options.get("gpus"):
        args += ["--gpus", "device=" + ",".join(str(g) for g in options["gpus"])]
    # docker-init forwards signals to the task's whole process group (as locally: docker.py)
    env = dict(spec.get("env") or {}, TINI_KILL_PROCESS_GROUP="1")
    for name, value in sorted(env.items()):
        args += ["--env", f"{name}={value}"]
    return [*args, "--", str(options.get("image") or ""), *spec["argv"]]


def start(spec: dict[str, Any]) -> str:
    """Create and start the container; its id."""
    image = str((spec.get("options") or {}).get("image") or "")
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
    done = _docker(run_args(spec))
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
