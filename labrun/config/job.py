"""A job file → `JobSpec`: validated, defaults resolved, every problem reported at once."""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from labrun.config.locate import Path, Positions, locate, nearest
from labrun.config.schema import (
    JOB_KEYS_BY_NAME,
    TASK_KEYS,
    TASK_KEYS_BY_NAME,
    TOP_LEVEL,
    Items,
    Key,
    convert,
)
from labrun.errors import ConfigError, Problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

PLACEHOLDERS = ("item", "index", "run", "attempt", "shared", "task")
_PLACEHOLDER_RE = re.compile(r"(?<![${])\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class TaskSpec:
    """One [[tasks]] entry with defaults applied. Fan-out into instances is `expand.py`'s."""

    name: str
    command: str | tuple[str, ...]
    items: Items | None = None
    runtime: str = "process"
    cpus: float = 1.0
    memory: int = 1024**3
    timeout: float | None = None
    retries: int = 3
    retry_delay: float = 10.0
    retry_delay_max: float = 600.0
    max_attempts: int | None = None
    grace: float = 10.0
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: tuple[str, ...] = ()  # names only: values come from the runner's environment

    @property
    def attempt_cap(self) -> int:
        """All attempts, counted or not: keeps a flapping node from looping forever."""
        return self.max_attempts if self.max_attempts is not None else self.retries + 1 + 10


@dataclass(frozen=True)
class JobSpec:
    name: str
    file: str  # absolute path of the job file
    workdir: str  # absolute
    tasks: tuple[TaskSpec, ...]
    max_parallel: int | None = None
    text: str = ""  # the job file as read, kept with the run so a resume sees the same job
    resume: bool = False  # `labrun run` continues the latest unfinished run by default

    def task(self, name: str) -> TaskSpec:
        for spec in self.tasks:
            if spec.name == name:
                return spec
        raise KeyError(name)


class _Collector:
    """Gathers problems with their positions so all of them are reported together."""

    def __init__(self, file: str, positions: Positions) -> None:
        self.file = file
        self.positions = positions
        self.problems: list[Problem] = []

    def add(self, path: Path, message: str, hint: str = "") -> None:
        line, column = nearest(self.positions, path)
        if line is None:  # about the whole file (no tasks, no [job]): point at its start
            line, column = 1, 1
        key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path)
        self.problems.append(Problem(self.file, line, column, key.replace(".[", "["), message, hint))

    def unknown(self, path: Path, key: str, known: tuple[str, ...], where: str) -> None:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
        self.add((*path, key), f"unknown key {key!r} in {where}", hint)

    def value(self, path: Path, key: Key, raw: object) -> Any:
        try:
            return convert(key, raw)
        except ValueError as exc:
            self.add(path, str(exc))
            return None


def _table(c: _Collector, data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        c.add((name,), f"expected a table [{name}], got {type(value).__name__}")
        return {}
    return value


def _task_values(c: _Collector, path: Path, table: Mapping[str, Any], where: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in table.items():
        spec = TASK_KEYS_BY_NAME.get(key)
        if spec is None or (where == "[defaults]" and key == "name"):
            known = tuple(k for k in TASK_KEYS_BY_NAME if where != "[defaults]" or k != "name")
            c.unknown(path, key, known, where)
            continue
        converted = c.value((*path, key), spec, raw)
        if converted is not None:
            values[key] = converted
    return values


def _check_placeholders(c: _Collector, path: Path, command: str | tuple[str, ...]) -> None:
    parts = [command] if isinstance(command, str) else list(command)
    for part in parts:
        for match in _PLACEHOLDER_RE.finditer(part):
            word = match.group(1)
            close = difflib.get_close_matches(word, PLACEHOLDERS, n=1, cutoff=0.75)
            if word not in PLACEHOLDERS and close:
                c.add(path, f"unknown placeholder {{{word}}}", f"did you mean {{{close[0]}}}?")


def _tasks(c: _Collector, data: Mapping[str, Any], defaults: dict[str, Any]) -> list[TaskSpec]:
    raw_tasks = data.get("tasks")
    if raw_tasks is None:
        c.add((), "no tasks: add at least one [[tasks]] table with a name and a command")
        return []
    if not isinstance(raw_tasks, list) or not all(isinstance(t, dict) for t in raw_tasks):
        c.add(("tasks",), "expected [[tasks]] tables (an array of tables)")
        return []
    if not raw_tasks:
        c.add(("tasks",), "no tasks: add at least one [[tasks]] table")
    specs, seen = [], set()
    for i, table in enumerate(raw_tasks):
        path: Path = ("tasks", i)
        values = {**defaults, **_task_values(c, path, table, f"[[tasks]] #{i + 1}")}
        env = {**defaults.get("env", {}), **values.get("env", {})}
        name, command = values.get("name"), values.get("command")
        if "name" not in table:
            c.add(path, "this task has no name", 'add name = "..."')
        elif name in seen:
            c.add((*path, "name"), f"a second task is named {name!r}", "task names must be unique")
        if command is None and "command" not in table and "command" not in defaults:
            c.add(path, f"task {name or i + 1} has no command", 'add command = "..."')
        if name is None or command is None:
            continue
        seen.add(name)
        _check_placeholders(c, (*path, "command"), command)
        fields = {k.name: values[k.name] for k in TASK_KEYS if k.name in values}
        specs.append(TaskSpec(**{**fields, "env": env}))
    return specs


def parse_job(text: str, file: str) -> JobSpec:
    """Validate the text of a job file. `file` names it in messages and anchors `workdir`."""
    try:
        return _parse_job(text, file)
    except RecursionError:  # tomllib and the position scanner recurse per nesting level
        problem = Problem(file, _deepest_line(text), None, "", "values are nested too deeply", "flatten them")
        raise ConfigError([problem]) from None


def _deepest_line(text: str) -> int:
    """The line where bracket nesting is deepest (strings not told apart: a location hint)."""
    depth, best, best_line, line = 0, -1, 1, 1
    for ch in text:
        if ch == "\n":
            line += 1
        elif ch in "[{":
            depth += 1
            if depth > best:
                best, best_line = depth, line
        elif ch in "]}":
            depth -= 1
    return best_line


def _parse_job(text: str, file: str) -> JobSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(file, exc)]) from None
    c = _Collector(file, locate(text))
    for key in data:
        if key not in TOP_LEVEL:
            c.unknown((), key, TOP_LEVEL, "the job file")
    job = _table(c, data, "job")
    job_values: dict[str, Any] = {}
    for key, raw in job.items():
        spec = JOB_KEYS_BY_NAME.get(key)
        if spec is None:
            c.unknown(("job",), key, tuple(JOB_KEYS_BY_NAME), "[job]")
        elif (converted := c.value(("job", key), spec, raw)) is not None:
            job_values[key] = converted
    if "name" not in job:
        c.add(("job",), "the job has no name", 'add name = "..." under [job]')
    defaults = _task_values(c, ("defaults",), _table(c, data, "defaults"), "[defaults]")
    tasks = _tasks(c, data, defaults)
    if c.problems:
        raise ConfigError(c.problems)
    base = os.path.dirname(os.path.abspath(file))
    return JobSpec(
        name=job_values["name"],
        file=os.path.abspath(file),
        workdir=os.path.normpath(os.path.join(base, job_values.get("workdir", "."))),
        tasks=tuple(tasks),
        max_parallel=job_values.get("max_parallel"),
        text=text,
        resume=job_values.get("resume", False),
    )


def _syntax_problem(file: str, exc: Exception) -> Problem:
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    line = int(match.group(1)) if match else None
    column = int(match.group(2)) if match else None
    message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message) or "invalid TOML"
    if match is None and "end of document" in message:
        line = None
    return Problem(file, line, column, "", f"invalid TOML: {message}", "fix the syntax there")


def load_job(path: str) -> JobSpec:
    """Read and validate a job file; every failure is a ConfigError naming the file."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(16 * 1024 * 1024 + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([Problem(path, None, None, "", f"cannot read the job file: {reason}")]) from None
    if len(raw) > 16 * 1024 * 1024:
        raise ConfigError([Problem(path, None, None, "", "the job file is larger than 16 MiB")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        problem = Problem(path, line, None, "", "the job file is not UTF-8 text", "save it as UTF-8")
        raise ConfigError([problem]) from None
    return parse_job(text, path)
