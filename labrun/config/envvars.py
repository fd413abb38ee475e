"""`${VAR}` in job values: taken from labrun's own environment when a run starts.

Expanded in `env` values (every task's, task 0's) and in the `[preflight]` paths
(`paths`, `writable`, `disk_free`). `${NAME}` and `$NAME` are replaced by the variable's
value, `$$` is one literal `$`, and any other `$` stays as it is. The job text stored
with a run keeps the references, never the values, so a resume expands them again from
the environment it runs in.

A reference to a variable that is not set is an error (exit 3 before anything runs),
never an empty string: `DATA=${DATA}` quietly becoming `DATA=` is how a night is lost.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping

from labrun.config.job import JobSpec, TaskSpec

_REFERENCE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


class UnsetVariable(Exception):
    """A `${NAME}` whose NAME is not set; the message is the variable's name."""


def references(text: str) -> list[str]:
    """The variable names `text` refers to, in order, each once."""
    names: list[str] = []
    for match in _REFERENCE.finditer(text):
        name = match.group(1) or match.group(2)
        if name and name not in names:
            names.append(name)
    return names


def expand(text: str, environ: Mapping[str, str]) -> str:
    """`text` with its references replaced; raises UnsetVariable for the first unset one."""
    if "$" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name is None:
            return "$"  # `$$`
        if name not in environ:
            raise UnsetVariable(name)
        return environ[name]

    return _REFERENCE.sub(one, text)


def unset_in_env(job: JobSpec, environ: Mapping[str, str]) -> list[str]:
    """One line per `env` value that refers to an unset variable, naming task, key and fix."""
    problems = []
    for spec in job.all_tasks:
        for key, value in spec.env.items():
            missing = [name for name in references(value) if name not in environ]
            for name in missing:
                problems.append(
                    f"task {spec.name}: env {key} = {_short(value)!r} uses ${{{name}}}, which is not set "
                    f"in labrun's environment; export {name}=... before `labrun run` (or write $$ for a "
                    "literal $)"
                )
    return problems


def with_env_expanded(job: JobSpec, environ: Mapping[str, str]) -> JobSpec:
    """The job with every `env` value expanded; the caller has checked `unset_in_env`."""

    def spec_of(spec: TaskSpec) -> TaskSpec:
        env = {key: expand(value, environ) for key, value in spec.env.items()}
        return spec if env == dict(spec.env) else dataclasses.replace(spec, env=env)

    setup = spec_of(job.setup) if job.setup is not None else None
    return dataclasses.replace(job, setup=setup, tasks=tuple(spec_of(s) for s in job.tasks))


def common_env(specs: Iterable[TaskSpec]) -> dict[str, str]:
    """The variables every task gets with the same value ([defaults] env, in effect)."""
    tables = [dict(spec.env) for spec in specs]
    if not tables:
        return {}
    first, *rest = tables
    return {k: v for k, v in first.items() if all(t.get(k) == v for t in rest)}


def _short(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"
