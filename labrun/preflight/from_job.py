"""A job file + the lab → the list of preflight checks, and running them for `check`/`run`.

Declared checks come from `[preflight]`; implied ones from the job itself: every task
fits on some node, the workdir exists, the directories of declared outputs are
writable. `checks_for` also asks every backend for its checks on its nodes (local: a
cgroup can be made, the Docker daemon answers, images are present; ssh: reachable,
Python, disk, runtimes, GPUs).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from labrun.config.envvars import UnsetVariable, common_env, expand, references
from labrun.config.job import JobSpec, TaskSpec
from labrun.config.lab import LabConfig
from labrun.config.schema import FileItems
from labrun.expand import used_fields
from labrun.items_file import ItemsFileError, missing_fields, read_items
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


def _path_check(job: JobSpec, key: str, path: str, make: Callable[[str], Check]) -> Check:
    """`make`'s check of `path` with its ${VAR}s expanded, or a failing one naming the unset one."""
    try:
        expanded = expand(path, os.environ)
    except UnsetVariable as exc:
        name = str(exc)

        def probe(_timeout: float) -> Verdict:
            return failed(
                f"uses ${{{name}}}, which is not set in labrun's environment",
                f"export {name}=... before running (or write $$ for a literal $)",
            )

        return Check(f"{key} {path}", probe)
    return make(_in_workdir(job, expanded))


def _env_references(job: JobSpec) -> list[Check]:
    """An `env` value's ${VAR} and a `secret_env` name must be set in labrun's environment
    when the run starts (`labrun run` refuses otherwise)."""
    checks, seen = [], set()
    for spec in job.all_tasks:
        for key, value in spec.env.items():
            for name in references(value):
                if name not in seen:
                    seen.add(name)
                    check = env_set(name, os.environ)
                    checks.append(Check(f"env {name} (used by task {spec.name} env {key})", check.probe))
        for name in spec.secret_env:  # task 0's ([setup]) too: `run` refuses when one is unset
            if name not in seen:
                seen.add(name)
                check = env_set(name, os.environ, secret=True)
                checks.append(Check(f"secret_env {name} (task {spec.name})", check.probe))
    return checks


def job_environment(job: JobSpec) -> dict[str, str]:
    """labrun's environment plus what every task gets from the job ([defaults] env), expanded."""
    environ = dict(os.environ)
    for key, value in common_env(job.all_tasks).items():
        try:
            environ[key] = expand(value, os.environ)
        except UnsetVariable:
            continue  # its own check says so
    return environ


def workdir_exists(workdir: str) -> Check:
    def probe(_timeout: float) -> Verdict:
        if os.path.isdir(workdir):
            return passed("directory exists")
        return failed(f"{workdir} does not exist", "create it, or fix [job] workdir")

    return Check(f"workdir {workdir}", probe)


def declared_checks(job: JobSpec) -> list[Check]:
    """What [preflight] asks for, in the order of its keys."""
    spec = job.preflight
    environ = job_environment(job)  # a variable set in [defaults] env satisfies `env`
    checks = [command_on_path(c) for c in spec.commands]
    checks += [_path_check(job, "path", p, path_readable) for p in spec.paths]
    checks += [_path_check(job, "writable", p, path_writable) for p in spec.writable]
    checks += [env_set(name, environ) for name in spec.env]
    checks += _env_references(job)
    checks += [tcp_reachable(address) for address in spec.tcp]
    checks += [
        _path_check(job, "disk_free", p, functools.partial(disk_free, needed=size))
        for p, size in spec.disk_free.items()
    ]
    if os.path.isdir(job.workdir):  # else the workdir check says so, once
        checks += [custom_command(name, command, job.workdir, environ) for name, command in spec.checks]
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


def items_file_check(job: JobSpec, spec: TaskSpec) -> Check:
    """The task's items file gives rows with every field its command uses."""
    assert isinstance(spec.items, FileItems)
    path = os.path.join(job.workdir, spec.items.path)

    def probe(_timeout: float) -> Verdict:
        try:
            items = read_items(path)
        except ItemsFileError as exc:
            return failed(str(exc), f"fix {path}, or point items = {{ file = ... }} at the right file")
        problem = missing_fields(items, used_fields(spec))
        if problem is not None:
            return failed(problem, f"add the field to {path}, or fix the {{item.NAME}} in task {spec.name}")
        fields = f"; fields {', '.join(items[0].fields)}" if items[0].fields else ""
        return passed(f"{len(items)} items{fields}")

    return Check(f"items file {spec.items.path} (task {spec.name})", probe)


def checks_for(job: JobSpec, lab: LabConfig) -> list[Check]:
    from labrun.backends import registry

    checks = implied_checks(job, lab) + declared_checks(job) + registry.checks(lab, job)
    checks += [items_file_check(job, t) for t in job.tasks if isinstance(t.items, FileItems)]
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
    return Report(leave_out_offline(job, lab, results))


def node_of(lab: LabConfig, check_name: str) -> str | None:
    """The node a backend's check `node NAME ...` is about; None for any other check."""
    parts = check_name.split(" ")
    names = {node.name for node in lab.nodes}
    return parts[1] if len(parts) >= 3 and parts[0] == "node" and parts[1] in names else None


def unreachable_nodes(lab: LabConfig, results: Sequence[CheckResult]) -> set[str]:
    """Nodes whose backend's `node NAME reachable` check failed (an ssh node that does not answer)."""
    return {
        node
        for r in results
        if not r.ok and r.name.endswith(" reachable") and (node := node_of(lab, r.name)) is not None
    }


def leave_out_offline(job: JobSpec, lab: LabConfig, results: list[CheckResult]) -> list[CheckResult]:
    """An ssh node that does not answer is left out of the run, not a reason to refuse it,
    when every task can run on the other nodes: its failed checks become warnings. When
    some task can run only there, they stay failures and say which tasks need it."""
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
