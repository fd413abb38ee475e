"""What DockerExecutor asks the daemon for, and its errors without a daemon (no dockerd needed)."""

from __future__ import annotations

from typing import Any

import pytest

from labrun.executors.docker import DockerExecutor
from labrun.executors.docker_create import container_for, sdk_kwargs
from labrun.model import DockerOptions, Launch, LaunchError


def launch(gpus: tuple[int, ...] = (), **options: Any) -> Launch:
    return Launch(
        attempt_id=3,
        run_id=1,
        task_name="train",
        attempt=2,
        argv=("true",),
        env={},
        workdir="/w",
        stdout_path="/w/o",
        stderr_path="/w/e",
        cpus=1.5,
        memory=1 << 30,
        options=DockerOptions(**{"image": "img:1", **options}),
        gpus=gpus,
    )


def host_args(launch: Launch) -> dict[str, Any]:
    return sdk_kwargs(container_for(launch, "0123abcd"))[1]


def test_memory_swap_equals_memory_and_cpus_are_nano() -> None:
    args = host_args(launch())
    assert (args["mem_limit"], args["memswap_limit"]) == (1 << 30, 1 << 30)
    assert args["nano_cpus"] == 1_500_000_000


def test_no_privilege_no_host_network_no_gpus_by_default() -> None:
    args = host_args(launch(privileged="yes"))  # only exactly True counts
    assert args["privileged"] is False
    assert "network_mode" not in args
    assert "device_requests" not in args


def test_privileged_network_and_gpus_when_asked() -> None:
    args = host_args(launch(gpus=(0, 2), privileged=True, network="none"))
    assert args["privileged"] is True
    assert args["network_mode"] == "none"
    [request] = args["device_requests"]
    assert (request["DeviceIDs"], request["Capabilities"]) == (["0", "2"], [["gpu"]])


def test_workdir_and_shared_are_mounted_at_the_same_path() -> None:
    assert container_for(launch(shared="/s"), "0123abcd").mounts == ("/w", "/s")
    assert container_for(launch(shared="/w"), "0123abcd").mounts == ("/w",)
    binds = host_args(launch(shared="/s"))["binds"]
    assert binds == {"/w": {"bind": "/w", "mode": "rw"}, "/s": {"bind": "/s", "mode": "rw"}}


def test_unreachable_daemon_names_socket_and_fix(tmp_path: object) -> None:
    url = "unix:///tmp/labrun-no-such-dockerd.sock"
    ex = DockerExecutor(None, base_url=url, state_dir=str(tmp_path))
    with pytest.raises(LaunchError, match=r"labrun-no-such-dockerd\.sock.*dockerd -H"):
        ex.start(launch())
    ex.close()


def test_missing_image_option_is_a_launch_error() -> None:
    with pytest.raises(LaunchError, match="needs an `image`"):
        DockerExecutor(state_dir="/nonexistent").start(launch(image=""))
