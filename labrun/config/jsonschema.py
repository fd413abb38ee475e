"""The JSON Schema of job files, generated from the key declarations in `schema.py`.

Editors that validate TOML against a JSON Schema (Taplo, Even Better TOML) check a job
file with it while it is typed: `labrun schema > labrun.schema.json`.
"""

from __future__ import annotations

from typing import Any

from labrun.config.schema import (
    ENV_NAME_RE,
    JOB_KEYS,
    NAME_RE,
    NOTIFY_KEYS,
    PREFLIGHT_KEYS,
    TASK_KEYS,
    Key,
)


def key_schema(key: Key) -> dict[str, Any]:
    duration: dict[str, Any] = {
        "oneOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d)\s*)+$"},
        ]
    }
    size: dict[str, Any] = {
        "oneOf": [
            {"type": "integer", "minimum": 0},
            {"type": "string", "pattern": r"^\s*\d*\.?\d+\s*([kKmMgGtT]i?[bB]?|[bB])?\s*$"},
        ]
    }
    items: dict[str, Any] = {
        "oneOf": [
            {"type": "array", "minItems": 1, "items": {"type": ["string", "number"]}},
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["range"],
                "properties": {
                    "range": {
                        "type": "array",
                        "items": {"type": "integer"},
                        "minItems": 2,
                        "maxItems": 3,
                    }
                },
            },
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["file"],
                "properties": {"file": {"type": "string", "minLength": 1}},
            },
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["from"],
                "properties": {"from": {"type": "string", "pattern": NAME_RE.pattern}},
            },
            {"const": "setup"},
        ]
    }
    by_kind: dict[str, dict[str, Any]] = {
        "str": {"type": "string"},
        "name": {"type": "string", "pattern": NAME_RE.pattern},
        "int": {"type": "integer"},
        "number": {"type": "number"},
        "bool": {"type": "boolean"},
        "size": size,
        "duration": duration,
        "timeout": {"oneOf": [*duration["oneOf"], {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*%\s*$"}]},
        "choice": {"type": "string", "enum": list(key.choices)},
        "command": {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "items": {"type": "string"}},
            ]
        },
        "items": items,
        "env": {
            "type": "object",
            "propertyNames": {"pattern": ENV_NAME_RE.pattern},
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        "str_list": {"type": "array", "items": {"type": "string"}},
        "deps": {
            "type": "array",
            "items": {
                "oneOf": [
                    {"type": "string"},
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["task"],
                        "properties": {"task": {"type": "string"}, "allow_failed": {"type": "boolean"}},
                    },
                ]
            },
        },
        "choice_list": {"type": "array", "items": {"type": "string", "enum": list(key.choices)}},
        "exit_codes": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 255}},
        "size_map": {"type": "object", "additionalProperties": size},
        "check_list": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "command"],
                "properties": {"name": {"type": "string"}, "command": {"type": "string"}},
            },
        },
    }
    schema = dict(by_kind[key.kind])
    schema["description"] = key.help
    if key.minimum is not None and key.kind in ("int", "number"):
        schema["minimum"] = key.minimum
    if key.maximum is not None and key.kind in ("int", "number"):
        schema["maximum"] = key.maximum
    return schema


def json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of the job file."""
    task_props = {k.name: key_schema(k) for k in TASK_KEYS}
    defaults_props = {k: v for k, v in task_props.items() if k != "name"}
    setup_props = {k: v for k, v in task_props.items() if k not in ("name", "items")}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "labrun job file",
        "type": "object",
        "additionalProperties": False,
        "required": ["job", "tasks"],
        "properties": {
            "job": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {k.name: key_schema(k) for k in JOB_KEYS},
            },
            "defaults": {
                "type": "object",
                "additionalProperties": False,
                "properties": defaults_props,
            },
            "tasks": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": task_props,
                },
            },
            "setup": {"type": "object", "additionalProperties": False, "properties": setup_props},
            "preflight": {
                "type": "object",
                "additionalProperties": False,
                "properties": {k.name: key_schema(k) for k in PREFLIGHT_KEYS},
            },
            "notify": {
                "type": "object",
                "additionalProperties": False,
                "properties": {k.name: key_schema(k) for k in NOTIFY_KEYS},
            },
        },
    }
