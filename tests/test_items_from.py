"""items = { from = "TASK" }: a fan-out over the lines of any task's first output."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import labrun, write_job
from labrun_proc import query

JOB = """
[job]
name = "listed"
[[tasks]]
name = "find"
command = "test ! -f broken && printf 'x\\\\ny\\\\n' > {shared}/list.txt"
outputs = ["{shared}/list.txt"]
retries = 0
[[tasks]]
name = "work"
items = { from = "find" }
command = "echo {item} >> {shared}/done.txt && test {item} != y -o -f fixed"
retries = 0
[[tasks]]
name = "total"
depends_on = ["work"]
command = "wc -l < {shared}/done.txt > total.txt"
"""


def test_a_fan_out_over_another_tasks_list_then_a_rerun_keeps_it(tmp_path: Path) -> None:
    write_job(tmp_path, JOB)
    state = tmp_path / "state"
    first = labrun(state, "run", "job.toml", cwd=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    rows = query(state, "SELECT name, item, state FROM tasks WHERE run_id = 1 ORDER BY seq")
    assert rows == [
        ("find", None, "succeeded"),
        ("total", None, "skipped"),
        ("work[0]", "x", "succeeded"),
        ("work[1]", "y", "failed"),
    ]
    (tmp_path / "fixed").touch()
    again = labrun(state, "run", "--rerun-failed", "job.toml", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 task(s) to run, 2 succeeded before" in again.stdout  # find and work[0] kept
    done = (state / "runs" / "2" / "shared" / "done.txt").read_text().split()
    assert sorted(done) == ["x", "y", "y"] and (tmp_path / "total.txt").read_text().strip() == "3"


def test_when_the_source_fails_the_fan_out_is_shown_skipped(tmp_path: Path) -> None:
    write_job(tmp_path, JOB)
    (tmp_path / "broken").touch()
    state = tmp_path / "state"
    done = labrun(state, "run", "job.toml", cwd=tmp_path)
    assert done.returncode == 1
    assert "work skipped: its items come from" in done.stdout
    why = labrun(state, "why", "last", "work[0]", cwd=tmp_path)
    assert why.returncode == 0 and "dependency failure" in why.stdout and "find" in why.stdout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('items = { from = "fnd" }', "items come from 'fnd', which is no task of this job"),
        ('items = { from = "other" }', "items come from 'other', a fan-out"),
        ('items = { from = "plain" }', "items come from task plain, which declares no outputs"),
        ("items = { from = 3 }", 'expected items = { from = "TASK" }'),
    ],
)
def test_a_bad_source_is_a_configuration_error(tmp_path: Path, change: str, message: str) -> None:
    extra = '[[tasks]]\nname = "other"\nitems = ["a"]\ncommand = "true"\noutputs = ["o"]\n'
    extra += '[[tasks]]\nname = "plain"\ncommand = "true"\n'
    write_job(tmp_path, JOB.replace('items = { from = "find" }', change) + extra)
    done = labrun(tmp_path / "state", "check", "job.toml", cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "items" in done.stderr and "Traceback" not in done.stderr


def test_status_lists_a_small_run_in_the_order_the_job_declares_it(tmp_path: Path) -> None:
    write_job(tmp_path, JOB)
    (tmp_path / "fixed").touch()  # everything succeeds
    state = tmp_path / "state"
    assert labrun(state, "run", "job.toml", cwd=tmp_path).returncode == 0
    table = labrun(state, "status", "last", cwd=tmp_path).stdout.splitlines()
    names = [line.split()[0] for line in table[3:]]
    assert names == ["find", "work[0]", "work[1]", "total"]  # work's rows were made after total's
