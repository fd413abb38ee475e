"""Talking to dockerd: connecting, the die-event watcher, and the errors that say how to fix it.

The `docker` SDK is imported here, lazily, so that `import labrun` stays cheap and works
on machines without it until a job actually asks for `runtime = "docker"`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

from labrun.executors.base import Waker
from labrun.model import LaunchError

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
__all__ = ["DieWatcher", "connect", "daemon_url", "unreachable_message"]


def daemon_url(base_url: str | None) -> str:
    """The address the SDK will use, for error messages."""
    return base_url or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def connect(base_url: str | None, timeout: float = 60.0) -> Any:
    """A low-level APIClient speaking the daemon's API version, or LaunchError saying why not."""
    import docker
    import docker.errors

    url = daemon_url(base_url)
    try:
        # version="auto" asks the daemon, so an unreachable daemon fails here, not mid-run.
        return docker.APIClient(base_url=url, version="auto", timeout=timeout)
    except docker.errors.DockerException as exc:
        raise LaunchError(unreachable_message(url, exc)) from exc


def unreachable_message(url: str, exc: BaseException) -> str:
    text = str(exc)
    if "Permission denied" in text or isinstance(exc.__cause__, PermissionError):
        fix = "add yourself to the docker group: `sudo usermod -aG docker $USER`, then log in again"
    elif url == DEFAULT_SOCKET:
        fix = "start it: `sudo systemctl start docker`"
    else:
        fix = f"start a daemon listening there (`dockerd -H {url}`) or set DOCKER_HOST"
    return f"cannot reach the Docker daemon at {url} ({text}); {fix}"


class DieWatcher:
    """A thread reading the daemon's event stream; wakes the runner when a container with
    `label` (`labrun.state=<id>`: this state directory's) dies.

    It keeps the ids of containers that died; `take()` hands them over. If the stream
    breaks (daemon restarted) it reconnects from where it stopped and flags `resync`, so
    the executor re-inspects what it tracks instead of trusting that no event was missed.
    """

    def __init__(self, base_url: str | None, waker: Waker | None, label: str) -> None:
        self._base_url = base_url
        self._label = label
        self._waker = waker
        self._lock = threading.Lock()
        self._died: set[str] = set()
        self._resync = False
        self._stream: Any = None
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labrun-docker-events", daemon=True)
        self._thread.start()
        # Containers started before the subscription is live would die unseen.
        self._ready.wait(timeout=10.0)

    def take(self) -> tuple[set[str], bool]:
        """(ids that died since the last call, whether the stream broke in between)."""
        with self._lock:
            died, resync = self._died, self._resync
            self._died, self._resync = set(), False
        return died, resync

    def mark_resync(self) -> None:
        """Make the next `take` ask for a re-inspection of everything tracked."""
        with self._lock:
            self._resync = True

    def close(self) -> None:
        self._closed.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        since: int | None = None
        while not self._closed.is_set():
            with contextlib.suppress(Exception):  # the daemon went away; retry below
                self._follow(since)
            self._ready.set()
            if self._closed.wait(1.0):
                return
            since = int(time.time()) - 1  # overlap: a duplicate die is harmless, a lost one is not
            with self._lock:
                self._resync = True
            self._wake()

    def _follow(self, since: int | None) -> None:
        import docker

        # A client of its own: requests sessions are not meant to be shared across threads.
        client = docker.APIClient(base_url=daemon_url(self._base_url), version="auto")
        filters = {"type": "container", "event": "die", "label": self._label}
        self._stream = client.events(since=since, filters=filters, decode=True)
        self._ready.set()
        for event in self._stream:
            ident = event.get("id") or event.get("Actor", {}).get("ID")
            if ident:
                with self._lock:
                    self._died.add(ident)
                self._wake()
            if self._closed.is_set():
                return

    def _wake(self) -> None:
        if self._waker is not None:
            self._waker.wake()
