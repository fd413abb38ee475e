"""cgroup v2 written directly: root, or a delegated writable subtree.

Layout: <base>/labrun/<name>, where <base> is the hierarchy root for root, or the
delegated cgroup for a user. Controllers are enabled top-down in each ancestor's
cgroup.subtree_control, which the kernel allows only where no process lives directly
(the root cgroup is exempt), so <base>/labrun never holds processes itself.
"""

from __future__ import annotations

import os
import signal

from labrun.cgroup.common import (
    CGROUP_ROOT,
    CPU_PERIOD_US,
    PARENT,
    AttemptCgroup,
    CgroupError,
    Limits,
    Usage,
    check_name,
    cpu_quota_us,
    parse_keyed,
    proc_cgroups,
    read_int,
    read_text,
    rmdir_retry,
    signal_pids,
    write,
)

MECHANISM = "cgroup-v2"


def needed_controllers(limits: Limits) -> list[str]:
    # memory always: it carries the OOM counter and the peak even without a limit.
    wanted = ["memory"]
    if limits.cpus is not None:
        wanted.append("cpu")
    if limits.cpuset is not None:
        wanted.append("cpuset")
    return wanted


def enable_controllers(directory: str, controllers: list[str]) -> None:
    """Enable controllers for directory's children unless they already are."""
    control = os.path.join(directory, "cgroup.subtree_control")
    enabled = set((read_text(control) or "").split())
    missing = [c for c in controllers if c not in enabled]
    if not missing:
        return
    available = set((read_text(os.path.join(directory, "cgroup.controllers")) or "").split())
    absent = [c for c in missing if c not in available]
    if absent:
        raise CgroupError(
            f"controller(s) {', '.join(absent)} not available in {directory} "
            f"(cgroup.controllers: {' '.join(sorted(available)) or 'empty'}); enable them in "
            "the parent's cgroup.subtree_control, or ask for delegation of them"
        )
    write(control, " ".join(f"+{c}" for c in missing))


def ensure_parent(base: str, controllers: list[str]) -> str:
    parent = os.path.join(base, PARENT)
    enable_controllers(base, controllers)
    try:
        os.mkdir(parent)
    except FileExistsError:
        pass
    except OSError as e:
        raise CgroupError(f"cannot create {parent}: {e.strerror}") from e
    enable_controllers(parent, controllers)
    return parent


class V2Cgroup(AttemptCgroup):
    """One attempt's cgroup in a v2 hierarchy, or a reader over an existing v2 directory."""

    mechanism = MECHANISM

    def __init__(self, path: str, root: str = CGROUP_ROOT) -> None:
        self.path = path
        self.root = root  # the hierarchy's mount: /proc/self/cgroup paths are relative to it
        self.name = os.path.basename(path)

    @classmethod
    def create(cls, base: str, name: str, limits: Limits, root: str = CGROUP_ROOT) -> V2Cgroup:
        check_name(name)
        parent = ensure_parent(base, needed_controllers(limits))
        path = os.path.join(parent, name)
        try:
            os.mkdir(path)
        except FileExistsError:
            # A leftover from a crashed runner with the same name: start from a clean slate.
            cls(path, root).remove()
            os.mkdir(path)
        except OSError as e:
            raise CgroupError(f"cannot create {path}: {e.strerror}") from e
        made = cls(path, root)
        try:
            made.apply(limits)
        except BaseException:
            made.remove()
            raise
        return made

    @classmethod
    def open(cls, base: str, name: str, root: str = CGROUP_ROOT) -> V2Cgroup | None:
        """The existing cgroup of an attempt (adoption after a runner crash), or None."""
        path = os.path.join(base, PARENT, check_name(name))
        return cls(path, root) if os.path.isdir(path) else None

    def apply(self, limits: Limits) -> None:
        if limits.memory is not None:
            write(self._file("memory.max"), str(limits.memory))
            # Absent when the kernel keeps no swap accounting; then there is no swap to limit.
            if os.path.exists(self._file("memory.swap.max")):
                write(self._file("memory.swap.max"), "0")
        if limits.cpus is not None:
            write(self._file("cpu.max"), f"{cpu_quota_us(limits.cpus)} {CPU_PERIOD_US}")
        if limits.cpuset is not None:
            write(self._file("cpuset.cpus"), limits.cpuset)

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def procs_files(self) -> tuple[str, ...]:
        return (self._file("cgroup.procs"),)

    def home_procs_files(self) -> tuple[str, ...]:
        own = proc_cgroups(read_text("/proc/self/cgroup") or "").get("")
        if own is None:
            raise CgroupError("this process is in no cgroup v2 (/proc/self/cgroup has no 0:: line)")
        return (os.path.join(self.root, own.lstrip("/"), "cgroup.procs"),)

    def usage(self) -> Usage:
        return usage_from_files(
            read_text(self._file("memory.events")),
            read_text(self._file("memory.peak")),
            read_text(self._file("cpu.stat")),
        )

    def current_memory(self) -> int | None:
        return read_int(self._file("memory.current"))

    def kill(self, signum: int) -> None:
        kill_file = self._file("cgroup.kill")
        if signum == signal.SIGKILL and os.path.exists(kill_file):
            # Linux 5.14+: the kernel kills the whole subtree, racing forks included.
            write(kill_file, "1")
            return
        signal_pids(self._file("cgroup.procs"), signum, 20 if signum == signal.SIGKILL else 1)

    def remove(self, timeout: float = 2.0) -> None:
        rmdir_retry(self.path, timeout, kill=lambda: self.kill(signal.SIGKILL))


def usage_from_files(events: str | None, peak: str | None, cpu_stat: str | None) -> Usage:
    """Usage from the text of memory.events, memory.peak and cpu.stat (None: file absent).

    Only `oom_kill` counts: `oom` also counts OOM situations that reclaim resolved
    without killing anything.
    """
    oom_kills = parse_keyed(events).get("oom_kill", 0) if events is not None else None
    peak_memory = int(peak.split()[0]) if peak and peak.strip() else None
    usec = parse_keyed(cpu_stat).get("usage_usec") if cpu_stat is not None else None
    return Usage(
        oom_kills=oom_kills,
        peak_memory=peak_memory,
        cpu_seconds=usec / 1e6 if usec is not None else None,
    )


def own_cgroup(proc_cgroup_text: str) -> str | None:
    """The v2 path ("0::/a/b") from the text of /proc/<pid>/cgroup."""
    return proc_cgroups(proc_cgroup_text).get("")
