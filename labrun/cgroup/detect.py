"""Which mechanism can confine an attempt on this machine, decided from the kernel's files.

Order: cgroup v2 written directly (root, or a delegated writable subtree), cgroup v1
written directly (root), `systemd-run --user --scope` (a user with a systemd user
manager on v2), else "none" with a reason the user can act on.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass

from labrun.cgroup.common import CGROUP_ROOT, read_pids, read_text
from labrun.cgroup.v2 import own_cgroup

# Which file proves a v1 hierarchy carries a controller (hierarchies may be co-mounted
# under any name, e.g. "cpu,cpuacct", so the directory name is not trusted).
_V1_MARKERS = {
    "memory": "memory.limit_in_bytes",
    "cpu": "cpu.cfs_quota_us",
    "cpuacct": "cpuacct.usage",
    "cpuset": "cpuset.cpus",
}


@dataclass(frozen=True)
class Support:
    """The outcome of detection. `mechanism` is what gets recorded on each attempt."""

    mechanism: str  # "cgroup-v2" | "cgroup-v1" | "systemd-run" | "none"
    reason: str  # one line for `labrun check`: why this mechanism, or why none
    root: str = CGROUP_ROOT
    base: str = ""  # v2 and systemd-run: the cgroup directory labrun's cgroups go under
    hierarchies: tuple[tuple[str, str], ...] = ()  # v1: (controller, hierarchy directory)
    notes: tuple[str, ...] = ()  # what works only in part here (no swap accounting, ...)

    @property
    def ok(self) -> bool:
        return self.mechanism != "none"

    @property
    def hierarchy_map(self) -> dict[str, str]:
        return dict(self.hierarchies)


def detect(
    root: str = CGROUP_ROOT,
    *,
    euid: int | None = None,
    proc_self_cgroup: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Support:
    """Detect the mechanism. The keyword arguments exist so tests can describe a machine."""
    euid = os.geteuid() if euid is None else euid
    if proc_self_cgroup is None:
        proc_self_cgroup = read_text("/proc/self/cgroup") or ""
    environ = os.environ if environ is None else environ
    if os.path.isfile(os.path.join(root, "cgroup.controllers")):
        return _detect_v2(root, euid, own_cgroup(proc_self_cgroup) or "/", environ)
    if os.path.isdir(root):
        hierarchies = _v1_hierarchies(root)
        if "memory" in hierarchies:
            return _detect_v1(root, euid, hierarchies)
    return Support(
        "none",
        f"no cgroup file system at {root} (neither cgroup2 nor a v1 memory hierarchy); "
        "limits and OOM detection are best-effort (process runtime)",
        root=root,
    )


def _detect_v2(root: str, euid: int, own: str, environ: Mapping[str, str]) -> Support:
    base, why_not = _writable_v2_base(root, own)
    if base is not None:
        who = "root" if base == root else "a delegated subtree"
        return Support("cgroup-v2", f"cgroup v2: {who} writable at {base}", root, base, notes=_v2_notes(base))
    if euid != 0:
        return _detect_systemd(root, euid, environ, why_not)
    return Support("none", f"cgroup v2 at {root} is not usable: {why_not}", root)


def _writable_v2_base(root: str, own: str) -> tuple[str | None, str]:
    """The topmost cgroup from root down to our own parent that we may manage, or why none."""
    parts = [p for p in own.strip("/").split("/") if p]
    candidates = [root] + [os.path.join(root, *parts[:i]) for i in range(1, len(parts))]
    why_not = f"{root} is not writable (run as root, or use a delegated cgroup)"
    for d in candidates:
        control = os.path.join(d, "cgroup.subtree_control")
        if not (os.access(d, os.W_OK) and os.access(control, os.W_OK)):
            continue
        available = set((read_text(os.path.join(d, "cgroup.controllers")) or "").split())
        enabled = set((read_text(control) or "").split())
        missing = {"memory", "cpu"} - available
        if missing:
            why_not = f"controller(s) {', '.join(sorted(missing))} not available in {d}"
            continue
        # The no-internal-process rule: a non-root cgroup with processes of its own cannot
        # enable controllers for children (only the root, which has no cgroup.type, can).
        internal = os.path.exists(os.path.join(d, "cgroup.type")) and read_pids(
            os.path.join(d, "cgroup.procs")
        )
        if internal and not {"memory", "cpu"} <= enabled:
            why_not = f"processes live directly in {d}, so it cannot enable controllers"
            continue
        return d, ""
    return None, why_not


def _v2_notes(base: str) -> tuple[str, ...]:
    notes = []
    available = set((read_text(os.path.join(base, "cgroup.controllers")) or "").split())
    if "cpuset" not in available:
        notes.append(f"cpuset controller not available in {base}: CPU pinning is not possible")
    return tuple(notes)


def _detect_systemd(root: str, euid: int, environ: Mapping[str, str], why_not: str) -> Support:
    if shutil.which("systemd-run") is None:
        return Support("none", f"cgroup v2: {why_not}, and systemd-run is not installed", root)
    runtime_dir = environ.get("XDG_RUNTIME_DIR", f"/run/user/{euid}")
    if not os.path.exists(os.path.join(runtime_dir, "systemd", "private")):
        return Support(
            "none",
            f"cgroup v2: {why_not}, and no systemd user manager for uid {euid} "
            f"({runtime_dir}/systemd/private missing; log in through a PAM session "
            "or run `loginctl enable-linger`)",
            root,
        )
    base = os.path.join(root, "user.slice", f"user-{euid}.slice", f"user@{euid}.service")
    delegated = read_text(os.path.join(base, "cgroup.controllers"))
    if delegated is not None and "memory" not in delegated.split():
        return Support(
            "none",
            f"systemd does not delegate the memory controller to user@{euid}.service "
            "(add Delegate=memory cpu in a drop-in for user@.service)",
            root,
        )
    notes: tuple[str, ...] = ()
    if delegated is not None and "cpu" not in delegated.split():
        notes = (f"cpu controller not delegated to user@{euid}.service: cpus is not enforced",)
    return Support("systemd-run", "systemd-run --user --scope", root, base, notes=notes)


def _detect_v1(root: str, euid: int, hierarchies: dict[str, str]) -> Support:
    memory = hierarchies["memory"]
    if euid != 0 or not os.access(memory, os.W_OK):
        return Support(
            "none",
            f"cgroup v1 at {root} needs root to create cgroups (and systemd-run --user "
            "cannot limit memory on v1); run as root or use the process runtime",
            root,
        )
    notes = []
    if not os.path.exists(os.path.join(memory, "memory.memsw.limit_in_bytes")):
        notes.append("no swap accounting (memory.memsw.*): swap use is not limited")
    oom = read_text(os.path.join(memory, "memory.oom_control")) or ""
    if "oom_kill " not in oom:
        notes.append("kernel older than 4.13: no oom_kill counter, OOM kills cannot be proven")
    missing = [c for c in _V1_MARKERS if c not in hierarchies]
    if missing:
        notes.append(f"v1 hierarchies not mounted: {', '.join(missing)}")
    pairs = tuple(sorted(hierarchies.items()))
    return Support("cgroup-v1", f"cgroup v1 at {root}, as root", root, hierarchies=pairs, notes=tuple(notes))


def _v1_hierarchies(root: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in sorted(os.listdir(root)):
        path = os.path.realpath(os.path.join(root, entry))
        if not os.path.isdir(path):
            continue
        for controller, marker in _V1_MARKERS.items():
            if controller not in found and os.path.exists(os.path.join(path, marker)):
                found[controller] = path
    return found
