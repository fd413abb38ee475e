"""Making an attempt's container through the `docker` SDK: described, created, image loaded.

What the container is (labels, user, mounts, limits, network, GPUs, init) is decided by
`labrun.docker_args.describe`, the same builder the agent uses on SSH nodes; `sdk_kwargs`
only turns that description into the SDK's keyword arguments. `create` makes the
container (not started) and loads `image_tar` once when the image is missing; every
failure is a `LaunchError` that names the fix.
"""

from __future__ import annotations

from typing import Any

from labrun import docker_args
from labrun.executors.docker_daemon import unreachable_message
from labrun.model import DockerOptions, Launch, LaunchError, options_for


def container_for(launch: Launch, state: str) -> docker_args.Container:
    """The attempt's container, labelled with the state directory's id `state`."""
    options = options_for(launch, DockerOptions)
    return docker_args.describe(
        state=state,
        run_id=launch.run_id,
        task=launch.task_name,
        attempt=launch.attempt,
        attempt_id=launch.attempt_id,
        image=options.image,
        argv=launch.argv,
        env=dict(launch.env),
        workdir=launch.workdir,
        memory=launch.memory,
        cpus=launch.cpus,
        gpus=launch.gpus,
        shared=options.shared,
        user=options.user,
        privileged=options.privileged,
        network=options.network,
        init=options.init,
    )


def sdk_kwargs(c: docker_args.Container) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`APIClient.create_container` kwargs without host_config, `create_host_config` kwargs)."""
    import docker.types

    create = {
        "image": c.image,
        "command": list(c.argv),
        "environment": dict(c.env),
        "working_dir": c.workdir,
        "user": c.user,
        "labels": dict(c.labels),
        "volumes": list(c.mounts),
    }
    host: dict[str, Any] = {
        "binds": {path: {"bind": path, "mode": "rw"} for path in c.mounts},
        "privileged": c.privileged,
        "init": c.init,
    }
    if c.memory > 0:
        host["mem_limit"] = c.memory
        host["memswap_limit"] = c.memory
    if c.cpus > 0:
        host["nano_cpus"] = int(c.cpus * 1e9)
    if c.gpus:
        host["device_requests"] = [
            docker.types.DeviceRequest(device_ids=list(c.gpus), capabilities=[["gpu"]])
        ]
    if c.network:
        host["network_mode"] = c.network
    return create, host


class Creator:
    """Creates containers on one daemon; loads each `image_tar` at most once."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._loaded_tars: set[str] = set()

    def create(self, api: Any, launch: Launch, container: docker_args.Container, parent: str | None) -> str:
        """The new container's id (created, not started)."""
        import docker.errors

        image = container.image
        kwargs, host_args = sdk_kwargs(container)
        if parent is not None:
            host_args["cgroup_parent"] = parent
        kwargs["host_config"] = api.create_host_config(**host_args)
        try:
            return self._create_once(api, launch, kwargs)
        except docker.errors.ImageNotFound:
            if not self._load_tar(api, launch, image):
                raise LaunchError(self._missing_image(launch, image)) from None
        try:
            return self._create_once(api, launch, kwargs)
        except docker.errors.ImageNotFound:
            tar = options_for(launch, DockerOptions).image_tar
            raise LaunchError(
                f"task {launch.task_name!r}: loaded {tar} but it does not contain image "
                f"{image}; check the tag with `docker load -i {tar}` and `docker images`"
            ) from None

    def _create_once(self, api: Any, launch: Launch, kwargs: dict[str, Any]) -> str:
        """Create the container; any failure but a missing image becomes a LaunchError."""
        import docker.errors
        import requests

        try:
            return str(api.create_container(**kwargs)["Id"])
        except docker.errors.ImageNotFound:
            raise
        except docker.errors.APIError as exc:
            raise LaunchError(
                f"task {launch.task_name!r}: the daemon refused the container: {exc.explanation}"
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise LaunchError(unreachable_message(self.url, exc)) from exc

    def _load_tar(self, api: Any, launch: Launch, image: str) -> bool:
        """Load `image_tar` once per executor; False when there is none to load."""
        tar = options_for(launch, DockerOptions).image_tar
        if not tar or tar in self._loaded_tars:
            return False
        self._loaded_tars.add(tar)
        try:
            with open(tar, "rb") as data:
                for message in api.load_image(data):
                    if isinstance(message, dict) and message.get("error"):
                        raise LaunchError(
                            f"task {launch.task_name!r}: image_tar {tar} could not be loaded: "
                            f"{message['error']}; make it with `docker save -o {tar} {image}`"
                        )
        except OSError as exc:
            raise LaunchError(
                f"task {launch.task_name!r}: image {image} is missing and image_tar {tar} "
                f"cannot be read ({exc.strerror}); fix the path or run `docker load -i {tar}`"
            ) from exc
        return True

    def _missing_image(self, launch: Launch, image: str) -> str:
        tar = options_for(launch, DockerOptions).image_tar
        if tar:
            fix = f"`docker load -i {tar}` (it was already loaded once and did not provide it)"
        else:
            fix = f"`docker load -i IMAGE.tar` or `docker pull {image}`, or set image_tar"
        return f"task {launch.task_name!r}: image {image} not found on {self.url}; run {fix}"
