"""The README documents every job-file key, and its commands are the ones that exist."""

from __future__ import annotations

from helpers import REPO

from labrun.cli import app
from labrun.config.schema import JOB_KEYS, PREFLIGHT_KEYS, TASK_KEYS


def test_every_job_file_key_is_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [k.name for k in (*JOB_KEYS, *TASK_KEYS, *PREFLIGHT_KEYS) if f"| `{k.name}` |" not in readme]
    assert missing == [], f"document these keys in README.md: {missing}"


def test_every_command_is_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    names = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]
    missing = [n for n in names if f"`labrun {n}" not in readme]
    assert missing == [], f"document these commands in README.md: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (REPO / ".ci" / "run").read_text()
    assert "make test" in (REPO / "README.md").read_text()
