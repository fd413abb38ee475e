"""Tables fit the terminal (columns from the data and the width, long names shortened in
the middle); `run --wait` says what it waits for; `logs -f` waits for a task to start."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from helpers import cli_env, labrun, write_job

from labrun.app import find_run
from labrun.store import Store
from labrun.views.build import runs_view, status_view
from labrun.views.text import write_runs_table, write_status_table

LONG_JOB = "resize-all-the-images-of-the-2024-field-campaign"
LONG_TASK = "resize-images-for-the-training-set-of-the-big-model"


def _run_long_names(tmp_path: Path) -> Store:
    write_job(
        tmp_path,
        f"""
        [job]
        name = "{LONG_JOB}"
        [[tasks]]
        name = "{LONG_TASK}"
        items = [1, 2, 3]
        command = "true"
        [[tasks]]
        name = "s"
        command = "true"
        """,
    )
    assert labrun(tmp_path / "s", "run", "job.toml", "--plain", cwd=tmp_path).returncode == 0
    return Store(str(tmp_path / "s" / "labrun.db"))


def _column(lines: list[str], word: str) -> set[int]:
    return {line.index(word) for line in lines if word in line}


def test_status_at_80_columns_shortens_names_in_the_middle(tmp_path: Path, capsys: object) -> None:
    store = _run_long_names(tmp_path)
    out = tmp_path / "out.txt"
    with out.open("w") as handle:
        write_status_table(status_view(store, find_run(store, "last"), False), handle, columns=80)
    lines = out.read_text().splitlines()[2:]
    assert len(_column(lines, "succeeded")) == 1, lines  # one column for the state, on every row
    rows = [line for line in lines if "[2]" in line]
    assert rows and "…" in rows[0] and rows[0].startswith(LONG_TASK[:6])  # start and item kept
    assert all(len(line) <= 80 for line in lines if "[" in line), lines  # (no reason: all succeeded)
    with out.open("w") as handle:  # piped: whole names, still aligned
        write_status_table(status_view(store, find_run(store, "last"), False), handle, columns=None)
    lines = out.read_text().splitlines()[2:]
    assert f"{LONG_TASK}[2]" in out.read_text() and len(_column(lines, "succeeded")) == 1


def test_runs_at_80_columns_keeps_its_columns(tmp_path: Path) -> None:
    store = _run_long_names(tmp_path)
    write_job(tmp_path, '[job]\nname = "short"\n[[tasks]]\nname = "t"\ncommand = "true"\n', "short.toml")
    assert labrun(tmp_path / "s", "run", "short.toml", "--plain", cwd=tmp_path).returncode == 0
    out = tmp_path / "runs.txt"
    with out.open("w") as handle:
        write_runs_table(runs_view(store, 20), handle, columns=80)
    lines = out.read_text().splitlines()
    assert len(_column(lines[1:], "succeeded")) == 1 and lines[0].index("STATE") == lines[1].index(
        "succeeded"
    )
    assert all(len(line) <= 80 for line in lines), lines
    assert "…" in out.read_text()


def _wait_for_text(path: Path, text: str, limit: float = 60) -> str:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = path.read_text() if path.exists() else ""
        if text in found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in {path}: {found!r}")


def _gated_job(tmp_path: Path) -> None:
    write_job(
        tmp_path,
        """
        [job]
        name = "gated"
        [[tasks]]
        name = "a"
        command = "while [ ! -e go ]; do sleep 0.1; done"
        [[tasks]]
        name = "b"
        depends_on = ["a"]
        command = "echo hello from b"
        """,
    )


def _start(tmp_path: Path, *args: str, out: Path, err: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "labrun", *args],
        cwd=tmp_path,
        env=cli_env(tmp_path / "s"),
        stdout=out.open("wb"),
        stderr=err.open("wb"),
    )


def test_run_wait_says_which_run_and_pid_it_waits_for(tmp_path: Path) -> None:
    _gated_job(tmp_path)
    first = _start(tmp_path, "run", "job.toml", "--plain", out=tmp_path / "1.out", err=tmp_path / "1.err")
    _wait_for_text(tmp_path / "s" / "locks" / "gated.lock.holder", '"run": 1')
    second = _start(
        tmp_path, "run", "job.toml", "--plain", "--wait", out=tmp_path / "2.out", err=tmp_path / "2.err"
    )
    said = _wait_for_text(tmp_path / "2.err", "waiting for it")
    assert f"(run 1, pid {first.pid})" in said
    (tmp_path / "go").touch()
    assert first.wait(60) == 0 and second.wait(60) == 0


def test_logs_follow_waits_for_a_task_that_has_not_started(tmp_path: Path) -> None:
    _gated_job(tmp_path)
    runner = _start(tmp_path, "run", "job.toml", "--plain", out=tmp_path / "r.out", err=tmp_path / "r.err")
    _wait_for_text(tmp_path / "s" / "locks" / "gated.lock.holder", '"run": 1')
    follow = _start(tmp_path, "logs", "-f", "last", "b", out=tmp_path / "f.out", err=tmp_path / "f.err")
    said = _wait_for_text(tmp_path / "f.err", "has not started yet")
    assert "waiting for its first attempt" in said and follow.poll() is None
    (tmp_path / "go").touch()
    assert follow.wait(60) == 0
    assert (tmp_path / "f.out").read_text() == "hello from b\n"
    assert runner.wait(60) == 0
