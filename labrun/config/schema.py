"""Every key a job file may hold, declared once: its kind, default and help.

The same declarations validate job files (`convert`) and generate the JSON Schema that
editors use to check a job file while it is typed (`config/jsonschema.py`).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from labrun.model import Runtime
from labrun.units import DURATION_HELP, SIZE_HELP, parse_duration, parse_size

NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
NAME_MAX = 128
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_TASKS = 1_000_000  # per job: far beyond a workstation, small enough to catch a typo
MAX_INT = 2**53  # larger integers are typos, and JSON readers lose them


@dataclass(frozen=True)
class RangeItems:
    """`items = { range = [start, stop] }` or `[start, stop, step]`, like Python's range."""

    start: int
    stop: int
    step: int = 1

    def __len__(self) -> int:
        return len(range(self.start, self.stop, self.step))


@dataclass(frozen=True)
class FromItems:
    """`items = { from = "TASK" }`: one task per non-empty line of TASK's first output,
    made when TASK succeeds; `items = "setup"` is task 0's (its manifest)."""

    task: str = "setup"

    @property
    def label(self) -> str:
        """How messages name the task the items come from."""
        return "task 0" if self.task == "setup" else f"task {self.task}"


@dataclass(frozen=True)
class FileItems:
    """`items = { file = "grid.csv" }`: rows of a file, relative to the workdir (`items_file`)."""

    path: str


Items = tuple[str, ...] | RangeItems | FromItems | FileItems


@dataclass(frozen=True)
class Dependency:
    """One `depends_on` entry: a task name, or `{ task = NAME, allow_failed = true }`."""

    task: str
    allow_failed: bool = False  # wait for it to finish, whatever its outcome


@dataclass(frozen=True)
class Relative:
    """`timeout = "300%"`: a limit of `factor` x the median of the task's succeeded attempts."""

    factor: float


@dataclass(frozen=True)
class Key:
    name: str
    kind: str  # one of the converters below
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    enum: type[enum.Enum] | None = None  # a "choice" converted to this enum's member
    minimum: float | None = None
    maximum: float | None = None


def _number(value: object, key: Key, integer: bool) -> float:
    kind_ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not kind_ok:
        what = "an integer" if integer else "a number"
        raise ValueError(f"expected {what}, got {_describe(value)}")
    assert isinstance(value, (int, float))
    number = value if integer else float(value)
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    if key.minimum is not None and number < key.minimum:
        raise ValueError(f"must be at least {_num(key.minimum)}, got {value!r}")
    limit = key.maximum if key.maximum is not None else MAX_INT
    if number > limit:
        raise ValueError(f"must be at most {_num(limit)}, got {value!r}")
    return number


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _describe(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    names.update({list: "an array", dict: "a table"})
    text = repr(value) if isinstance(value, (str, int, float)) else ""
    what = names.get(type(value), type(value).__name__)
    return f"{what} {text[:40]}".strip()


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_describe(value)}")
    return value


def _name(value: object) -> str:
    text = _string(value)
    if not NAME_RE.match(text):
        raise ValueError(f"must use only letters, digits, '-' and '_', got {text[:60]!r}")
    if len(text) > NAME_MAX:
        raise ValueError(
            f"is {len(text)} characters long; a name is at most {NAME_MAX} (it names files and "
            "directories, with room for an item's [index])"
        )
    return text


def _command(value: object) -> str | tuple[str, ...]:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("the command is empty")
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if not value[0]:
            raise ValueError("the program (first element) is empty")
        return tuple(value)
    raise ValueError(
        "expected a string (run by /bin/sh -c) or a non-empty array of strings (exec'd), "
        f"got {_describe(value)}"
    )


def _items(value: object) -> Items:
    if value == "setup":
        return FromItems("setup")
    if isinstance(value, dict) and set(value) == {"from"}:
        source = value["from"]
        if not isinstance(source, str) or not NAME_RE.match(source):
            raise ValueError('expected items = { from = "TASK" } with the name of a task')
        return FromItems(source)
    if isinstance(value, list):
        if not value:
            raise ValueError("an empty items list would make no tasks; remove `items` instead")
        out = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise ValueError(f"item {i} must be a string or a number, got {_describe(item)}")
            out.append(str(item))
        if len(out) > MAX_TASKS:
            raise ValueError(f"at most {MAX_TASKS} items")
        return tuple(out)
    if isinstance(value, dict) and set(value) == {"file"}:
        path = value["file"]
        if not isinstance(path, str) or not path.strip() or "\0" in path:
            raise ValueError('expected items = { file = "grid.csv" } with the path of a file')
        return FileItems(path)
    if isinstance(value, dict) and set(value) == {"range"}:
        bounds = value["range"]
        ok = isinstance(bounds, list) and len(bounds) in (2, 3)
        if ok and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
            if any(abs(b) > MAX_INT for b in bounds):
                raise ValueError("range bounds are too large")
            if len(bounds) == 3 and bounds[2] == 0:
                raise ValueError("the range step cannot be 0")
            items = RangeItems(*bounds)
            if len(items) == 0:
                raise ValueError(f"range {bounds} is empty")
            if len(items) > MAX_TASKS:
                raise ValueError(f"range {bounds} makes {len(items)} tasks; at most {MAX_TASKS}")
            return items
        raise ValueError(
            'expected { range = [start, stop] } or [start, stop, step] of integers, or { file = "grid.csv" }'
        )
    raise ValueError(
        'expected an array of strings or numbers, { range = [0, 100] }, { file = "grid.csv" }, '
        f'{{ from = "TASK" }} or "setup", got {_describe(value)}'
    )


def _env(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a table of NAME = value, got {_describe(value)}")
    out = {}
    for name, item in value.items():
        if not ENV_NAME_RE.match(name):
            raise ValueError(f"{name!r} is not a valid environment variable name")
        if isinstance(item, bool):
            item = "1" if item else "0"
        if not isinstance(item, (str, int, float)):
            raise ValueError(f"{name} must be a string or a number, got {_describe(item)}")
        if isinstance(item, str) and "\0" in item:
            raise ValueError(f"{name} contains a NUL character")
        out[name] = str(item)
    return out


def convert(key: Key, value: object) -> Any:
    """The typed value of `value` for `key`; raises ValueError with a message for the user."""
    if key.kind == "str":
        return _string(value)
    if key.kind == "name":
        return _name(value)
    if key.kind == "int":
        return int(_number(value, key, integer=True))
    if key.kind == "number":
        return _number(value, key, integer=False)
    if key.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_describe(value)}")
        return value
    if key.kind == "size":
        size = parse_size(value)
        if key.minimum is not None and size < key.minimum:
            raise ValueError(f"must be at least {_num(key.minimum)} bytes, got {value!r}")
        if size > MAX_INT:
            raise ValueError(f"{value!r} is larger than any machine")
        return size
    if key.kind == "duration":
        seconds = parse_duration(value)
        if seconds > 366 * 86400:
            raise ValueError(f"{value!r} is more than a year")
        return seconds
    if key.kind == "timeout":
        return _timeout(value, key)
    if key.kind == "choice":
        text = _string(value)
        if text not in key.choices:
            raise ValueError(f"expected one of {', '.join(key.choices)}, got {text!r}")
        return key.enum(text) if key.enum is not None else text
    if key.kind == "command":
        return _command(value)
    if key.kind == "items":
        return _items(value)
    if key.kind == "env":
        return _env(value)
    if key.kind in ("size_map", "check_list"):
        return _preflight_value(key.kind, value)
    if key.kind == "str_list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected an array of strings, got {_describe(value)}")
        return tuple(value)
    if key.kind == "deps":
        return _dependencies(value)
    if key.kind == "exit_codes":
        return _exit_codes(value)
    if key.kind == "choice_list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            choices = ", ".join(map(repr, key.choices))
            raise ValueError(f"expected an array of {choices}, got {_describe(value)}")
        wrong = [v for v in value if v not in key.choices]
        if wrong:
            raise ValueError(f"{wrong[0]!r} is not one of {', '.join(key.choices)}")
        return tuple(dict.fromkeys(value))
    raise AssertionError(f"unknown key kind {key.kind}")


_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def _timeout(value: object, key: Key) -> float | Relative:
    """A duration, or a percentage of the median of the task's succeeded attempts."""
    if isinstance(value, str) and "%" in value:
        match = _PERCENT_RE.match(value)
        if match is None:
            raise ValueError(f'expected a percentage such as "300%" or {DURATION_HELP}, got {value[:40]!r}')
        percent = float(match.group(1))
        if percent <= 100 or percent > 100_000:
            raise ValueError(
                f"a relative timeout is more than 100% (100% would stop half the tasks) and at most "
                f'100000%, got {value.strip()!r}; "300%" stops an attempt at 3x the median'
            )
        return Relative(percent / 100)
    return float(convert(Key(key.name, "duration", None, key.help), value))


def _dependencies(value: object) -> tuple[Dependency, ...]:
    if not isinstance(value, list):
        raise ValueError(
            f'expected an array of task names or {{ task = "NAME", allow_failed = true }}, '
            f"got {_describe(value)}"
        )
    out = []
    for i, entry in enumerate(value):
        if isinstance(entry, str):
            out.append(Dependency(entry))
            continue
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("task"), str)
            and set(entry) <= {"task", "allow_failed"}
        ):
            allow = entry.get("allow_failed", False)
            if not isinstance(allow, bool):
                raise ValueError(f"entry {i + 1}: allow_failed must be true or false, got {_describe(allow)}")
            out.append(Dependency(entry["task"], allow))
            continue
        raise ValueError(
            f'entry {i + 1} must be a task name or {{ task = "NAME", allow_failed = true }}, '
            f"got {_describe(entry)}"
        )
    return tuple(out)


def _exit_codes(value: object) -> tuple[int, ...]:
    ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok:
        raise ValueError(f"expected an array of exit codes (integers 1 to 255), got {_describe(value)}")
    assert isinstance(value, list)
    wrong = [v for v in value if not 1 <= v <= 255]
    if wrong:
        raise ValueError(f"exit codes are 1 to 255 (0 is success), got {wrong[0]}")
    return tuple(sorted(set(value)))


def _preflight_value(kind: str, value: object) -> Any:
    """`disk_free = { "out/" = "20GiB" }` and `checks = [{ name, command }]` of [preflight]."""
    if kind == "size_map":
        if not isinstance(value, dict):
            raise ValueError(f'expected a table of "PATH" = "SIZE", got {_describe(value)}')
        try:
            return {path: parse_size(size) for path, size in value.items()}
        except ValueError as exc:
            raise ValueError(f"disk_free: {exc}") from None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"expected an array of {{ name = ..., command = ... }}, got {_describe(value)}")
    checks = []
    for i, entry in enumerate(value):
        name, command = entry.get("name"), entry.get("command")
        if set(entry) != {"name", "command"} or not isinstance(name, str) or not isinstance(command, str):
            raise ValueError(f"check {i + 1} must have exactly a string name and a string command")
        if not command.strip():
            raise ValueError(f"check {name!r} has an empty command")
        checks.append((name, command))
    return tuple(checks)


RUNTIMES = tuple(runtime.value for runtime in Runtime)
ON_OOM = ("grow", "retry", "fail")

TASK_KEYS: tuple[Key, ...] = (
    Key("name", "name", None, "The task's name: letters, digits, '-' and '_'."),
    Key("command", "command", None, "A string runs through /bin/sh -c; an array is exec'd."),
    Key("items", "items", None, "Fan-out: one task per item, or { range = [0, 100] }."),
    Key("runtime", "choice", "process", "Where an attempt runs.", choices=RUNTIMES, enum=Runtime),
    Key("cpus", "number", 1.0, "CPUs an attempt needs (fractions allowed).", minimum=0.01),
    Key("memory", "size", 1024**3, "Memory an attempt needs: " + SIZE_HELP + ".", minimum=1),
    Key(
        "timeout",
        "timeout",
        None,
        "Kill an attempt after this long: " + DURATION_HELP + ', or "300%" of the median '
        "duration of the task's succeeded attempts (relative_min of them; before: timeout_floor).",
    ),
    Key(
        "relative_min",
        "int",
        5,
        'Succeeded attempts a relative timeout ("300%") waits for before it applies.',
        minimum=1,
        maximum=1_000_000,
    ),
    Key(
        "timeout_floor",
        "duration",
        None,
        "Least time limit of a relative timeout, and the limit before it applies: " + DURATION_HELP + ".",
    ),
    Key(
        "retries",
        "int",
        3,
        "Counted failures allowed after the first attempt.",
        minimum=0,
        maximum=1000,
    ),
    Key("retry_delay", "duration", 10.0, "First backoff; doubles with jitter."),
    Key("retry_delay_max", "duration", 600.0, "Longest backoff between attempts."),
    Key("max_attempts", "int", None, "Cap on all attempts, counted or not.", minimum=1),
    Key(
        "no_retry_exit",
        "exit_codes",
        (),
        "Exit codes that fail the task at once, without retry (e.g. [1, 2] for a deterministic error).",
    ),
    Key("grace", "duration", 10.0, "Between SIGTERM and SIGKILL when stopping an attempt."),
    Key("env", "env", {}, "Environment variables added for the task."),
    Key(
        "outputs",
        "str_list",
        (),
        "Must be present after exit 0: a non-empty file, or a directory with an entry.",
    ),
    Key(
        "depends_on",
        "deps",
        (),
        'Tasks that must succeed first; { task = "NAME", allow_failed = true } only waits for them to end.',
    ),
    Key("nodes", "str_list", (), "Nodes the task may run on (names from labrun.toml); empty: any."),
    Key("gpus", "int", 0, "GPUs an attempt needs, each its own (CUDA_VISIBLE_DEVICES).", minimum=0),
    # -- isolation and OOM (runtime cgroup / docker) --
    Key("image", "str", None, "Docker image (runtime docker): name:tag."),
    Key("image_tar", "str", None, "A `docker save` tarball loaded when the image is missing."),
    Key("cpuset", "str", None, 'CPUs to pin to (runtime cgroup), e.g. "0-3,6".'),
    Key("privileged", "bool", False, "Run the container privileged (runtime docker)."),
    Key("network", "str", None, 'Docker network mode, e.g. "none" (default: the daemon\'s).'),
    Key("memory_max", "size", None, "Never grow memory past this on OOM: " + SIZE_HELP + ".", minimum=1),
    Key("memory_growth", "number", 2.0, "Memory factor for the retry after an OOM kill.", minimum=1),
    Key(
        "learn_memory",
        "bool",
        True,
        "Start at the peak measured in the job's earlier runs + 20% (capped) when that is more.",
    ),
    Key("on_oom", "choice", "grow", "After an OOM kill: grow memory, retry as is, or fail.", choices=ON_OOM),
    # -- stragglers (labrun/speculation.py) --
    Key(
        "speculate",
        "bool",
        False,
        "Run a copy of a straggler on another node (past 3x the median and speculate_after); first wins.",
    ),
    Key(
        "speculate_after",
        "duration",
        300.0,
        "An attempt is not a straggler before it ran this long: " + DURATION_HELP + ".",
    ),
    Key(
        "speculate_shared_outputs",
        "bool",
        False,
        "Speculate although outputs are not under {attempt_dir}: the task writes to a temporary "
        "name and renames, or is idempotent, so two copies never leave a half-written file.",
    ),
    Key(
        "secret_env",
        "str_list",
        (),
        "Names of variables passed from labrun's environment, never stored or printed.",
    ),
)
TASK_KEY_NAMES = tuple(k.name for k in TASK_KEYS)
TASK_KEYS_BY_NAME: Mapping[str, Key] = {k.name: k for k in TASK_KEYS}

JOB_KEYS: tuple[Key, ...] = (
    Key("name", "name", None, "The job's name: letters, digits, '-' and '_'."),
    Key("max_parallel", "int", None, "Cap on concurrent attempts.", minimum=1, maximum=100_000),
    Key("workdir", "str", ".", "Working directory of every task, relative to the job file."),
    Key("resume", "bool", False, "`labrun run` continues the latest unfinished run (as --resume)."),
)
JOB_KEYS_BY_NAME: Mapping[str, Key] = {k.name: k for k in JOB_KEYS}
TOP_LEVEL = ("job", "defaults", "tasks", "setup", "preflight", "notify")
SETUP_NAME = "setup"  # task 0's name; `0` addresses it too

PREFLIGHT_KEYS: tuple[Key, ...] = (
    Key("commands", "str_list", (), "Commands that must be on PATH."),
    Key("paths", "str_list", (), "Paths that must exist and be readable (relative: to the workdir)."),
    Key("writable", "str_list", (), "Paths that must be writable or creatable."),
    Key("env", "str_list", (), "Environment variables that must be set and non-empty."),
    Key("tcp", "str_list", (), "host:port addresses that must accept a connection."),
    Key("disk_free", "size_map", {}, 'Free space needed per path: { "out/" = "20GiB" }.'),
    Key("checks", "check_list", (), "Custom checks: [{ name, command }]; exit 0 passes."),
    Key("timeout", "duration", 5.0, "Time limit of each check: " + DURATION_HELP + "."),
)
PREFLIGHT_KEYS_BY_NAME: Mapping[str, Key] = {k.name: k for k in PREFLIGHT_KEYS}

NOTIFY_EVENTS = ("failure", "recovery", "success")
NOTIFY_KEYS: tuple[Key, ...] = (
    Key("command", "str", None, "Run (sh -c, in the workdir) with the run's summary JSON on stdin."),
    Key("email", "str", None, "Mail the summary to this address through the local sendmail."),
    Key(
        "on",
        "choice_list",
        ("failure", "recovery"),
        "When to notify: failure, recovery (a success after a failed run), success.",
        choices=NOTIFY_EVENTS,
    ),
    Key("timeout", "duration", 60.0, "Time limit of the notifier: " + DURATION_HELP + "."),
)
NOTIFY_KEYS_BY_NAME: Mapping[str, Key] = {k.name: k for k in NOTIFY_KEYS}
