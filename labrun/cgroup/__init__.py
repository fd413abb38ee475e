"""Per-attempt cgroups for the `cgroup` runtime: detect, create with limits, enter, read, remove.

Standard library only (shipped to remote nodes inside a stdlib-only agent).

    support = detect()                       # once per node
    cg = create(support, name, Limits(memory=..., cpus=..., cpuset=...))
    with cg.entered():                       # inside before the task's code runs
        Popen(cg.command(argv), ...)
    ... the attempt ends ...
    usage = cg.usage()                       # oom_kills, peak_memory, cpu_seconds
    cg.remove()                              # kills stragglers, rmdir

Mechanisms (recorded on the attempt as `cg.mechanism`): "cgroup-v2", "cgroup-v1",
"systemd-run". Errors are `CgroupError`, with the file and the kernel's complaint.
"""

from __future__ import annotations

from labrun.cgroup.common import AttemptCgroup, CgroupError, Limits, Usage
from labrun.cgroup.detect import Support, detect
from labrun.cgroup.systemd import SystemdScope
from labrun.cgroup.v1 import V1Cgroup
from labrun.cgroup.v2 import V2Cgroup


def create(support: Support, name: str, limits: Limits, usage_path: str = "") -> AttemptCgroup:
    """Make the attempt's cgroup with its limits (systemd-run: only prepares the wrapper).

    `usage_path` is needed for systemd-run only: where the scope's counters are copied.
    """
    if support.mechanism == "cgroup-v2":
        return V2Cgroup.create(support.base, name, limits, support.root)
    if support.mechanism == "cgroup-v1":
        return V1Cgroup.create(support.hierarchy_map, name, limits)
    if support.mechanism == "systemd-run":
        if not usage_path:
            raise CgroupError("systemd-run needs a usage_path to copy the scope's counters to")
        return SystemdScope(name, limits, usage_path, support.root)
    raise CgroupError(f"no cgroup mechanism on this machine: {support.reason}")


def open_existing(support: Support, name: str, usage_path: str = "") -> AttemptCgroup | None:
    """The cgroup of an attempt started by an earlier runner, or None if it is gone."""
    if support.mechanism == "cgroup-v2":
        return V2Cgroup.open(support.base, name, support.root)
    if support.mechanism == "cgroup-v1":
        return V1Cgroup.open(support.hierarchy_map, name)
    if support.mechanism == "systemd-run":
        return SystemdScope(name, Limits(), usage_path, support.root)
    return None


__all__ = [
    "AttemptCgroup",
    "CgroupError",
    "Limits",
    "Support",
    "Usage",
    "create",
    "detect",
    "open_existing",
]
