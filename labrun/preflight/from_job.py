"""A job file + the lab → the list of preflight checks, and running them for `check`/`run`.

Declared checks come from `[preflight]`; implied ones from the job itself: every task
fits on some node, the workdir exists, the directories of declared outputs are
writable. `checks_for` also asks the other parts of labrun for theirs, named there
one by one: isolation (a cgroup can be made, the Docker daemon answers, images are
present) and SSH nodes (reachable, Python, disk, runtimes, GPUs).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

from labrun.config.job import JobSpec
from labrun.config.lab import LabConfig
from labrun.preflight.checks import command_on_path, disk_free, env_set, path_readable, path_writable
from labrun.preflight.core import Check, CheckResult, Verdict, failed, passed, run_checks
from labrun.preflight.custom import custom_command
from labrun.preflight.network import tcp_reachable
from labrun.preflight.placement import fits_without, placement_checks

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
    """What the job itself needs: a workdir, a node for every task, writable output dirs."""
    checks = [workdir_exists(job.workdir)]
    checks += placement_checks(job, lab)
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
    from labrun.isolation import isolation_checks

    checks = implied_checks(job, lab) + declared_checks(job) + isolation_checks(job)
    if lab.ssh_nodes:
        from labrun.ssh.report import node_checks

        checks += node_checks(lab)
    return _once(checks)


def _once(checks: list[Check]) -> list[Check]:
    """A check asked for twice (an output's directory also listed in [preflight] writable)
    runs and prints once."""
    seen: set[str] = set()
    unique = []
    for check in checks:
        if check.name not in seen:
            seen.add(check.name)
            unique.append(check)
    return unique


def preflight(job: JobSpec, lab: LabConfig) -> Report:
    """Every check of the job, run concurrently under [preflight] timeout each."""
    results = run_checks(checks_for(job, lab), job.preflight.timeout)
    if lab.ssh_nodes:
        results = leave_out_offline(job, lab, results)
    return Report(results)


def leave_out_offline(job: JobSpec, lab: LabConfig, results: list[CheckResult]) -> list[CheckResult]:
    """An ssh node that does not answer is left out of the run, not a reason to refuse it,
    when every task can run on the other nodes: its failed checks become warnings. When
    some task can run only there, they stay failures and say which tasks need it."""
    from labrun.ssh.report import node_of, unreachable_nodes

    offline = unreachable_nodes(lab, results)
    if not offline:
        return results
    stranded = fits_without(job, lab, offline)
    out = []
    for r in results:
        node = node_of(lab, r.name)
        if node not in offline or r.ok:
            out.append(r)
        elif stranded:
            need = f"; task{'s' if len(stranded) > 1 else ''} {', '.join(stranded[:5])} can run only there"
            out.append(replace(r, found=r.found + need) if r.name.endswith(" reachable") else r)
        elif r.name.endswith(" reachable"):
            left = f"{r.found}; left out of this run (every task fits on the other nodes)"
            out.append(replace(r, ok=True, warning=True, found=left))
        else:
            out.append(
                replace(r, ok=True, warning=True, found=f"not checked: node {node} is not reachable", fix="")
            )
    return out
