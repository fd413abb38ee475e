"""`runtime = "docker"`: each attempt in its own container, through the `docker` SDK.

It takes `model.DockerOptions`. What the container is (labels, user, mounts, limits,
network, GPUs, init) is decided by `labrun.docker_args.describe`, the same builder the
agent uses on SSH nodes; `sdk_kwargs` only turns that description into the SDK's
keyword arguments.

The container is not auto-removed: its exit code and `State.OOMKilled` are read, and its
logs copied, before labrun removes it. Peak memory is not recorded: the container's
cgroup is gone by the time it is inspected, and sampling stats while it runs costs a
stream per container (see `finished`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from labrun import attempt_facts, docker_args, private
from labrun.docker_args import ATTEMPT_LABEL
from labrun.executors import docker_cgroup
from labrun.executors.base import Executor, Waker
from labrun.executors.docker_daemon import DieWatcher, connect, daemon_url, unreachable_message
from labrun.model import DockerOptions, Facts, Launch, LaunchError, Runtime, Started, options_for


@dataclass(frozen=True)
class _Tracked:
    launch: Launch
    container: str
    cgroup_parent: str | None = None
    signalled: int | None = None


def container_for(launch: Launch) -> docker_args.Container:
    """The attempt's container, described by the builder the agent on SSH nodes uses too."""
    options = options_for(launch, DockerOptions)
    return docker_args.describe(
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


class DockerExecutor(Executor):
    """Runs attempts as containers on one Docker daemon (DOCKER_HOST or the default socket)."""

    runtime = Runtime.DOCKER

    def __init__(self, waker: Waker | None = None, base_url: str | None = None) -> None:
        self._waker = waker
        self._base_url = base_url
        self._client: Any = None
        self._watcher: DieWatcher | None = None
        self._lock = threading.Lock()
        self._tracked: dict[int, _Tracked] = {}
        self._loaded_tars: set[str] = set()
        self._cgroup_version: str | None = None  # set when per-container parents work here
        self._stale_parents: list[str] = []

    @property
    def url(self) -> str:
        return daemon_url(self._base_url)

    def _api(self) -> Any:
        # Connected on first use: building an executor must not need a running daemon.
        if self._client is None:
            self._client = connect(self._base_url)
            self._watcher = DieWatcher(self._base_url, self._waker)
            info = self._client.info()
            version = str(info.get("CgroupVersion") or "1")
            if docker_cgroup.usable(str(info.get("CgroupDriver")), version, self.url):
                self._cgroup_version = version
        return self._client

    def start(self, launch: Launch) -> Started:
        container = container_for(launch)
        image = container.image
        if not image:
            raise LaunchError(f"task {launch.task_name!r}: runtime docker needs an `image`")
        api = self._api()
        parent = None
        if self._cgroup_version is not None:
            parent = docker_cgroup.parent_for(launch.run_id, launch.attempt_id, uuid.uuid4().hex[:8])
        ident = self._create(api, launch, container, parent)
        with self._lock:
            self._tracked[launch.attempt_id] = _Tracked(launch, ident, parent)
        try:
            api.start(ident)
        except Exception as exc:
            with self._lock:
                del self._tracked[launch.attempt_id]
            self._remove(ident)
            self._drop_parent(parent)
            why = getattr(exc, "explanation", None) or exc
            raise LaunchError(
                f"task {launch.task_name!r}: container from {image} did not start: {why}"
            ) from exc
        return Started(ref=ident, mechanism="docker")

    def _create(self, api: Any, launch: Launch, container: docker_args.Container, parent: str | None) -> str:
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

    def finished(self) -> list[tuple[int, Facts]]:
        if self._watcher is None:  # no container started yet: nothing to import or ask
            return []
        import requests

        died, resync = self._watcher.take()
        with self._lock:
            candidates = [(aid, t) for aid, t in self._tracked.items() if resync or t.container in died]
        results: list[tuple[int, Facts]] = []
        for attempt_id, tracked in candidates:
            try:
                facts = self._collect(tracked)
            except requests.exceptions.ConnectionError:
                # The daemon is restarting or gone: keep tracking; the watcher flags a
                # resync and wakes the runner once it reconnects.
                if self._watcher is not None:
                    self._watcher.mark_resync()
                break
            if facts is not None:
                with self._lock:
                    del self._tracked[attempt_id]
                results.append((attempt_id, facts))
        return results

    def _collect(self, tracked: _Tracked) -> Facts | None:
        """Facts about an ended container, then remove it; None while it still runs."""
        import docker.errors

        api = self._api()
        try:
            state = api.inspect_container(tracked.container)["State"]
        except docker.errors.NotFound:
            return Facts(None, None, time.time(), lost=True, detail="container vanished")
        if _still_running(state):
            return None
        code = int(state.get("ExitCode", -1))
        oom = bool(state.get("OOMKilled"))
        self._copy_logs(api, tracked)
        self._remove(tracked.container)
        usage = self._usage(tracked.cgroup_parent)
        return Facts(
            exit_code=code,
            signal=attempt_facts.container_signal(
                code, oom, [tracked.signalled] if tracked.signalled else []
            ),
            ended=time.time(),
            oom_killed=oom,
            peak_memory=usage.peak_memory,
            cpu_seconds=usage.cpu_seconds,
            missing_outputs=attempt_facts.missing_outputs(tracked.launch.outputs) if code == 0 else (),
            detail=docker_args.state_note(state),
        )

    def _usage(self, parent: str | None) -> docker_cgroup.Usage:
        if parent is None or self._cgroup_version is None:
            return docker_cgroup.Usage(None, None)
        usage = docker_cgroup.read_usage(parent, self._cgroup_version)
        self._drop_parent(parent)
        return usage

    def _drop_parent(self, parent: str | None) -> None:
        """Remove a container's cgroup parent; busy ones are retried on later calls."""
        if self._cgroup_version is None:
            return
        pending = [*self._stale_parents, *([parent] if parent else [])]
        self._stale_parents = [p for p in pending if not docker_cgroup.remove(p, self._cgroup_version)]

    def _copy_logs(self, api: Any, tracked: _Tracked) -> None:
        launch = tracked.launch
        streams = ((launch.stdout_path, True), (launch.stderr_path, False))
        private.makedirs(os.path.dirname(launch.stdout_path))
        for path, out in streams:
            with os.fdopen(private.open_append(path), "ab") as sink:
                for chunk in api.logs(tracked.container, stdout=out, stderr=not out, stream=True):
                    sink.write(chunk)

    def _remove(self, container: str) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            self._api().remove_container(container, force=True)

    def signal(self, attempt_id: int, signum: int) -> None:
        import docker.errors
        import requests

        with self._lock:
            tracked = self._tracked.get(attempt_id)
            if tracked is None:
                return
            self._tracked[attempt_id] = replace(tracked, signalled=signum)
        try:
            self._api().kill(tracked.container, signal=int(signum))
        except requests.exceptions.ConnectionError:
            pass  # daemon unreachable; the runner signals again when its deadline comes back
        except docker.errors.APIError as exc:
            # 404 gone or 409 not running: it ended on its own; `finished` reports it.
            if exc.status_code not in (404, 409):
                raise

    def running(self) -> list[int]:
        with self._lock:
            return list(self._tracked)

    def adopt(self, attempt_id: int, launch: Launch, started: Started) -> bool:
        api = self._api()
        ident = started.ref or self._find_by_label(api, attempt_id)
        if not ident:
            return False
        import docker.errors

        try:
            labels = api.inspect_container(ident)["Config"]["Labels"] or {}
        except docker.errors.NotFound:
            return False
        if labels.get(ATTEMPT_LABEL) != str(attempt_id):
            return False
        parent = api.inspect_container(ident)["HostConfig"].get("CgroupParent") or None
        with self._lock:
            self._tracked[attempt_id] = _Tracked(launch, ident, parent)
        # It may have died before we subscribed; a wake makes the runner call `finished`,
        # which inspects it.
        self._force_check()
        return True

    def _find_by_label(self, api: Any, attempt_id: int) -> str | None:
        found = api.containers(all=True, filters={"label": f"{ATTEMPT_LABEL}={attempt_id}"})
        return str(found[0]["Id"]) if found else None

    def _force_check(self) -> None:
        if self._watcher is not None:
            self._watcher.mark_resync()
        if self._waker is not None:
            self._waker.wake()

    def close(self) -> None:
        if self._client is not None:
            self._drop_parent(None)
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        if self._client is not None:
            self._client.close()
            self._client = None


def _still_running(state: dict[str, Any]) -> bool:
    """A container that runs, restarts, or waits to be started. One that was created and
    failed to start (`State.Error` set: a runner died before removing it) has ended."""
    if state.get("Running") or state.get("Status") == "restarting":
        return True
    return state.get("Status") == "created" and not state.get("Error")
