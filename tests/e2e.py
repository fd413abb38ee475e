"""Run `labrun` as a user would (a subprocess) and read `labrun status --json` back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


def write_job(tmp_path: Path, body: str, name: str = "t") -> Path:
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nname = "{name}"\n\n' + textwrap.dedent(body))
    return job


def labrun(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "LABRUN_STATE_DIR": str(tmp_path / "state"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "labrun", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


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
