"""A job file + the lab → the list of preflight checks, and running them for `check`/`run`.

Declared checks come from `[preflight]`; implied ones from the job itself: every task
fits on some node, the workdir exists, the directories of declared outputs are
writable. `checks_for` also asks every backend for its checks on its nodes (local: a
cgroup can be made, the Docker daemon answers, images are present; ssh: reachable,
Python, disk, runtimes, GPUs).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from labrun.config.job import JobSpec
from labrun.config.lab import LabConfig
from labrun.preflight.checks import (
    NodeCapacity,
    command_on_path,
    disk_free,
    env_set,
    path_readable,
    path_writable,
    resources_fit,
)
from labrun.preflight.core import Check, CheckResult, Verdict, failed, passed, run_checks
from labrun.preflight.custom import custom_command
from labrun.preflight.network import tcp_reachable

_PLACEHOLDER = re.compile(r"\{[A-Za-z_]+\}")


@dataclass(frozen=True)
class Report:
    results: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok]


def _in_workdir(job: JobSpec, path: str) -> str:
    return os.path.normpath(os.path.join(job.workdir, os.path.expanduser(path)))


def workdir_exists(workdir: str) -> Check:
    def probe(_timeout: float) -> Verdict:
        if os.path.isdir(workdir):
            return passed("directory exists")
        return failed(f"{workdir} does not exist", "create it, or fix [job] workdir")

    return Check(f"workdir {workdir}", probe)


def declared_checks(job: JobSpec) -> list[Check]:
    """What [preflight] asks for, in the order of its keys."""
    spec = job.preflight
    checks = [command_on_path(c) for c in spec.commands]
    checks += [path_readable(_in_workdir(job, p)) for p in spec.paths]
    checks += [path_writable(_in_workdir(job, p)) for p in spec.writable]
    checks += [env_set(name, os.environ) for name in spec.env]
    checks += [tcp_reachable(address) for address in spec.tcp]
    checks += [disk_free(_in_workdir(job, p), size) for p, size in spec.disk_free.items()]
    if os.path.isdir(job.workdir):  # else the workdir check says so, once
        checks += [custom_command(name, command, job.workdir) for name, command in spec.checks]
    return checks


def implied_checks(job: JobSpec, lab: LabConfig) -> list[Check]:
    """What the job itself needs: a workdir, room for every task, writable output dirs."""
    nodes = [NodeCapacity(n.name, n.cpus, n.memory) for n in lab.declared]
    checks = [workdir_exists(job.workdir)]
    checks += [resources_fit(t.name, t.cpus, t.memory, nodes) for t in job.all_tasks]
    seen: set[str] = set()
    for task in job.all_tasks:
        for output in task.outputs:
            # {shared} is made per run, and an {item} may itself be a path: nothing to check
            directory = os.path.dirname(output)
            if _PLACEHOLDER.search(directory) or "{item}" in output:
                continue
            target = _in_workdir(job, directory or ".")
            if target not in seen:
                seen.add(target)
                checks.append(path_writable(target))
    return checks


def checks_for(job: JobSpec, lab: LabConfig) -> list[Check]:
    from labrun.backends import registry

    return implied_checks(job, lab) + declared_checks(job) + registry.checks(lab, job)


def preflight(job: JobSpec, lab: LabConfig) -> Report:
    """Every check of the job, run concurrently under [preflight] timeout each."""
    return Report(run_checks(checks_for(job, lab), job.preflight.timeout))
