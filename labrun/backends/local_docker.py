"""This machine's Docker containers, reached without a runner: `cancel` of a dead run, the
orphan sweep on resume and in `labrun gc`.

Only containers labelled with this state directory's id (`labrun.state`, see
labrun/state_id.py) are ever listed, signalled or removed: another installation on the
same daemon has the same attempt ids. A container without that label is not ours. A state
directory that never made a container has no id, and then nothing is asked of the daemon.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection
from typing import Any

from labrun import docker_args, state_id
from labrun.docker_args import ATTEMPT_LABEL
from labrun.executors import docker_cgroup


class Containers:
    """This state directory's containers on one daemon (DOCKER_HOST or the default socket)."""

    def __init__(self, state_dir: str, base_url: str | None = None) -> None:
        self._state_dir = state_dir
        self._base_url = base_url
        self._client: Any = None

    def _api(self) -> Any:
        if self._client is None:
            from labrun.executors.docker_daemon import connect

            self._client = connect(self._base_url, timeout=30.0)
        return self._client

    def _list(self, attempt_id: int | None, everything: bool) -> list[dict[str, Any]]:
        state = state_id.read(self._state_dir)
        if state is None:
            return []  # this state directory never made a container
        return list(self._api().containers(all=everything, filters=docker_args.ours(state, attempt_id)))

    def of(self, attempt_id: int, everything: bool) -> list[str]:
        """Ids of the attempt's containers (running ones only unless `everything`)."""
        return [str(c["Id"]) for c in self._list(attempt_id, everything)]

    def kill(self, attempt_id: int, signum: int) -> None:
        import docker.errors

        for container in self.of(attempt_id, everything=False):
            with contextlib.suppress(docker.errors.APIError):  # it ended meanwhile
                self._api().kill(container, signal=int(signum))

    def remove(self, attempt_id: int) -> list[str]:
        """Remove the attempt's containers, running or not; one description each."""
        found = self.of(attempt_id, everything=True)
        for container in found:
            self._remove(container)
        return [f"container {c[:12]} of attempt {attempt_id}" for c in found]

    def orphans(self, live: Callable[[], Collection[int]]) -> list[str]:
        """Remove this directory's containers whose attempt is not in `live()`, read after
        the listing: a container a live runner just made has its attempt committed before."""
        found = self._list(None, everything=True)
        if not found:
            return []
        keep = live()
        removed = []
        for container in found:
            labels = container.get("Labels") or {}
            attempt = str(labels.get(ATTEMPT_LABEL, ""))
            if attempt.isdigit() and int(attempt) in keep:
                continue
            self._remove(str(container["Id"]))
            removed.append(
                f"container {str(container['Id'])[:12]} ({container.get('State', '?')}) of run "
                f"{labels.get('labrun.run', '?')}, task {labels.get('labrun.task', '?')}, "
                f"attempt {labels.get('labrun.attempt', '?')} (attempt id {attempt or '?'})"
            )
        return removed

    def _remove(self, container: str) -> None:
        """Remove a container and the cgroup parent labrun gave it (docker_cgroup)."""
        import docker.errors

        api = self._api()
        try:
            parent = api.inspect_container(container)["HostConfig"].get("CgroupParent") or ""
            api.remove_container(container, force=True)
        except docker.errors.NotFound:
            return
        version = self._cgroup_version() if parent.startswith(f"/{docker_cgroup.PARENT}/") else None
        if version is not None:
            docker_cgroup.remove(parent, version)  # still busy: left, as a live executor would

    def _cgroup_version(self) -> str | None:
        """The cgroup version when labrun's per-container parents are this machine's to remove."""
        from labrun.executors.docker_daemon import daemon_url

        info = self._api().info()
        version = str(info.get("CgroupVersion") or "1")
        usable = docker_cgroup.usable(str(info.get("CgroupDriver")), version, daemon_url(self._base_url))
        return version if usable else None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
