"""The state directory on a full filesystem (a 2 MiB tmpfs the test mounts; needs root)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import tmpfs
from labrun_proc import integrity, query, run

JOB = """
[job]
name = "full"
max_parallel = 1
[[tasks]]
name = "t"
items = {{ range = [0, 20] }}
command = '''echo {{item}}; {fill}'''
retries = 0
"""


@pytest.fixture
def small_state(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "state", "size=2m") as state:
        yield state


def _fill(path: Path) -> None:
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=4k"], capture_output=True)


def _assert_clear_error(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 2, done.stdout + done.stderr  # the state directory, not a task
    assert "the disk holding the state directory is full" in done.stderr, done.stderr
    assert "--resume" in done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr


def test_full_before_the_run(tmp_path: Path, small_state: Path) -> None:
    (tmp_path / "job.toml").write_text(JOB.format(fill="true"))
    assert run(["run", "job.toml", "--plain"], small_state, tmp_path).returncode == 0
    _fill(small_state / "filler")
    _assert_clear_error(run(["run", "job.toml", "--plain"], small_state, tmp_path))
    (small_state / "filler").unlink()
    assert integrity(small_state) == "ok"
    assert query(small_state, "SELECT id, state FROM runs") == [(1, "succeeded")]


def test_full_in_the_middle_of_a_run(tmp_path: Path, small_state: Path) -> None:
    filler = small_state / "filler"
    # once only: a resume runs the job text stored with the run, this command included
    once = f"[ $LABRUN_INDEX = 5 ] && [ ! -e filled ] && touch filled && dd if=/dev/zero of={filler} bs=4k"
    (tmp_path / "job.toml").write_text(JOB.format(fill=f"{{ {once} 2>/dev/null; true; }}"))
    _assert_clear_error(run(["run", "job.toml", "--plain"], small_state, tmp_path))
    filler.unlink()
    assert integrity(small_state) == "ok"
    done = run(["run", "job.toml", "--plain", "--resume"], small_state, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert query(small_state, "SELECT id, state FROM runs") == [(1, "succeeded")]
    assert integrity(small_state) == "ok"
