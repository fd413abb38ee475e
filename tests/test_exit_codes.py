"""Exit codes as the README's table says, `--version`, and runs named by job (`last:JOB`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_helper import make_labrun
from helpers import labrun, write_job

from labrun import app as labrun_app


def test_an_unusable_state_directory_exits_2_and_names_it(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the state directory should be\n")
    done = labrun(blocker / "state", "run", "examples/hello.toml")
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"cannot create the state directory {blocker / 'state'}" in done.stderr
    assert "LABRUN_STATE_DIR" in done.stderr and "Traceback" not in done.stderr
    assert labrun(blocker / "state", "runs").returncode == 2


def test_an_internal_error_exits_70_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("the store returned nonsense")

    monkeypatch.setenv("LABRUN_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("LABRUN_DEBUG", raising=False)
    monkeypatch.setattr(labrun_app, "find_run", broken)
    done = make_labrun(capsys)("status", "last")
    assert done.code == 70
    (line,) = done.err.strip().splitlines()
    assert "internal error (a bug in labrun): RuntimeError: the store returned nonsense" in line
    assert "LABRUN_DEBUG=1" in line


def test_version(tmp_path: Path) -> None:
    done = labrun(tmp_path, "--version")
    assert done.returncode == 0
    assert re.match(r"labrun \d+\.\d+\.\d+ \(Python 3\.\d+", done.stdout), done.stdout


def _two_jobs(tmp_path: Path) -> Path:
    for name in ("alpha", "beta"):
        job = write_job(tmp_path, f'[job]\nname = "{name}"\n[[tasks]]\nname = "t"\ncommand = "echo {name}"\n')
        assert labrun(tmp_path / "s", "run", str(job), "--plain").returncode == 0
    return tmp_path / "s"


def test_runs_of_one_job_and_last_of_a_job(tmp_path: Path) -> None:
    state = _two_jobs(tmp_path)  # run 1: alpha, run 2: beta
    only = labrun(state, "runs", "--job", "alpha").stdout
    assert "alpha" in only and "beta" not in only
    assert "beta" in labrun(state, "runs").stdout
    assert labrun(state, "logs", "last", "t").stdout == "beta\n"
    assert labrun(state, "logs", "last:alpha", "t").stdout == "alpha\n"
    status = labrun(state, "status", "last:alpha", "--json")
    assert '"job": "alpha"' in status.stdout
    typo = labrun(state, "status", "last:alpah")
    assert typo.returncode == 2 and "did you mean last:alpha?" in typo.stderr
    unknown = labrun(state, "why", "last:zzz", "t")
    assert unknown.returncode == 2 and "jobs with runs: alpha, beta" in unknown.stderr


def test_a_huge_run_reference_is_not_echoed_whole(tmp_path: Path) -> None:
    done = labrun(tmp_path, "status", "x" * 100_000)
    assert done.returncode == 2
    assert len(done.stderr) < 300 and "…" in done.stderr
