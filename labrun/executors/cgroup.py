"""`runtime = "cgroup"`: the process runtime, with each attempt in its own cgroup.

Spawning, waking on exit (pidfd), logs, process groups and launch errors are the
process executor's; this adds the cgroup around each attempt. The runner forks the
attempt from inside the attempt's cgroup (`AttemptCgroup.entered` around the Popen
only), so the task never runs outside it. When the main process ends, the kernel's
counters are read (OOM kills anywhere in the cgroup, peak memory, CPU time of the whole
tree), and what is still in the cgroup is killed.

Where the mechanism allows (cgroup v1), an ended attempt's cgroup is kept and reused by
a later attempt, its limits rewritten and its counters started afresh (`reuse`): making
and removing one per attempt was most of the runtime's cost for short tasks. A cgroup
serves one attempt at a time; the idle ones are removed at close(), so none outlives
the run. Elsewhere each attempt's cgroup is removed when it ends.

Which mechanism is used ("cgroup-v1", "cgroup-v2", "systemd-run") is detected once, on
the first start, and recorded on every attempt as `Started.mechanism`.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Sequence

from labrun import attempt_facts
from labrun.cgroup import AttemptCgroup, CgroupError, Limits, Support, create, detect, open_existing
from labrun.cgroup.common import PARENT
from labrun.executors.base import Waker
from labrun.executors.process import ProcessExecutor, _Child, wrapped
from labrun.executors.procfs import stop_signal
from labrun.model import CgroupOptions, Facts, Launch, LaunchError, Runtime, Started, options_for
from labrun.paths import beside

POOL_MAX = 32  # idle cgroups kept for reuse; more than the attempts that ever run at once


def cgroup_name(token: str, serial: int) -> str:
    """Unique per cgroup, also across state directories (tests run several at once).

    A cgroup serves several attempts in turn, so the name is the runner's, not the
    attempt's: its pid (whose cgroups a leftover are is plain after a crash) and a random
    token (pids are reused)."""
    return f"p{os.getpid()}-{token}-{serial}"


def limits_for(launch: Launch) -> Limits:
    cpuset = options_for(launch, CgroupOptions).cpuset
    return Limits(
        memory=launch.memory if launch.memory > 0 else None,
        cpus=launch.cpus if launch.cpus > 0 else None,
        cpuset=cpuset or None,
    )


def cgroup_of(pid: int) -> str | None:
    """The name of the attempt cgroup (under labrun/) that process `pid` is in, if any."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, found, name = line.partition(f"/{PARENT}/")
        if found and name and "/" not in name:
            return name
    return None


def usage_path(launch: Launch) -> str:
    return beside(launch.stdout_path, "cgroup-usage")


def unsupported_message(support: Support) -> str:
    return (
        f"runtime cgroup: no cgroup can be made on this machine: {support.reason}; "
        'run labrun as root (or on a systemd machine with cgroup v2), or use runtime = "process" '
        "(no limits, OOM detection best-effort)"
    )


class CgroupExecutor(ProcessExecutor):
    runtime = Runtime.CGROUP
    samples_memory = False  # the kernel keeps the peak; samples feed the series only

    def __init__(self, waker: Waker, support: Support | None = None) -> None:
        super().__init__(waker)
        self._support = support
        self.cgroups: dict[int, AttemptCgroup] = {}
        # Ended attempts' cgroups, emptied, kept to be reused: making and removing one
        # costs more than the rest of a trivial attempt's cgroup work (bench/cgroup_throughput.py).
        self.idle: list[AttemptCgroup] = []
        self._token = os.urandom(3).hex()
        self._made = 0

    @property
    def support(self) -> Support:
        if self._support is None:
            self._support = detect()  # reads a few kernel files, once per executor
        return self._support

    def start(self, launch: Launch) -> Started:
        support = self.support
        if not support.ok:
            raise LaunchError(unsupported_message(support))
        try:
            cg = self._cgroup_for(support, limits_for(launch), usage_path(launch))
        except CgroupError as exc:
            raise LaunchError(f"runtime cgroup: cannot make the attempt's cgroup: {exc}") from None
        try:
            # under the wrapper that leaves an exit record (as in the process runtime): a
            # later runner that adopts the attempt reads its real exit status
            pid, pid_start = self.spawn(launch, cg.command(wrapped(launch)), around=cg.entered)
        except (LaunchError, CgroupError) as exc:
            self._discard(cg)
            if isinstance(exc, LaunchError):
                raise
            raise LaunchError(f"runtime cgroup: cannot start inside the cgroup: {exc}") from None
        self.cgroups[launch.attempt_id] = cg
        self._watch(launch, pid, pid_start)
        return Started(pid=pid, ref=cg.name, mechanism=cg.mechanism)  # start time: `identified`

    def _cgroup_for(self, support: Support, limits: Limits, usage_path: str) -> AttemptCgroup:
        """An idle cgroup made ready for these limits, or a new one."""
        for cg in list(self.idle):
            try:
                ready = cg.reuse(limits)
            except CgroupError:
                self.idle.remove(cg)
                self._discard(cg)
                continue
            if ready:
                self.idle.remove(cg)
                return cg
        self._made += 1
        return create(support, cgroup_name(self._token, self._made), limits, usage_path)

    def _release(self, cg: AttemptCgroup) -> None:
        """Keep the ended attempt's cgroup for reuse, with what is left in it killed."""
        if not cg.reusable or len(self.idle) >= POOL_MAX:
            self._discard(cg)
            return
        try:
            if cg.pids():
                cg.kill(signal.SIGKILL)  # reuse() takes it only once they are gone
        except CgroupError:
            pass
        self.idle.append(cg)

    def close(self) -> None:
        """Remove the idle cgroups: none outlives the run."""
        idle, self.idle = self.idle, []
        for cg in idle:
            self._discard(cg)
        super().close()

    def adopt(self, attempt_id: int, launch: Launch, started: Started) -> bool:
        """The process's adoption, plus its cgroup: signals reach all of it, and its counters
        and its removal (or reuse) come at the end as for an attempt started here."""
        if not super().adopt(attempt_id, launch, started):
            return False
        ref = started.ref
        if ref is None and attempt_id in self.adopted:  # found by its command line, so by its pid
            ref = cgroup_of(self.adopted[attempt_id].pid)
        try:
            cg = open_existing(self.support, ref, usage_path(launch)) if ref else None
        except CgroupError:
            cg = None  # the process group is still signalled; the end is still reported
        if cg is not None:
            self.cgroups[attempt_id] = cg
        return True

    def memory_now(self, children: Sequence[_Child]) -> dict[int, int]:
        """What each attempt's cgroup is charged now (what its limit holds it to, page cache
        included); the process tree's RSS where the cgroup gives no such file (systemd-run)."""
        sizes: dict[int, int] = {}
        rest = []
        for child in children:
            cg = self.cgroups.get(child.launch.attempt_id)
            size = cg.current_memory() if cg is not None else None
            if size is None:
                rest.append(child)
            else:
                sizes[child.launch.attempt_id] = size
        return {**sizes, **super().memory_now(rest)} if rest else sizes

    def _ended(self, attempt_id: int, child: _Child | None, facts: Facts) -> Facts:
        facts = super()._ended(attempt_id, child, facts)  # the series sampled while it ran
        cg = self.cgroups.pop(attempt_id, None)
        if cg is None:
            return facts
        reading = attempt_facts.read_cgroup(cg)
        self._release(cg)
        return dataclasses.replace(
            facts,
            oom_kills=reading.oom_kills or 0,
            peak_memory=reading.peak_memory,
            cpu_seconds=reading.cpu_seconds if reading.cpu_seconds is not None else facts.cpu_seconds,
            detail=attempt_facts.join_notes(facts.detail, *reading.notes),
        )

    def _discard(self, cg: AttemptCgroup) -> None:
        try:
            cg.remove()
        except CgroupError:
            pass  # a leftover named after this runner's pid; nothing else uses the name

    def signal(self, attempt_id: int, signum: int) -> None:
        """Every process in the attempt's cgroup, also those that left its process group;
        a stop signal spares the wrapper, which records how the command ended
        (`stop_signal`)."""
        cg = self.cgroups.get(attempt_id)
        child = self.children.get(attempt_id)
        if cg is None or child is None:
            super().signal(attempt_id, signum)
            return
        try:
            if signum == signal.SIGKILL:
                cg.kill(signum)
            else:
                stop_signal(child.pid, signum, cg.pids)
        except CgroupError:
            super().signal(attempt_id, signum)
