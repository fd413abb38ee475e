"""`runtime = "docker"`: each attempt in its own container, through the `docker` SDK.

Launch options this executor reads (all under `Launch.options`):

    image       (str, required)  the image to run
    image_tar   (str)            a `docker save` tarball loaded once when the image is missing
    shared      (str)            the run's shared directory, mounted at the same path
    user        (str)            "uid:gid" inside the container; default: the invoking user's
    gpus        (list[int])      device indices passed as a GPU device request
    privileged  (bool)           only when exactly True
    network     (str)            network mode; default: the daemon's default (never host)
    init        (bool)           run docker-init as PID 1 so signals reach the task (default True)

The container is not auto-removed: its exit code and `State.OOMKilled` are read, and its
logs copied, before labrun removes it. Peak memory is not recorded: the container's
cgroup is gone by the time it is inspected, and sampling stats while it runs costs a
stream per container (see `finished`).
"""

from __future__ import annotations

import contextlib
import os
import signal as signals
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from labrun.executors import docker_cgroup
from labrun.executors.base import Executor, Waker
from labrun.executors.docker_daemon import (
    ATTEMPT_LABEL,
    DieWatcher,
    connect,
    daemon_url,
    unreachable_message,
)
from labrun.model import Facts, Launch, LaunchError, Started


@dataclass(frozen=True)
class _Tracked:
    launch: Launch
    container: str
    cgroup_parent: str | None = None
    signalled: int | None = None


def container_labels(launch: Launch) -> dict[str, str]:
    return {
        "labrun.run": str(launch.run_id),
        "labrun.task": launch.task_name,
        "labrun.attempt": str(launch.attempt),
        ATTEMPT_LABEL: str(launch.attempt_id),
    }


def mounted_paths(launch: Launch) -> list[str]:
    """Host paths mounted at the same path inside: the workdir and the run's shared directory."""
    paths = [launch.workdir]
    shared = launch.options.get("shared")
    if isinstance(shared, str) and shared and shared not in paths:
        paths.append(shared)
    return paths


def init_env(init: bool) -> dict[str, str]:
    """docker-init (tini) forwards a signal to the task's process group, not only to the task:
    a SIGTERM then reaches a shell's children, as it does in the process runtime (killpg),
    so a training script under `sh -c` can checkpoint before the SIGKILL."""
    return {"TINI_KILL_PROCESS_GROUP": "1"} if init else {}


def host_config_args(launch: Launch) -> dict[str, Any]:
    """Keyword arguments for `APIClient.create_host_config`; pure, so it is testable alone."""
    import docker.types

    opts = launch.options
    args: dict[str, Any] = {
        "binds": {path: {"bind": path, "mode": "rw"} for path in mounted_paths(launch)},
        "privileged": opts.get("privileged") is True,
        "init": opts.get("init", True) is not False,
    }
    if launch.memory > 0:
        # memory-swap equal to memory: no swap, so a task over its limit is OOM-killed.
        args["mem_limit"] = launch.memory
        args["memswap_limit"] = launch.memory
    if launch.cpus > 0:
        args["nano_cpus"] = int(launch.cpus * 1e9)
    gpus = opts.get("gpus")
    if isinstance(gpus, (list, tuple)) and gpus:
        args["device_requests"] = [
            docker.types.DeviceRequest(device_ids=[str(g) for g in gpus], capabilities=[["gpu"]])
        ]
    network = opts.get("network")
    if isinstance(network, str) and network:
        args["network_mode"] = network
    return args


class DockerExecutor(Executor):
    """Runs attempts as containers on one Docker daemon (DOCKER_HOST or the default socket)."""

    runtime = "docker"

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
        image = launch.options.get("image")
        if not isinstance(image, str) or not image:
            raise LaunchError(f"task {launch.task_name!r}: runtime docker needs an `image`")
        api = self._api()
        parent = None
        if self._cgroup_version is not None:
            parent = docker_cgroup.parent_for(launch.run_id, launch.attempt_id, uuid.uuid4().hex[:8])
        ident = self._create(api, launch, image, parent)
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

    def _create(self, api: Any, launch: Launch, image: str, parent: str | None) -> str:
        import docker.errors

        host_args = host_config_args(launch)
        if parent is not None:
            host_args["cgroup_parent"] = parent
        kwargs = {
            "image": image,
            "command": list(launch.argv),
            "environment": {**launch.env, **init_env(host_args["init"])},
            "working_dir": launch.workdir,
            "user": str(launch.options.get("user") or f"{os.getuid()}:{os.getgid()}"),
            "labels": container_labels(launch),
            "volumes": mounted_paths(launch),
            "host_config": api.create_host_config(**host_args),
        }
        try:
            return self._create_once(api, launch, kwargs)
        except docker.errors.ImageNotFound:
            if not self._load_tar(api, launch, image):
                raise LaunchError(self._missing_image(launch, image)) from None
        try:
            return self._create_once(api, launch, kwargs)
        except docker.errors.ImageNotFound:
            tar = launch.options.get("image_tar")
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
        tar = launch.options.get("image_tar")
        if not isinstance(tar, str) or not tar or tar in self._loaded_tars:
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
        tar = launch.options.get("image_tar")
        if isinstance(tar, str) and tar:
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
        if state.get("Running") or state.get("Status") in ("created", "restarting"):
            return None
        code = int(state.get("ExitCode", -1))
        oom = bool(state.get("OOMKilled"))
        self._copy_logs(api, tracked)
        self._remove(tracked.container)
        usage = self._usage(tracked.cgroup_parent)
        return Facts(
            exit_code=code,
            signal=_signal_of(code, oom, tracked.signalled),
            ended=time.time(),
            oom_killed=oom,
            peak_memory=usage.peak_memory,
            cpu_seconds=usage.cpu_seconds,
            missing_outputs=_missing_outputs(tracked.launch) if code == 0 else (),
            detail=str(state.get("Error") or ""),
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
        os.makedirs(os.path.dirname(launch.stdout_path), mode=0o700, exist_ok=True)
        for path, out in streams:
            with open(path, "ab") as sink:
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


def _signal_of(code: int, oom: bool, signalled: int | None) -> int | None:
    """The signal behind a 128+N exit, when we know one was sent: by us, or the OOM killer."""
    if oom and code == 128 + signals.SIGKILL:
        return int(signals.SIGKILL)
    if signalled is not None and code == 128 + signalled:
        return signalled
    return None


def _missing_outputs(launch: Launch) -> tuple[str, ...]:
    def present(path: str) -> bool:
        try:
            if os.path.isdir(path):
                with os.scandir(path) as entries:
                    return any(True for _ in entries)
            return os.path.getsize(path) > 0
        except OSError:
            return False

    return tuple(p for p in launch.outputs if not present(p))
