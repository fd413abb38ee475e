"""`runtime = "cgroup"`: the process runtime, with each attempt in its own cgroup.

Spawning, waking on exit (pidfd), logs, process groups and launch errors are the
process executor's; this adds the cgroup around each attempt. The runner forks the
attempt from inside the attempt's cgroup (`AttemptCgroup.entered` around the Popen
only), so the task never runs outside it. When the main process ends, the kernel's
counters are read (OOM kills anywhere in the cgroup, peak memory, CPU time of the whole
tree), then the cgroup is removed with anything still in it.

Which mechanism is used ("cgroup-v1", "cgroup-v2", "systemd-run") is detected once, on
the first start, and recorded on every attempt as `Started.mechanism`.
"""

from __future__ import annotations

import dataclasses
import os
import secrets

from labrun.cgroup import AttemptCgroup, CgroupError, Limits, Support, Usage, create, detect
from labrun.executors.base import Facts, Launch, LaunchError, Started, Waker
from labrun.executors.process import ProcessExecutor, _Child, process_start_time


def cgroup_name(launch: Launch) -> str:
    """Unique per attempt, also across state directories (tests run several at once)."""
    return f"r{launch.run_id}-a{launch.attempt_id}-{secrets.token_hex(3)}"


def limits_for(launch: Launch) -> Limits:
    cpuset = launch.options.get("cpuset")
    return Limits(
        memory=launch.memory if launch.memory > 0 else None,
        cpus=launch.cpus if launch.cpus > 0 else None,
        cpuset=cpuset if isinstance(cpuset, str) and cpuset else None,
    )


def unsupported_message(support: Support) -> str:
    return (
        f"runtime cgroup: no cgroup can be made on this machine: {support.reason}; "
        'run labrun as root (or on a systemd machine with cgroup v2), or use runtime = "process" '
        "(no limits, OOM detection best-effort)"
    )


class CgroupExecutor(ProcessExecutor):
    runtime = "cgroup"
    samples_memory = False  # the kernel keeps the peak

    def __init__(self, waker: Waker, support: Support | None = None) -> None:
        super().__init__(waker)
        self._support = support
        self.cgroups: dict[int, AttemptCgroup] = {}

    @property
    def support(self) -> Support:
        if self._support is None:
            self._support = detect()  # reads a few kernel files, once per executor
        return self._support

    def start(self, launch: Launch) -> Started:
        support = self.support
        if not support.ok:
            raise LaunchError(unsupported_message(support))
        usage_path = os.path.join(os.path.dirname(launch.stdout_path), "cgroup-usage")
        try:
            cg = create(support, cgroup_name(launch), limits_for(launch), usage_path)
        except CgroupError as exc:
            raise LaunchError(f"runtime cgroup: cannot make the attempt's cgroup: {exc}") from None
        try:
            proc = self.spawn(launch, tuple(cg.command(launch.argv)), around=cg.entered)
        except (LaunchError, CgroupError) as exc:
            self._discard(cg)
            if isinstance(exc, LaunchError):
                raise
            raise LaunchError(f"runtime cgroup: cannot start inside the cgroup: {exc}") from None
        self.cgroups[launch.attempt_id] = cg
        self._watch(launch, proc)
        return Started(
            pid=proc.pid, pid_start=process_start_time(proc.pid), ref=cg.name, mechanism=cg.mechanism
        )

    def _ended(self, attempt_id: int, child: _Child, facts: Facts) -> Facts:
        cg = self.cgroups.pop(attempt_id, None)
        if cg is None:
            return facts
        notes = []
        try:
            usage: Usage | None = cg.usage()
        except (CgroupError, OSError, ValueError) as exc:
            usage = None
            notes.append(f"cgroup counters unreadable: {exc}")
        try:
            cg.remove()
        except CgroupError as exc:
            notes.append(str(exc))
        if usage is not None and usage.oom_kills is None:
            notes.append("this kernel keeps no OOM-kill counter: an OOM kill cannot be told apart")
        detail = "; ".join(n for n in (facts.detail, *notes) if n)
        if usage is None:
            return dataclasses.replace(facts, detail=detail)
        return dataclasses.replace(
            facts,
            oom_kills=usage.oom_kills or 0,
            peak_memory=usage.peak_memory,
            cpu_seconds=usage.cpu_seconds if usage.cpu_seconds is not None else facts.cpu_seconds,
            detail=detail,
        )

    def _discard(self, cg: AttemptCgroup) -> None:
        try:
            cg.remove()
        except CgroupError:
            pass  # a leftover named after this attempt; the next runner's create clears it

    def signal(self, attempt_id: int, signum: int) -> None:
        """Every process in the attempt's cgroup, also those that left its process group."""
        cg = self.cgroups.get(attempt_id)
        if cg is None:
            return
        try:
            cg.kill(signum)
        except CgroupError:
            super().signal(attempt_id, signum)
