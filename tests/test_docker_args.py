"""One description of a container (labrun/docker_args.py) for the SDK on the head and the CLI on
nodes, and typed launch options reaching the agent on an SSH node intact.

The Docker tests make real containers on a real dockerd (tests/dockerd.py), one through the
SDK adapter and one through the `docker` CLI as the agent runs it, and compare what the
daemon recorded for each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from e2e import attempts, labrun
from sshd import SshdLab
from test_ssh_nodes import write_lab

from labrun import docker_args
from labrun.cgroup import detect
from labrun.executors.docker_create import container_for, sdk_kwargs
from labrun.executors.ssh import start_request
from labrun.model import DockerOptions, Launch, Runtime, options_wire
from labrun.ssh import remote_docker

MiB = 1024 * 1024


def docker_launch(tmp_path: Path, image: str, **options: Any) -> Launch:
    return Launch(
        attempt_id=42,
        run_id=7,
        task_name="train[3]",
        attempt=2,
        argv=("sh", "-c", "echo $SECRET"),
        env={"SECRET": "s3cret value", "PLAIN": "1"},
        workdir=str(tmp_path),
        stdout_path=str(tmp_path / "out"),
        stderr_path=str(tmp_path / "err"),
        cpus=1.5,
        memory=96 * MiB,
        options=DockerOptions(image=image, **options),
        gpus=(0, 2),
    )


def test_typed_options_round_trip_to_the_agent(tmp_path: Path) -> None:
    """The head's DockerOptions → the JSON start request → the agent's reading: one container."""
    shared = tmp_path / "shared"
    options = {
        "image_tar": "/srv/img.tar",
        "shared": str(shared),
        "user": "1000:1000",
        "privileged": True,
        "network": "none",
        "init": False,
    }
    launch = docker_launch(tmp_path, "img:1", **options)
    wire = json.loads(json.dumps(start_request(launch, Runtime.DOCKER, "r7-a42")))
    assert wire["runtime"] == "docker"
    assert wire["options"] == {"runtime": "docker", "image": "img:1", **options}
    assert remote_docker.container_of(wire) == container_for(launch, "")


def test_the_sdk_kwargs_and_the_cli_argv_say_the_same(tmp_path: Path) -> None:
    container = container_for(
        docker_launch(tmp_path, "img:1", shared=str(tmp_path / "s"), network="none"), "0123abcd"
    )
    create, host = sdk_kwargs(container)
    argv = docker_args.cli_run_argv(container)
    flags: dict[str, list[str]] = {}
    rest = argv[2 : argv.index("--")]
    while rest:
        flag = rest.pop(0)
        value = rest.pop(0) if rest and not rest[0].startswith("--") else ""
        flags.setdefault(flag, []).append(value)
    assert argv[:2] == ["run", "-d"] and argv[argv.index("--") + 1 :] == ["img:1", *container.argv]
    assert dict(v.split("=", 1) for v in flags["--label"]) == create["labels"] == container.labels
    assert create["labels"]["labrun.attempt_id"] == "42" and create["labels"]["labrun.task"] == "train[3]"
    assert flags["--user"] == [create["user"]] and flags["--workdir"] == [create["working_dir"]]
    assert flags["--memory"] == flags["--memory-swap"] == [str(host["mem_limit"])] == [str(96 * MiB)]
    assert host["memswap_limit"] == host["mem_limit"]
    assert float(flags["--cpus"][0]) * 1e9 == host["nano_cpus"]
    assert (
        flags["--volume"]
        == [f"{p}:{p}:rw" for p in host["binds"]]
        == [f"{p}:{p}:rw" for p in create["volumes"]]
    )
    assert flags["--network"] == [host["network_mode"]] and ("--init" in flags) is host["init"] is True
    assert flags["--gpus"] == ["device=0,2"] and host["device_requests"][0]["DeviceIDs"] == ["0", "2"]
    # values stay off the command line (`ps` on the node would show them); the CLI reads its env
    # (and docker-init is told to signal the task's whole process group, on both paths)
    assert (
        sorted(flags["--env"])
        == sorted(create["environment"])
        == ["PLAIN", "SECRET", "TINI_KILL_PROCESS_GROUP"]
    )
    assert "s3cret value" not in " ".join(argv)
    assert docker_args.cli_environment(container, {"PATH": "/bin"})["SECRET"] == "s3cret value"


@pytest.fixture
def api(docker_url: str) -> Iterator[Any]:
    client = docker.APIClient(base_url=docker_url, version="auto")
    yield client
    client.close()


def recorded(api: Any, ident: str) -> dict[str, Any]:
    """What the daemon keeps of a container that the two clients could differ on."""
    info = api.inspect_container(ident)
    config, host = info["Config"], info["HostConfig"]
    return {
        "labels": config["Labels"],
        "user": config["User"],
        "workdir": config["WorkingDir"],
        "env": sorted(e for e in config["Env"] if e.split("=")[0] in ("SECRET", "PLAIN")),
        "cmd": config["Cmd"],
        "image": config["Image"],
        "memory": (host["Memory"], host["MemorySwap"]),
        "cpus": host["NanoCpus"],
        "binds": sorted(host["Binds"]),
        "network": host["NetworkMode"],
        "privileged": host["Privileged"],
        "init": bool(host["Init"]),
    }


def test_a_container_made_by_the_sdk_and_by_the_cli_is_the_same(
    tmp_path: Path, docker_url: str, docker_image: str, api: Any
) -> None:
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        pytest.skip("the docker CLI is not installed; run `sudo tests/setup-system.sh`")
    launch = docker_launch(tmp_path, docker_image, shared=str(tmp_path / "shared"), network="none")
    container = docker_args.Container(
        **{**container_for(launch, "0123abcd").__dict__, "gpus": ()}
    )  # no GPU here
    create, host = sdk_kwargs(container)
    by_sdk = str(api.create_container(**create, host_config=api.create_host_config(**host))["Id"])
    env = docker_args.cli_environment(container, {**os.environ, "DOCKER_HOST": docker_url})
    argv = docker_args.cli_run_argv(container)
    made = subprocess.run(
        [docker_cli, "create", *argv[2:]], env=env, capture_output=True, text=True, check=False
    )
    assert made.returncode == 0, made.stderr
    by_cli = made.stdout.strip()
    try:
        sdk, cli = recorded(api, by_sdk), recorded(api, by_cli)
        assert sdk == cli
        assert sdk["labels"]["labrun.attempt_id"] == "42" and sdk["memory"] == (96 * MiB, 96 * MiB)
        assert sdk["env"] == ["PLAIN=1", "SECRET=s3cret value"] and sdk["init"] is True
    finally:
        for ident in (by_sdk, by_cli):
            api.remove_container(ident, force=True)


SUPPORT = detect()


@pytest.mark.skipif(not SUPPORT.ok, reason=f"no cgroup here: {SUPPORT.reason}")
def test_a_cpuset_reaches_the_agent_and_pins_the_remote_task(tmp_path: Path, sshd_lab: SshdLab) -> None:
    if any("cpuset" in note for note in SUPPORT.notes) or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("CPU pinning needs the cpuset controller and two CPUs")
    cpu = max(os.sched_getaffinity(0))
    sshd_lab.start("node-a")
    write_lab(tmp_path, sshd_lab, {"node-a": 'runtimes = ["cgroup"]'})
    (tmp_path / "job.toml").write_text(
        '[job]\nname = "pinned"\n[[tasks]]\nname = "t"\nruntime = "cgroup"\nnodes = ["node-a"]\n'
        f'cpuset = "{cpu}"\nretries = 0\ncommand = "grep Cpus_allowed_list /proc/self/status > cpus.txt"\n'
    )
    done = labrun(tmp_path, "run", "--no-preflight", "job.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    (only,) = attempts(tmp_path)
    assert only["node"] == "node-a" and only["runtime"] == "cgroup"
    assert (tmp_path / "cpus.txt").read_text().split() == ["Cpus_allowed_list:", str(cpu)]


def test_options_on_the_wire_are_plain_json() -> None:
    wire = options_wire(DockerOptions(image="img:1", network="none"))
    assert json.loads(json.dumps(wire)) == wire
    assert wire["runtime"] == "docker" and wire["init"] is True and wire["user"] is None
