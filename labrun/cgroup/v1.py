"""cgroup v1 written directly (root): one directory per hierarchy that is needed.

Layout: <hierarchy>/labrun/<name> in memory and cpuacct always (the OOM counter, the
peak and CPU time), in cpu when `cpus` is limited and in cpuset when pinned. Where cpu
and cpuacct are co-mounted ("cpu,cpuacct") they are one directory, made once.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

from labrun.cgroup.common import (
    CPU_PERIOD_US,
    PARENT,
    AttemptCgroup,
    CgroupError,
    Limits,
    Usage,
    check_name,
    cpu_quota_us,
    proc_cgroups,
    read_int,
    read_keyed,
    read_pids,
    read_text,
    rmdir_retry,
    signal_pids,
    write,
)

MECHANISM = "cgroup-v1"
REUSE_MAX_CHARGE = 4 << 20  # bytes an idle cgroup may keep charged (kernel objects, cache) and be reused


def wanted_controllers(limits: Limits) -> list[str]:
    wanted = ["memory", "cpuacct"]
    if limits.cpus is not None:
        wanted.append("cpu")
    if limits.cpuset is not None:
        wanted.append("cpuset")
    return wanted


def needed_hierarchies(hierarchies: Mapping[str, str], limits: Limits) -> dict[str, str]:
    """controller -> hierarchy mount directory, for the controllers this attempt needs."""
    wanted = wanted_controllers(limits)
    missing = [c for c in wanted if c not in hierarchies]
    if missing:
        raise CgroupError(
            f"cgroup v1 hierarchy for {', '.join(missing)} is not mounted under the cgroup "
            "root; mount it (mount -t cgroup -o <controller> none /sys/fs/cgroup/<controller>) "
            "or drop the limit that needs it"
        )
    return {c: hierarchies[c] for c in wanted}


def _mkdir(path: str) -> bool:
    try:
        os.mkdir(path)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        raise CgroupError(f"cannot create {path}: {e.strerror}") from e


def _ensure_cpuset_parent(mount: str) -> str:
    # A new v1 cpuset starts with no CPUs and no memory nodes, and refuses processes until
    # both are set: give the parent those of the hierarchy's root.
    parent = os.path.join(mount, PARENT)
    if _mkdir(parent) or not (read_text(os.path.join(parent, "cpuset.mems")) or "").strip():
        for key in ("cpuset.cpus", "cpuset.mems"):
            value = (read_text(os.path.join(mount, key)) or "").strip()
            write(os.path.join(parent, key), value)
    return parent


class V1Cgroup(AttemptCgroup):
    """One attempt's directories across the v1 hierarchies it needs."""

    mechanism = MECHANISM
    reusable = True
    # One thread moves: other threads of the runner stay where they are, and it is no
    # slower than moving the process (0.10-0.14 ms against 0.16-0.19 ms in and out of 3
    # hierarchies under load, equal when idle: bench/cgroup_moves.py).
    self_file = "tasks"

    def __init__(self, name: str, dirs: Mapping[str, str]) -> None:
        self.name = name
        self.dirs = dict(dirs)  # controller -> directory (co-mounted ones share a directory)
        self.limits: Limits | None = None  # as last applied; None: unknown (opened, not made)
        self.oom_base = 0  # the kernel's OOM-kill count when this attempt began (reuse)

    @classmethod
    def create(cls, hierarchies: Mapping[str, str], name: str, limits: Limits) -> V1Cgroup:
        check_name(name)
        dirs: dict[str, str] = {}
        made = cls(name, dirs)
        try:
            for controller, mount in needed_hierarchies(hierarchies, limits).items():
                if controller == "cpuset":
                    parent = _ensure_cpuset_parent(mount)
                else:
                    parent = os.path.join(mount, PARENT)
                    _mkdir(parent)
                path = os.path.join(parent, name)
                if path not in dirs.values() and not _mkdir(path):
                    # A leftover from a crashed runner with the same name: clear it first.
                    cls(name, {controller: path}).remove()
                    _mkdir(path)
                dirs[controller] = path
                made.dirs = dict(dirs)
            made.apply(limits)
            made.limits = limits
        except BaseException:
            made.remove()
            raise
        return made

    @classmethod
    def open(cls, hierarchies: Mapping[str, str], name: str) -> V1Cgroup | None:
        """The existing cgroup of an attempt (adoption after a runner crash), or None.

        A cgroup the runner reused served earlier attempts too: its usage() then counts
        OOM kills since it was made (the count at the attempt's start died with the
        runner); peak and CPU time are the last attempt's (reset when it began).
        """
        check_name(name)
        dirs = {
            c: os.path.join(m, PARENT, name)
            for c, m in hierarchies.items()
            if c in ("memory", "cpuacct", "cpu", "cpuset")
        }
        dirs = {c: d for c, d in dirs.items() if os.path.isdir(d)}
        return cls(name, dirs) if "memory" in dirs else None

    def apply(self, limits: Limits) -> None:
        if limits.memory is not None:
            mem = self.dirs["memory"]
            write(os.path.join(mem, "memory.limit_in_bytes"), str(limits.memory))
            # memory+swap: present only with swap accounting; must be set after (>=) memory.
            memsw = os.path.join(mem, "memory.memsw.limit_in_bytes")
            if os.path.exists(memsw):
                write(memsw, str(limits.memory))
        if limits.cpus is not None:
            cpu = self.dirs["cpu"]
            write(os.path.join(cpu, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
            write(os.path.join(cpu, "cpu.cfs_quota_us"), str(cpu_quota_us(limits.cpus)))
        if limits.cpuset is not None:
            cs = self.dirs["cpuset"]
            mems = read_text(os.path.join(os.path.dirname(cs), "cpuset.mems")) or ""
            write(os.path.join(cs, "cpuset.mems"), mems.strip())
            write(os.path.join(cs, "cpuset.cpus"), limits.cpuset)

    def reuse(self, limits: Limits) -> bool:
        """Make this idle cgroup ready for the next attempt, as if new.

        False when `limits` need other hierarchies. CgroupError when it holds a process, or
        REUSE_MAX_CHARGE bytes or more stay charged to it (page cache an earlier attempt
        left, which v1 keeps charged here and which would count into the next attempt's
        peak): remove it then. Limits are rewritten only where they differ (the CPU quota
        always); the peak and CPU time are reset; the OOM-kill counter cannot be, so
        usage() counts from here.
        """
        if self.limits is None or set(self.dirs) != set(wanted_controllers(limits)):
            return False
        memory = self.dirs["memory"]
        left = read_pids(os.path.join(memory, "cgroup.procs"))
        if left:
            raise CgroupError(f"{memory} still holds processes {left}: remove it instead")
        charged = read_int(os.path.join(memory, "memory.usage_in_bytes")) or 0
        if charged > REUSE_MAX_CHARGE:
            raise CgroupError(f"{memory} keeps {charged} bytes charged: remove it instead")
        if limits != self.limits:
            self._reapply(self.limits, limits)
            self.limits = limits
        if limits.cpus is not None:
            # Always, also unchanged: writing the quota refills its budget for this period
            # and unthrottles, as a new cgroup starts. Otherwise the next attempt would
            # inherit what the last one left of the period, and back-to-back short attempts
            # share one quota (measured: 3.4 ms per `true` at cpus = 0.25, against 2.0).
            write(os.path.join(self.dirs["cpu"], "cpu.cfs_quota_us"), str(cpu_quota_us(limits.cpus)))
        write(os.path.join(memory, "memory.max_usage_in_bytes"), "0")  # 0: from usage now
        if "cpuacct" in self.dirs:
            write(os.path.join(self.dirs["cpuacct"], "cpuacct.usage"), "0")
        keyed = read_keyed(os.path.join(memory, "memory.oom_control")) or {}
        self.oom_base = keyed.get("oom_kill", 0)
        return True

    def _reapply(self, old: Limits, new: Limits) -> None:
        if new.memory != old.memory:
            mem = self.dirs["memory"]
            value = str(new.memory) if new.memory is not None else "-1"
            memsw = os.path.join(mem, "memory.memsw.limit_in_bytes")
            files = [os.path.join(mem, "memory.limit_in_bytes")]
            if os.path.exists(memsw):  # only with swap accounting; it must stay >= memory
                growing = old.memory is not None and (new.memory is None or new.memory > old.memory)
                files.insert(0 if growing else 1, memsw)
            for path in files:
                write(path, value)
        if new.cpuset != old.cpuset and new.cpuset is not None:
            write(os.path.join(self.dirs["cpuset"], "cpuset.cpus"), new.cpuset)

    @property
    def procs_files(self) -> tuple[str, ...]:
        # memory first: pids() reads the first file.
        ordered = sorted(set(self.dirs.values()), key=lambda d: d != self.dirs.get("memory"))
        return tuple(os.path.join(d, "cgroup.procs") for d in ordered)

    def home_procs_files(self) -> tuple[str, ...]:
        # thread-self: with `tasks` it is the calling thread that moves and comes home
        own = proc_cgroups(read_text("/proc/thread-self/cgroup") or "")
        homes = []
        for procs in self.procs_files:
            directory = os.path.dirname(procs)
            controller = next(c for c, d in self.dirs.items() if d == directory)
            mount = os.path.dirname(os.path.dirname(directory))
            if controller not in own:
                raise CgroupError(f"/proc/self/cgroup names no {controller} hierarchy")
            homes.append(os.path.join(mount, own[controller].lstrip("/"), "cgroup.procs"))
        return tuple(homes)

    def _file(self, controller: str, name: str) -> str | None:
        d = self.dirs.get(controller)
        return os.path.join(d, name) if d else None

    def usage(self) -> Usage:
        oom_control = self._file("memory", "memory.oom_control")
        # memory.failcnt counts hits of the limit, also those reclaim resolved: no OOM proof.
        keyed = read_keyed(oom_control) if oom_control else None
        peak = self._file("memory", "memory.max_usage_in_bytes")
        cpu = self._file("cpuacct", "cpuacct.usage")
        cpu_ns = read_int(cpu) if cpu else None
        kills = keyed.get("oom_kill") if keyed is not None else None
        return Usage(
            oom_kills=kills - self.oom_base if kills is not None else None,
            peak_memory=read_int(peak) if peak else None,
            cpu_seconds=cpu_ns / 1e9 if cpu_ns is not None else None,
        )

    def current_memory(self) -> int | None:
        usage = self._file("memory", "memory.usage_in_bytes")
        return read_int(usage) if usage else None

    def kill(self, signum: int) -> None:
        if "memory" in self.dirs:
            rounds = 20 if signum == signal.SIGKILL else 1
            signal_pids(os.path.join(self.dirs["memory"], "cgroup.procs"), signum, rounds)

    def remove(self, timeout: float = 2.0) -> None:
        # memory first: its procs file is the one kill() reads.
        for procs in self.procs_files:
            rmdir_retry(os.path.dirname(procs), timeout, kill=lambda: self.kill(signal.SIGKILL))
