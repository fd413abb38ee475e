"""When task 0 fails, the fan-out over its manifest does not disappear: it is one skipped
task that status, the summary and why name, with the cause."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import labrun, write_job
from labrun_proc import query

JOB = """
[job]
name = "sweep"
[defaults]
retries = 0
[setup]
command = "test -f data.csv && cp data.csv {shared}/grid.txt"
outputs = ["{shared}/grid.txt"]
[[tasks]]
name = "train"
items = "setup"
command = "echo {item}"
[[tasks]]
name = "report"
depends_on = ["train"]
command = "true"
"""


def test_a_fan_out_task_0_never_made_is_shown_skipped_with_its_cause(tmp_path: Path) -> None:
    write_job(tmp_path, JOB)
    state = tmp_path / "state"
    run = labrun(state, "run", "job.toml", cwd=tmp_path)
    assert run.returncode == 1
    summary = run.stdout.strip().splitlines()[-1]
    assert "1 failed, 2 skipped of 3 tasks" in summary
    assert "train skipped: its items come from task 0, which failed" in summary
    rows = dict(query(state, "SELECT name, state FROM tasks"))
    assert rows == {"setup": "failed", "train": "skipped", "report": "skipped"}
    status = labrun(state, "status", "last", cwd=tmp_path).stdout
    train = next(line for line in status.splitlines() if line.startswith("train "))
    assert "upstream task setup failed" in train and "its items come from task 0's manifest" in train
    for ref in ("train", "train[0]"):
        why = labrun(state, "why", "last", ref, "--json", cwd=tmp_path)
        assert why.returncode == 0, why.stdout + why.stderr
        answer = json.loads(why.stdout)
        assert answer["cause"] == "dependency_failure", answer
        assert "upstream failed: setup" in answer["evidence"]
    # a name that is no task at all still says so
    assert labrun(state, "why", "last", "trian[0]", cwd=tmp_path).returncode == 2

    # fixed: a rerun makes the fan-out and runs it; the row that said "none were made" is not carried
    (tmp_path / "data.csv").write_text("a\nb\n")
    again = labrun(state, "run", "--rerun-failed", "job.toml", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    names = [str(r[0]) for r in query(state, "SELECT name FROM tasks WHERE run_id = 2 ORDER BY seq")]
    assert sorted(names) == ["report", "setup", "train[0]", "train[1]"]
