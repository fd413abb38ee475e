"""Messages a user acts on: each names what was wrong and a next step that works as
written; where the step is mechanical (a line to add), the test does it and checks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import labrun, tmpfs, write_job

from labrun.preflight.checks import path_writable
from labrun.preflight.core import run_checks


@pytest.mark.skipif(os.geteuid() != 0, reason="root passes access(2) in /proc and /sys; that is the case")
@pytest.mark.parametrize("path", ["/proc/nowrite", "/sys/nope"])
def test_kernel_filesystems_are_not_writable_even_for_root(path: str) -> None:
    (result,) = run_checks([path_writable(path)], 5)
    assert not result.ok and "filesystem, where no file can be created" in result.found


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "ro", "ro,size=1m") as mount:
        yield mount


def test_a_read_only_mount_is_not_offered_chmod(read_only: Path) -> None:
    (result,) = run_checks([path_writable(str(read_only / "out"))], 5)
    assert not result.ok and "read-only filesystem" in result.found
    assert "chmod" not in result.fix


def test_a_directory_named_twice_is_checked_once(tmp_path: Path) -> None:
    write_job(
        tmp_path,
        """
        [job]
        name = "twice"
        [preflight]
        writable = ["out"]
        [[tasks]]
        name = "t"
        command = "true"
        outputs = ["out/result.txt"]
        """,
    )
    done = labrun(tmp_path / "s", "check", "job.toml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    assert done.stdout.count(f"writable {tmp_path}/out") == 1
    assert "valid, 1 task entry\n" in done.stdout


def test_the_preflight_line_why_suggests_makes_check_catch_it(tmp_path: Path) -> None:
    job = write_job(
        tmp_path,
        '[job]\nname = "nocmd"\n[[tasks]]\nname = "t"\ncommand = "\'no_such_program\' --x"\nretries = 0\n',
    )
    assert labrun(tmp_path / "s", "run", "job.toml", "--plain", cwd=tmp_path).returncode == 1
    why = labrun(tmp_path / "s", "why", "last", "t", cwd=tmp_path).stdout
    line = 'add commands = ["no_such_program"] to [preflight]'
    assert line in why, why
    job.write_text(job.read_text() + '[preflight]\ncommands = ["no_such_program"]\n')  # as it says
    check = labrun(tmp_path / "s", "check", "job.toml", cwd=tmp_path)
    assert check.returncode == 3
    assert "✗ command no_such_program" in check.stdout


def test_retries_left_count_the_attempt_cap_and_agree_in_number(tmp_path: Path) -> None:
    write_job(
        tmp_path,
        """
        [job]
        name = "flaky"
        [[tasks]]
        name = "t"
        command = "echo no >&2; exit 3"
        retries = 8
        max_attempts = 3
        retry_delay = "0s"
        """,
    )
    done = labrun(tmp_path / "s", "run", "job.toml", "--plain", "-v", cwd=tmp_path)
    assert done.returncode == 1
    assert "(1 retry left after it)" in done.stdout, done.stdout
    assert "(0 retries left after it)" in done.stdout
    assert "8 retries left" not in done.stdout and "7 retries left" not in done.stdout
    assert "failed: retry" not in done.stdout
    assert "of 1 task" in done.stdout.splitlines()[-1] and "1 tasks" not in done.stdout


def test_a_file_cut_short_names_its_last_line(tmp_path: Path) -> None:
    write_job(tmp_path, '[job]\nname = "x"\n[[tasks]]\nname = "t"\ncommand = [1,\n')
    done = labrun(tmp_path / "s", "check", "job.toml", cwd=tmp_path)
    assert done.returncode == 2
    assert "job.toml:5:14: invalid TOML: Invalid value at the end of the file" in done.stderr


def test_a_task_is_named_one_way_in_problems(tmp_path: Path) -> None:
    write_job(tmp_path, '[job]\nname = "x"\n[[tasks]]\nname = "t"\ncommand = "true"\nmemroy = "1GiB"\n')
    done = labrun(tmp_path / "s", "check", "job.toml", cwd=tmp_path)
    assert done.returncode == 2
    assert "tasks[0].memroy: unknown key 'memroy' in tasks[0] (task t)" in done.stderr
    assert "#1" not in done.stderr


def test_a_huge_value_is_not_echoed_whole(tmp_path: Path) -> None:
    huge = "x" * 1_000_000
    write_job(tmp_path, f'[job]\nname = "x"\n[[tasks]]\nname = "t"\ncommand = "true"\nruntime = "{huge}"\n')
    done = labrun(tmp_path / "s", "check", "job.toml", cwd=tmp_path)
    assert done.returncode == 2 and "tasks[0].runtime" in done.stderr
    assert len(done.stderr) < 2000 and "…" in done.stderr
