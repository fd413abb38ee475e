"""A job file → `JobSpec`: validated, defaults resolved, every problem reported at once."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from labrun.config.locate import Path, Positions, locate, nearest, nul_bytes
from labrun.config.preflight import NotifySpec, PreflightSpec
from labrun.config.schema import (
    JOB_KEYS_BY_NAME,
    NOTIFY_KEYS_BY_NAME,
    PREFLIGHT_KEYS_BY_NAME,
    SETUP_NAME,
    TASK_KEYS,
    TASK_KEYS_BY_NAME,
    TOP_LEVEL,
    Dependency,
    FileItems,
    FromItems,
    Items,
    Key,
    Relative,
    convert,
)
from labrun.deps import describe_cycle, find_cycle, upstream_map
from labrun.errors import ConfigError, Problem
from labrun.model import Runtime
from labrun.preflight.network import parse_address
from labrun.readfile import NotReadable, read_regular

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

PLACEHOLDERS = ("item", "index", "run", "attempt", "shared", "task", "attempt_dir")
_PLACEHOLDER_RE = re.compile(r"(?<![${])\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class TaskSpec:
    """One [[tasks]] entry with defaults applied. Fan-out into instances is `expand.py`'s."""

    name: str
    command: str | tuple[str, ...]
    items: Items | None = None
    runtime: Runtime = Runtime.PROCESS
    cpus: float = 1.0
    memory: int = 1024**3
    timeout: float | None = None  # absolute; a relative one is timeout_factor
    timeout_factor: float | None = None  # timeout = "300%": 3.0 x the median (labrun/limits.py)
    relative_min: int = 5
    timeout_floor: float | None = None
    retries: int = 3
    retry_delay: float = 10.0
    retry_delay_max: float = 600.0
    max_attempts: int | None = None
    no_retry_exit: tuple[int, ...] = ()  # exit codes that fail at once
    grace: float = 10.0
    env: Mapping[str, str] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()  # placeholders allowed; relative paths: against the workdir
    depends_on: tuple[str, ...] = ()  # spec names
    allow_failed: tuple[str, ...] = ()  # those of depends_on it waits for whatever their outcome
    nodes: tuple[str, ...] = ()
    gpus: int = 0
    image: str | None = None
    image_tar: str | None = None  # absolute once parsed (relative to the job file)
    cpuset: str | None = None
    privileged: bool = False
    network: str | None = None
    memory_max: int | None = None
    memory_growth: float = 2.0
    on_oom: str = "grow"
    learn_memory: bool = True  # start at the peak of earlier runs (labrun/learned.py)
    secret_env: tuple[str, ...] = ()  # names only: values come from the runner's environment
    speculate: bool = False  # a straggler gets a copy on another node (labrun/speculation.py)
    speculate_after: float = 300.0
    speculate_shared_outputs: bool = False  # the job accepts copies writing the same outputs

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
    setup: TaskSpec | None = None  # task 0, named "setup"; runs first, alone
    preflight: PreflightSpec = field(default_factory=PreflightSpec)
    notify: NotifySpec | None = None  # [notify]: who hears how a run ended
    default_secret_env: tuple[str, ...] = ()  # [defaults] secret_env, kept where a task overrides it

    @property
    def all_tasks(self) -> tuple[TaskSpec, ...]:
        """Task 0 (when there is one) and then every [[tasks]] entry."""
        return (self.setup, *self.tasks) if self.setup is not None else self.tasks

    resume: bool = False  # `labrun run` continues the latest unfinished run by default

    @functools.cached_property  # read at every launch
    def secret_names(self) -> frozenset[str]:
        """Every secret the job declares: [defaults]', [setup]'s and each task's `secret_env`."""
        return frozenset(self.default_secret_env).union(*(t.secret_env for t in self.all_tasks))

    def task(self, name: str) -> TaskSpec:
        for spec in self.all_tasks:
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


def _check_item_fields(c: _Collector, path: Path, values: Mapping[str, Any]) -> None:
    """`{item.NAME}` names a field of a row: only items from a CSV or JSON Lines file have rows."""
    command = values.get("command")
    texts = [command] if isinstance(command, str) else list(command or ())
    texts += [*values.get("env", {}).values(), *values.get("outputs", ())]
    used = next((m.group(0) for t in texts if (m := _ITEM_FIELD_RE.search(t))), None)
    if used is not None and not isinstance(values.get("items"), FileItems):
        c.add(
            (*path, "items") if "items" in values else path,
            f"{used} names a field of an item, but this task's items are not rows of a file",
            'use items = { file = "grid.csv" } (a header row names the fields), or {item}',
        )


_ITEM_FIELD_RE = re.compile(r"(?<![${])\{item\.[A-Za-z0-9_-]+\}")
_CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def _check_isolation(c: _Collector, path: Path, values: Mapping[str, Any]) -> None:
    """Keys that only make sense together: docker needs an image; cpuset is a CPU list."""
    if values.get("runtime") is Runtime.DOCKER and not values.get("image"):
        c.add(path, 'runtime "docker" needs an image', 'add image = "name:tag" (see `docker images`)')
    cpuset = values.get("cpuset")
    if cpuset is not None and not _CPUSET_RE.match(cpuset.replace(" ", "")):
        c.add((*path, "cpuset"), f"cpuset {cpuset!r} is not a CPU list", 'write it like "0-3,6"')
    memory, memory_max = values.get("memory"), values.get("memory_max")
    if memory is not None and memory_max is not None and memory_max < memory:
        c.add((*path, "memory_max"), "memory_max is below memory", "raise memory_max or lower memory")


ATTEMPT_SCOPED = ("{attempt_dir}", "{attempt}")


def _check_speculation(
    c: _Collector, path: Path, values: Mapping[str, Any], table: Mapping[str, Any]
) -> None:
    """Two copies of a task must not write the same output unless the job accepts it."""
    if not values.get("speculate") or values.get("speculate_shared_outputs"):
        return
    shared = [o for o in values.get("outputs", ()) if not any(p in o for p in ATTEMPT_SCOPED)]
    if shared:
        where = (*path, "speculate") if "speculate" in table else (*path, "outputs")
        c.add(
            where,
            f"speculate = true, but output {shared[0]!r} is the same path for every attempt: "
            "a speculative copy would write over the original's",
            'write it under the attempt\'s own directory (outputs = ["{attempt_dir}/result.txt"]), or add '
            "speculate_shared_outputs = true if the task writes to a temporary name and renames it",
        )


def _with_paths(spec: TaskSpec, base: str) -> TaskSpec:
    """Paths in task keys are relative to the job file."""
    if spec.image_tar is None:
        return spec
    return dataclasses.replace(spec, image_tar=os.path.normpath(os.path.join(base, spec.image_tar)))


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
        named = f" (task {table['name']})" if isinstance(table.get("name"), str) else ""
        # the same name as the key in every problem (tasks[0].memory), not a second numbering
        values = {**defaults, **_task_values(c, path, table, f"tasks[{i}]{named}")}
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
        _check_item_fields(c, path, values)
        _check_isolation(c, path, values)
        _check_speculation(c, path, values, table)
        fields = {k.name: values[k.name] for k in TASK_KEYS if k.name in values}
        dependencies: tuple[Dependency, ...] = fields.pop("depends_on", ())
        items = fields.get("items")
        if isinstance(items, FromItems) and items.task != SETUP_NAME:  # its rows need that task's list
            dependencies = (*dependencies, Dependency(items.task))
        fields["depends_on"] = tuple(dict.fromkeys(d.task for d in dependencies))
        fields["allow_failed"] = tuple(d.task for d in dependencies if d.allow_failed)
        specs.append(TaskSpec(**{**_timeouts(fields), "env": env}))
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
        raise ConfigError([_syntax_problem(file, exc, text)]) from None
    c = _Collector(file, locate(text))
    for where in nul_bytes(data, ()):
        c.add(
            where, "holds a NUL byte (\\u0000), which no command, path, name or value can carry", "remove it"
        )
    if c.problems:
        raise ConfigError(c.problems)
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
    setup = _setup(c, data, defaults)
    _check_dependencies(c, data, tasks, setup)
    preflight = _preflight(c, _table(c, data, "preflight"))
    notify = _notify(c, _table(c, data, "notify")) if "notify" in data else None
    if c.problems:
        raise ConfigError(c.problems)
    base = os.path.dirname(os.path.abspath(file))
    return JobSpec(
        name=job_values["name"],
        file=os.path.abspath(file),
        workdir=os.path.normpath(os.path.join(base, job_values.get("workdir", "."))),
        tasks=tuple(_with_paths(t, base) for t in tasks),
        max_parallel=job_values.get("max_parallel"),
        text=text,
        setup=setup,
        preflight=preflight,
        notify=notify,
        resume=job_values.get("resume", False),
        default_secret_env=tuple(defaults.get("secret_env", ())),
    )


# -- task 0, dependencies, preflight ----------------------------------------------------


def _setup(c: _Collector, data: Mapping[str, Any], defaults: dict[str, Any]) -> TaskSpec | None:
    if "setup" not in data:
        return None
    table = _table(c, data, "setup")
    values = {**defaults, **_task_values(c, ("setup",), table, "[setup]")}
    for key in ("name", "items", "depends_on"):
        if key in table and not (key == "name" and table[key] == SETUP_NAME):
            c.add(("setup", key), f"[setup] takes no {key}", "task 0 is named setup and runs first, once")
    if "command" not in values:
        c.add(("setup",), "[setup] has no command", 'add command = "..."')
        return None
    _check_placeholders(c, ("setup", "command"), values["command"])
    env = {**defaults.get("env", {}), **values.get("env", {})}
    fields = {k.name: values[k.name] for k in TASK_KEYS if k.name in values}
    fields.update(name=SETUP_NAME, items=None, depends_on=(), env=env)
    return TaskSpec(**_timeouts(fields))


def _timeouts(fields: dict[str, Any]) -> dict[str, Any]:
    """`timeout = "300%"` becomes `timeout_factor`; `timeout` holds absolute limits only."""
    timeout = fields.get("timeout")
    if isinstance(timeout, Relative):
        return {**fields, "timeout": None, "timeout_factor": timeout.factor}
    return fields


def _check_dependencies(
    c: _Collector, data: Mapping[str, Any], tasks: list[TaskSpec], setup: TaskSpec | None
) -> None:
    raw = data.get("tasks")
    listed = raw if isinstance(raw, list) else []
    index = {t.get("name"): i for i, t in enumerate(listed) if isinstance(t.get("name"), str)}
    known = [t.name for t in tasks] + ([SETUP_NAME] if setup is not None else [])
    for spec in tasks:
        path: Path = ("tasks", index.get(spec.name, 0))
        if spec.name == SETUP_NAME:
            c.add((*path, "name"), "the name 'setup' is task 0's", "declare task 0 as a [setup] table")
        if isinstance(spec.items, FromItems):
            _check_source(c, (*path, "items"), spec.items, {t.name: t for t in tasks}, setup)
        for up in spec.depends_on:
            if up not in known:
                close = difflib.get_close_matches(up, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"tasks are: {', '.join(known)}"
                c.add((*path, "depends_on"), f"depends on {up!r}, which is no task of this job", hint)
    graph = upstream_map(((t.name, t.depends_on) for t in tasks), has_setup=False)
    cycle = find_cycle({n: [u for u in ups if u in graph] for n, ups in graph.items()})
    if cycle:
        where = ("tasks", index.get(cycle[0], 0), "depends_on")
        c.add(where, f"dependency cycle: {describe_cycle(cycle)}", "remove one of these depends_on entries")


def _check_source(
    c: _Collector, path: Path, items: FromItems, tasks: Mapping[str, TaskSpec], setup: TaskSpec | None
) -> None:
    """The task a fan-out's items come from: one task (not a fan-out) with an output."""
    if items.task == SETUP_NAME:
        if setup is None or not setup.outputs:
            hint = 'add [setup] with outputs = ["{shared}/manifest.txt"]: its first output is the manifest'
            c.add(path, 'items = "setup" needs task 0 with outputs', hint)
        return
    source = tasks.get(items.task)
    if source is None:
        close = difflib.get_close_matches(items.task, list(tasks), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"tasks are: {', '.join(tasks)}"
        c.add(path, f"items come from {items.task!r}, which is no task of this job", hint)
    elif source.items is not None:
        c.add(
            path,
            f"items come from {items.task!r}, a fan-out",
            "name one task (without items) that writes a list",
        )
    elif not source.outputs:
        hint = f'add outputs = ["{{shared}}/{items.task}.txt"] to task {items.task} (the first is the list)'
        c.add(path, f"items come from task {items.task}, which declares no outputs", hint)


def _preflight(c: _Collector, table: Mapping[str, Any]) -> PreflightSpec:
    values: dict[str, Any] = {}
    for key, raw in table.items():
        spec = PREFLIGHT_KEYS_BY_NAME.get(key)
        if spec is None:
            c.unknown(("preflight",), key, tuple(PREFLIGHT_KEYS_BY_NAME), "[preflight]")
        elif (converted := c.value(("preflight", key), spec, raw)) is not None:
            values[key] = converted
    for i, address in enumerate(values.get("tcp", ())):
        try:
            parse_address(address)
        except ValueError as exc:
            c.add(("preflight", "tcp", i), str(exc))
    return PreflightSpec(**values)


_MAIL_ADDRESS = re.compile(r"[^@\s,;<>\"']+@[^@\s,;<>\"']+")


def _notify(c: _Collector, table: Mapping[str, Any]) -> NotifySpec:
    values: dict[str, Any] = {}
    for key, raw in table.items():
        spec = NOTIFY_KEYS_BY_NAME.get(key)
        if spec is None:
            c.unknown(("notify",), key, tuple(NOTIFY_KEYS_BY_NAME), "[notify]")
        elif (converted := c.value(("notify", key), spec, raw)) is not None:
            values[key] = converted
    if "command" not in table and "email" not in table:
        hint = 'add command = "..." or email = "..."'
        c.add(("notify",), "[notify] says neither how nor whom to tell", hint)
    email = values.get("email")
    if isinstance(email, str) and not _MAIL_ADDRESS.fullmatch(email):
        c.add(("notify", "email"), f"{email[:80]!r} is not one mail address", 'e.g. email = "me@lab.org"')
    return NotifySpec(**values)


def _syntax_problem(file: str, exc: Exception, text: str = "") -> Problem:
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    line = int(match.group(1)) if match else None
    column = int(match.group(2)) if match else None
    message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message) or "invalid TOML"
    if match is None and "end of document" in message:  # point at the end: the last line
        lines = text.rstrip("\n").split("\n")
        line, column = len(lines), len(lines[-1]) + 1
        message = message.replace("(at end of document)", "").strip() + " at the end of the file"
    return Problem(file, line, column, "", f"invalid TOML: {message}", "fix the syntax there")


def load_job(path: str) -> JobSpec:
    """Read and validate a job file; every failure is a ConfigError naming the file."""
    try:
        raw = read_regular(path, 16 * 1024 * 1024)
    except NotReadable as exc:
        raise ConfigError([Problem(path, None, None, "", f"cannot read the job file: {exc}")]) from None
    if len(raw) > 16 * 1024 * 1024:
        raise ConfigError([Problem(path, None, None, "", "the job file is larger than 16 MiB")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        problem = Problem(path, line, None, "", "the job file is not UTF-8 text", "save it as UTF-8")
        raise ConfigError([problem]) from None
    return parse_job(text, path)
