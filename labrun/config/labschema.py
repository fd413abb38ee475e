"""Every key labrun.toml may hold, declared once: the lab's own and each backend's node keys.

A backend declares the keys of its `[nodes.NAME]` tables as `Key`s (the same declaration
job keys use, `config/schema.py`); `validate_table` turns one table into typed values with
file:line:col problems and did-you-mean hints, and `lab_json_schema` turns the same
declarations into the JSON Schema that `labrun schema --lab` prints. Kinds that only lab
files use ("auto" numbers, GPU lists, file paths, ssh options, runtime lists) are
converted here; every other kind by `schema.convert`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from labrun.config.jsonschema import key_schema
from labrun.config.schema import Key, convert
from labrun.model import Runtime
from labrun.units import parse_duration, parse_size

Where = tuple[str, ...]
ProblemFn = Callable[..., None]  # (keys, message, hint="")


class KeyedBackend(Protocol):
    """What the lab schema needs of a backend: its name, help, keys and required keys."""

    name: str
    help: str
    keys: tuple[Key, ...]
    required: tuple[str, ...]


LAB_KEYS: tuple[Key, ...] = (
    Key("state_dir", "lab_str", None, "Where runs, logs and locks live (default: ~/.local/state/labrun)."),
    Key(
        "node_max_failures",
        "int",
        5,
        "Counted failures of a run on one node before it is avoided.",
        minimum=1,
    ),
)
NODE_COMMON = Key(
    "backend", "str", None, "Which backend runs this node; usually implied by the table's keys."
)


def _auto_cpus(value: object) -> float | None:
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f'expected "auto" or a positive number, got {value!r}')
    return float(value)


def _auto_size(value: object) -> int | None:
    return None if value == "auto" else parse_size(value)


def _gpus(value: object) -> tuple[int, ...] | None:
    """ "auto" -> None; a list of distinct non-negative indices -> the tuple."""
    if value == "auto":
        return None
    if (
        isinstance(value, list)
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
        and len(set(value)) == len(value)
    ):
        return tuple(value)
    raise ValueError(f'expected "auto" or a list of distinct GPU indices like [0, 1], got {value!r}')


def _path(value: object, base: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a file path (a string)")
    path = os.path.expanduser(value)
    return path if os.path.isabs(path) else os.path.join(base, path)


def _ssh_options(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise ValueError('expected a list of ssh options like ["Port=2222", "User=alice"]')
    return tuple(value)


def _runtimes(value: object, key: Key, backend: str) -> tuple[Runtime, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError('expected a non-empty list of runtimes like ["process"]')
    unknown = [v for v in value if v not in key.choices]
    if unknown:
        raise ValueError(
            f"runtime {unknown[0]!r} is not available on {backend} nodes; "
            f"supported there: {', '.join(key.choices)}"
        )
    return tuple(Runtime(v) for v in value)


def _remote_dir(value: object) -> str:
    if not isinstance(value, str) or not (value.startswith("/") or value.startswith("~")):
        raise ValueError('expected an absolute path on the node, or one under ~ (e.g. "~/.cache/labrun")')
    return value


def _silence(value: object) -> float:
    seconds = parse_duration(value)
    if seconds < 1:
        raise ValueError("must be at least 1s: shorter silences are normal network hiccups")
    return seconds


SLURM_TABLE_KEYS = ("partition", "account", "qos", "options")


def _slurm(value: object) -> dict[str, Any]:
    """`slurm = { partition, account, qos, options }`, checked key by key (the slurm backend
    turns it into its options and refuses the sbatch options labrun sets itself)."""
    if not isinstance(value, dict):
        raise ValueError('expected a table like { partition = "gpu", account = "lab" }')
    for key, item in value.items():
        if key not in SLURM_TABLE_KEYS:
            raise ValueError(f"unknown key slurm.{key}; {unknown_hint(key, SLURM_TABLE_KEYS)}")
        if key != "options" and (not isinstance(item, str) or not item.strip() or item.startswith("-")):
            raise ValueError(f'slurm.{key}: expected a name like "gpu", got {item!r}')
    options = value.get("options", [])
    if not isinstance(options, list) or not all(isinstance(o, str) and o.startswith("-") for o in options):
        raise ValueError('slurm.options: expected a list of sbatch options like ["--constraint=a100"]')
    return {**value, "options": tuple(options)}


def _lab_str(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a directory path (a string)")
    return value


def convert_lab(key: Key, value: object, base: str, backend: str = "") -> Any:
    """The typed value of `value` for a lab key; ValueError with a message for the user.

    `base` is labrun.toml's directory (relative paths are relative to it)."""
    simple: Mapping[str, Callable[[object], Any]] = {
        "auto_cpus": _auto_cpus,
        "auto_size": _auto_size,
        "gpus": _gpus,
        "ssh_options": _ssh_options,
        "remote_dir": _remote_dir,
        "silence": _silence,
        "lab_str": _lab_str,
        "slurm": _slurm,
    }
    if key.kind in simple:
        return simple[key.kind](value)
    if key.kind == "path":
        return _path(value, base)
    if key.kind == "runtimes":
        return _runtimes(value, key, backend)
    return convert(key, value)


def unknown_hint(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"


def _default(key: Key, backend: str) -> Any:
    """A key's default as its typed value (runtimes are declared as the names users write)."""
    if key.kind == "runtimes":
        return _runtimes(list(key.default), key, backend)
    return key.default


def validate_table(
    keys: Sequence[Key],
    table: Mapping[str, Any],
    where: Where,
    problem: ProblemFn,
    base: str,
    backend: str = "",
    ignore: Sequence[str] = (),
) -> dict[str, Any]:
    """Typed values of `table` for `keys`, defaults filled in; each problem reported once."""
    known = [k.name for k in keys]
    for name in table:
        if name not in known and name not in ignore:
            problem((*where, name), f"unknown key {name!r}", unknown_hint(name, known))
    values: dict[str, Any] = {}
    for key in keys:
        if key.name not in table:
            values[key.name] = _default(key, backend)
            continue
        try:
            values[key.name] = convert_lab(key, table[key.name], base, backend)
        except ValueError as exc:
            problem((*where, key.name), str(exc))
            values[key.name] = _default(key, backend)
    return values


def _lab_kind_schema(key: Key) -> dict[str, Any]:
    size = key_schema(Key(key.name, "size", None, ""))
    kinds: dict[str, dict[str, Any]] = {
        "auto_cpus": {"oneOf": [{"const": "auto"}, {"type": "number", "exclusiveMinimum": 0}]},
        "auto_size": {"oneOf": [{"const": "auto"}, *size["oneOf"]]},
        "gpus": {
            "oneOf": [
                {"const": "auto"},
                {"type": "array", "uniqueItems": True, "items": {"type": "integer", "minimum": 0}},
            ]
        },
        "path": {"type": "string", "minLength": 1},
        "lab_str": {"type": "string", "minLength": 1},
        "ssh_options": {"type": "array", "items": {"type": "string", "pattern": "="}},
        "runtimes": {"type": "array", "minItems": 1, "items": {"enum": list(key.choices)}},
        "remote_dir": {"type": "string", "pattern": "^[/~]"},
        "silence": key_schema(Key(key.name, "duration", None, "")),
        "slurm": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                **{k: {"type": "string", "minLength": 1} for k in SLURM_TABLE_KEYS if k != "options"},
                "options": {"type": "array", "items": {"type": "string", "pattern": "^-"}},
            },
        },
    }
    if key.kind not in kinds:
        return key_schema(key)
    return {
        **kinds[key.kind],
        "description": key.help + (f" Default: {key.default!r}." if key.default else ""),
    }


def node_table_schema(backend: KeyedBackend) -> dict[str, Any]:
    properties = {k.name: _lab_kind_schema(k) for k in backend.keys}
    properties["backend"] = {"const": backend.name, "description": NODE_COMMON.help}
    return {
        "title": f"[nodes.NAME] of the {backend.name} backend",
        "description": backend.help,
        "type": "object",
        "additionalProperties": False,
        "required": list(backend.required),
        "properties": properties,
    }


def lab_json_schema(backends: Sequence[KeyedBackend], fixed: Mapping[str, str]) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of labrun.toml; `fixed` pins node names to a backend."""
    tables = {b.name: node_table_schema(b) for b in backends}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "labrun lab configuration (labrun.toml)",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **{k.name: _lab_kind_schema(k) for k in LAB_KEYS},
            "nodes": {
                "type": "object",
                "description": "One table per node, [nodes.NAME], each run by one backend.",
                "properties": {name: tables[backend] for name, backend in fixed.items() if backend in tables},
                "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
                "additionalProperties": {
                    "anyOf": [table for name, table in tables.items() if name not in fixed.values()]
                },
            },
        },
    }
