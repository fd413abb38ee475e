"""Peak memory and CPU time of a container, read from a cgroup parent labrun gives it.

A container's own cgroup is deleted as soon as it exits, before labrun can read it. So,
where the daemon uses the cgroupfs driver on this machine, each container gets its own
parent cgroup (`--cgroup-parent /labrun/<name>`); the parent's counters include the
container's (hierarchical accounting) and outlive it. labrun reads them after the exit
and removes the parent; while it runs, the parent's current charge is its memory series.
With the systemd driver, a remote daemon, or no permission to remove what dockerd
creates, this is off and peak memory, the series and CPU time stay unknown.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

CGROUP_ROOT = "/sys/fs/cgroup"
PARENT = "labrun"


@dataclass(frozen=True)
class Usage:
    peak_memory: int | None
    cpu_seconds: float | None


def usable(driver: str, version: str, url: str, root: str = CGROUP_ROOT) -> bool:
    """Whether per-container parents will work: local daemon, cgroupfs driver, root writable."""
    if driver != "cgroupfs" or not url.startswith("unix://"):
        return False
    top = root if version == "2" else os.path.join(root, "memory")
    return os.path.isdir(top) and os.access(top, os.W_OK)


def parent_for(run_id: int, attempt_id: int, container_tag: str) -> str:
    # The tag keeps two labrun state directories with the same attempt ids apart.
    return f"/{PARENT}/r{run_id}-a{attempt_id}-{container_tag}"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def read_usage(parent: str, version: str, root: str = CGROUP_ROOT) -> Usage:
    rel = parent.lstrip("/")
    if version == "2":
        peak = _read(os.path.join(root, rel, "memory.peak"))
        stat = _read(os.path.join(root, rel, "cpu.stat")) or ""
        usec = next((line.split()[1] for line in stat.splitlines() if line.startswith("usage_usec")), None)
        return Usage(int(peak) if peak else None, int(usec) / 1e6 if usec is not None else None)
    peak = _read(os.path.join(root, "memory", rel, "memory.max_usage_in_bytes"))
    nanos = _read(os.path.join(root, "cpuacct", rel, "cpuacct.usage"))
    return Usage(int(peak) if peak else None, int(nanos) / 1e9 if nanos else None)


def current_memory(parent: str, version: str, root: str = CGROUP_ROOT) -> int | None:
    """Bytes the container's parent is charged now (its container included), or None."""
    rel = parent.lstrip("/")
    if version == "2":
        text = _read(os.path.join(root, rel, "memory.current"))
    else:
        text = _read(os.path.join(root, "memory", rel, "memory.usage_in_bytes"))
    return int(text) if text and text.strip().isdigit() else None


def remove(parent: str, version: str, root: str = CGROUP_ROOT) -> bool:
    """Remove the parent everywhere dockerd made it; False when some directory is still busy."""
    rel = parent.lstrip("/")
    if version == "2":
        dirs = [os.path.join(root, rel)]
    else:
        dirs = [os.path.join(root, h, rel) for h in sorted(os.listdir(root))]
    done = True
    for path in dirs:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            try:
                os.rmdir(path)
            except OSError:
                done = False  # the container's own cgroup may still be going away
    return done
