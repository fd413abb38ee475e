"""Small helpers shared by the core tests: write a job file, run the real CLI."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def finished_run(directory: Path, job_text: str, exit_code: int = 1) -> Path:
    """Run the job in `directory` through the CLI to its end; its state directory."""
    job = write_job(directory, job_text)
    state = directory / "state"
    done = labrun(state, "run", str(job), "--plain", cwd=directory)
    assert done.returncode == exit_code, done.stdout + done.stderr
    return state


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


@contextlib.contextmanager
def tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A real tmpfs mounted at `mount` (`-o options`), unmounted after; skips without root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
