"""Small helpers shared by the core tests: write a job file, run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def write_job(directory: Path, body: str, name: str = "job.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def cli_env(state_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["LABRUN_STATE_DIR"] = str(state_dir)
    env.pop("LABRUN_CONFIG", None)
    env.update(extra)
    return env


def labrun(
    state_dir: Path,
    *args: str,
    cwd: Path | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m labrun ARGS` as a user would; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "labrun", *args],
        cwd=cwd or REPO,
        env=cli_env(state_dir, **(env or {}), **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_labrun(state_dir: Path, *args: str, cwd: Path, capture: bool = False) -> subprocess.Popen[str]:
    """Start `python -m labrun ARGS` in the background (to signal it, or race it)."""
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "labrun", *args],
        cwd=cwd,
        env=cli_env(state_dir),
        stdout=out,
        stderr=out,
        text=True,
    )
