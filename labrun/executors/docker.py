"""`runtime = "docker"`: each attempt in its own container, through the `docker` SDK.

It takes `model.DockerOptions`; the container is described and created by
`docker_create`. Every container carries the state directory's id (`labrun.state`,
labrun/state_id.py) beside its attempt id, and the executor sees, adopts and signals
only containers with its own id: another installation on the same daemon has the same
attempt ids.

The container is the attempt's exit record, so it outlives the runner until its outcome
is committed: `finished` reads its exit code and `State.OOMKilled` and copies its logs,
and only `committed` (called by the runner after the transaction that recorded the end)
removes it. A runner killed in between leaves the container, and the resume reads the
real exit from it instead of recording the attempt `lost`. A container that was created
but not started when a runner died is started by the resume that adopts it (`docker
start` of a started container does nothing, so it never runs twice).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from labrun import attempt_facts, docker_args, failpoint, private, state_id
from labrun.docker_args import ATTEMPT_LABEL, STATE_LABEL
from labrun.executors import docker_cgroup
from labrun.executors.base import Executor, Waker
from labrun.executors.docker_create import Creator, container_for
from labrun.executors.docker_daemon import DieWatcher, connect, daemon_url
from labrun.executors.sampling import SAMPLE_AFTER, SAMPLE_EVERY, Series
from labrun.model import DockerOptions, Facts, Launch, LaunchError, Runtime, Started, options_for


@dataclass(frozen=True)
class _Tracked:
    launch: Launch
    container: str
    cgroup_parent: str | None = None
    signalled: int | None = None


class DockerExecutor(Executor):
    """Runs attempts as containers on one Docker daemon (DOCKER_HOST or the default socket),
    for the state directory `state_dir` (its id labels every container)."""

    runtime = Runtime.DOCKER

    def __init__(self, waker: Waker | None = None, base_url: str | None = None, *, state_dir: str) -> None:
        self._waker = waker
        self._base_url = base_url
        self._state_dir = state_dir
        self._state = ""  # the state directory's id, read (or made) on first use
        self._client: Any = None
        self._watcher: DieWatcher | None = None
        self._creator = Creator(self.url)
        self._lock = threading.Lock()
        self._tracked: dict[int, _Tracked] = {}
        self._ended: dict[int, _Tracked] = {}  # collected, removed once their end is committed
        self._cgroup_version: str | None = None  # set when per-container parents work here
        self._stale_parents: list[str] = []
        # memory over time of the attempts started here with a cgroup parent to read
        self._series: dict[int, Series] = {}
        self._next_sample = math.inf

    @property
    def url(self) -> str:
        return daemon_url(self._base_url)

    def _api(self) -> Any:
        # Connected on first use: building an executor must not need a running daemon.
        if self._client is None:
            self._state = self._state_id()
            self._client = connect(self._base_url)
            self._watcher = DieWatcher(self._base_url, self._waker, f"{STATE_LABEL}={self._state}")
            info = self._client.info()
            version = str(info.get("CgroupVersion") or "1")
            if docker_cgroup.usable(str(info.get("CgroupDriver")), version, self.url):
                self._cgroup_version = version
        return self._client

    def _state_id(self) -> str:
        try:
            return state_id.ensure(self._state_dir)
        except OSError as exc:
            raise LaunchError(
                f"cannot record the state directory's id in {state_id.path_of(self._state_dir)} "
                f"({exc.strerror or exc}); make {self._state_dir} writable by this user"
            ) from None

    def start(self, launch: Launch) -> Started:
        image = options_for(launch, DockerOptions).image
        if not image:
            raise LaunchError(f"task {launch.task_name!r}: runtime docker needs an `image`")
        api = self._api()
        parent = None
        if self._cgroup_version is not None:
            parent = docker_cgroup.parent_for(launch.run_id, launch.attempt_id, uuid.uuid4().hex[:8])
        ident = self._creator.create(api, launch, container_for(launch, self._state), parent)
        with self._lock:
            self._tracked[launch.attempt_id] = _Tracked(launch, ident, parent)
        failpoint.reached("docker-created")  # a resume finds it `Created` and starts it
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
        if parent is not None:
            now = time.time()
            self._series[launch.attempt_id] = Series(now)
            self._next_sample = min(self._next_sample, now + SAMPLE_AFTER)
        return Started(ref=ident, mechanism="docker")

    def wake_at(self, now: float) -> float | None:
        return None if self._next_sample == math.inf else self._next_sample

    def tick(self, now: float) -> None:
        """Sample, in one round, what each running container's cgroup parent is charged
        (a file read each: no call to the daemon, whose stats take a second to answer)."""
        if self._next_sample > now or self._cgroup_version is None:
            return
        with self._lock:
            parents = [(a, t.cgroup_parent) for a, t in self._tracked.items() if a in self._series]
        for attempt_id, parent in parents:
            size = docker_cgroup.current_memory(parent, self._cgroup_version) if parent else None
            if size is not None:
                self._series[attempt_id].add(now, size)
        self._next_sample = now + SAMPLE_EVERY if parents else math.inf

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
                    self._ended[attempt_id] = tracked
                results.append((attempt_id, facts))
        return results

    def committed(self, attempt_ids: Sequence[int]) -> None:
        """The ends of these attempts are in the store: their containers may go now."""
        with self._lock:
            done = [t for t in (self._ended.pop(a, None) for a in attempt_ids) if t is not None]
        for tracked in done:
            self._remove(tracked.container)
            self._drop_parent(tracked.cgroup_parent)

    def _collect(self, tracked: _Tracked) -> Facts | None:
        """Facts about an ended container (kept until `committed`); None while it still runs."""
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
        usage = self._usage(tracked.cgroup_parent)
        series = self._series.pop(tracked.launch.attempt_id, None)
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
            memory_series=series.encode() if series is not None else None,
        )

    def _usage(self, parent: str | None) -> docker_cgroup.Usage:
        if parent is None or self._cgroup_version is None:
            return docker_cgroup.Usage(None, None)
        return docker_cgroup.read_usage(parent, self._cgroup_version)

    def _drop_parent(self, parent: str | None) -> None:
        """Remove a container's cgroup parent; busy ones are retried on later calls."""
        if self._cgroup_version is None:
            return
        pending = [*self._stale_parents, *([parent] if parent else [])]
        self._stale_parents = [p for p in pending if not docker_cgroup.remove(p, self._cgroup_version)]

    def _copy_logs(self, api: Any, tracked: _Tracked) -> None:
        """The container's whole logs, written afresh: a resume after a runner died between
        this copy and the commit copies them again, and must not append a second copy."""
        launch = tracked.launch
        streams = ((launch.stdout_path, True), (launch.stderr_path, False))
        private.makedirs(os.path.dirname(launch.stdout_path))
        for path, out in streams:
            with os.fdopen(private.open_fd(path, os.O_WRONLY | os.O_TRUNC), "wb") as sink:
                for chunk in api.logs(tracked.container, stdout=out, stderr=not out, stream=True):
                    sink.write(chunk)

    def _remove(self, container: str) -> None:
        """Remove a container; one the daemon cannot remove now is left to the orphan sweep
        (`labrun gc`, the next resume), never a reason to stop the run."""
        import docker.errors
        import requests

        with contextlib.suppress(docker.errors.APIError, requests.exceptions.ConnectionError):
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
        """Watch this state directory's container of the attempt: by the id the store
        recorded, else by its labels (spawned before the id was committed). One left
        `Created` by a runner that died before starting it is started now."""
        import docker.errors

        api = self._api()
        ident = started.ref or self._find(api, attempt_id)
        if not ident:
            return False
        try:
            info = api.inspect_container(ident)
        except docker.errors.NotFound:
            return False
        if not self._is_ours(info, attempt_id, recorded=bool(started.ref)):
            return False
        if _never_started(info["State"]) and not self._start_left(api, ident):
            return False
        parent = info["HostConfig"].get("CgroupParent") or None
        with self._lock:
            self._tracked[attempt_id] = _Tracked(launch, ident, parent)
        # It may have died before we subscribed; a wake makes the runner call `finished`,
        # which inspects it.
        self._force_check()
        return True

    def _is_ours(self, info: dict[str, Any], attempt_id: int, recorded: bool) -> bool:
        labels = info["Config"].get("Labels") or {}
        if labels.get(ATTEMPT_LABEL) != str(attempt_id):
            return False
        # A container id this store recorded is this directory's even from a labrun that
        # did not label the state yet; one found by labels must carry our id.
        return labels.get(STATE_LABEL) == self._state or (recorded and STATE_LABEL not in labels)

    def _start_left(self, api: Any, ident: str) -> bool:
        """Start a container a dead runner created; False (and removed) when it cannot be."""
        import docker.errors

        with contextlib.suppress(docker.errors.APIError):
            api.start(ident)  # 304 when the dead runner's own start got through: no second run
        try:
            state = api.inspect_container(ident)["State"]
        except docker.errors.NotFound:
            return False
        if _never_started(state):  # refused without a State.Error to report: run it afresh
            self._remove(ident)
            return False
        return True

    def _find(self, api: Any, attempt_id: int) -> str | None:
        found = api.containers(all=True, filters=docker_args.ours(self._state, attempt_id))
        return str(found[0]["Id"]) if found else None

    def _force_check(self) -> None:
        if self._watcher is not None:
            self._watcher.mark_resync()
        if self._waker is not None:
            self._waker.wake()

    def close(self) -> None:
        """Containers collected but not committed stay: the resume or `gc` deals with them."""
        if self._client is not None:
            self._drop_parent(None)
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        if self._client is not None:
            self._client.close()
            self._client = None


def _never_started(state: dict[str, Any]) -> bool:
    """`Created` and never tried: a runner died between creating and starting it."""
    return state.get("Status") == "created" and not state.get("Error")


def _still_running(state: dict[str, Any]) -> bool:
    """A container that runs, restarts, or waits to be started. One that was created and
    failed to start (`State.Error` set: a runner died before removing it) has ended."""
    if state.get("Running") or state.get("Status") == "restarting":
        return True
    return _never_started(state)
