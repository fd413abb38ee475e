"""Jobs of one task list, run in tmp_path; `labrun status --json` read back (over helpers.py)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import helpers

MiB = 1024 * 1024


def write_job(tmp_path: Path, body: str, name: str = "t") -> Path:
    """A job file named `name` with `body` as its tasks, in tmp_path."""
    return helpers.write_job(tmp_path, f'[job]\nname = "{name}"\n\n' + textwrap.dedent(body))


def labrun(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`labrun ARGS` run in tmp_path with its state in tmp_path/state."""
    return helpers.labrun(tmp_path / "state", *args, cwd=tmp_path, timeout=timeout, env=env)


def status(tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = labrun(tmp_path, "status", "last", "--json", env=env)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def attempts(tmp_path: Path, task: str = "t", env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    for entry in status(tmp_path, env)["tasks"]:
        if entry["id"] == task:
            found: list[dict[str, Any]] = entry["attempts"]
            return found
    raise AssertionError(f"no task {task}")
