"""Secret environment variables: named in the job file, valued only in labrun's environment.

The job text stored with a run holds only the names. The values are read when an attempt
is launched and go into its environment, never into the database, a status or a message.
A task gets only the secrets it declares: the others the job declares are removed from the
environment it inherits (`withheld`), on every runtime and node.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from labrun.config.job import JobSpec, TaskSpec
from labrun.config.schema import ENV_NAME_RE
from labrun.errors import PreflightFailed


def secret_values(spec: TaskSpec, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    source = os.environ if environ is None else environ
    return {name: source[name] for name in spec.secret_env if name in source}


def withheld(spec: TaskSpec, declared: Iterable[str]) -> tuple[str, ...]:
    """The job's secret names `spec` does not declare: taken out of its environment, so a
    secret exported for one task never reaches another."""
    return tuple(sorted(name for name in declared if name not in spec.secret_env))


def require_secrets(job: JobSpec, environ: Mapping[str, str] | None = None) -> None:
    """Refuse to start (exit 3) when a declared secret is not set: before anything runs."""
    source = os.environ if environ is None else environ
    problems = []
    for spec in job.all_tasks:  # task 0's secrets too
        for name in spec.secret_env:
            if not ENV_NAME_RE.match(name):
                problems.append(f"task {spec.name}: secret_env {name!r} is not a variable name")
            elif name not in source:
                problems.append(
                    f"task {spec.name}: secret_env {name} is not set in labrun's environment; "
                    f"export {name} before `labrun run`"
                )
    if problems:
        raise PreflightFailed(f"{job.file}: " + "; ".join(problems))
