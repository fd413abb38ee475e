"""depends_on = [{ task = "train", allow_failed = true }]: aggregate what succeeded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import labrun, write_job
from labrun_proc import query

from labrun.deps import Tracker


def test_a_lenient_dependent_waits_for_every_upstream_task_then_runs() -> None:
    graph = {"train": (), "aggregate": ("train",), "report": ("train",)}
    tracker = Tracker(graph, lenient={"aggregate": ["train"]})
    tracker.load("train", 3, None, True)
    for spec in ("aggregate", "report"):
        tracker.load(spec, 1, None, False)
    assert tracker.initial().promote == ()
    first = tracker.finished("train", "train[1]", False, "failed: exited 1")
    assert first.skip == {"report": "upstream task train[1] failed: exited 1"}  # strict: at once
    assert first.promote == ()  # lenient: waits for train[0] and train[2]
    assert tracker.finished("train", "train[0]", True, "succeeded").promote == ()
    assert tracker.finished("train", "train[2]", True, "succeeded").promote == ("aggregate",)


JOB = """
[job]
name = "sweep"
[[tasks]]
name = "train"
items = ["1", "2", "3"]
command = "test {item} != 2"
retries = 0
[[tasks]]
name = "aggregate"
depends_on = [{ task = "train", allow_failed = true }]
command = "cat {shared}/upstream/train.jsonl > seen.jsonl"
[[tasks]]
name = "report"
depends_on = ["train"]
command = "true"
"""


def test_the_aggregate_runs_and_learns_which_items_failed(tmp_path: Path) -> None:
    write_job(tmp_path, JOB)
    state = tmp_path / "state"
    done = labrun(state, "run", "job.toml", cwd=tmp_path)
    assert done.returncode == 1  # train[1] failed: the run did not fully succeed
    states = dict(query(state, "SELECT name, state FROM tasks"))
    assert states["aggregate"] == "succeeded" and states["report"] == "skipped"
    seen = [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]
    assert [(r["task"], r["item"], r["state"]) for r in seen] == [
        ("train[0]", "1", "succeeded"),
        ("train[1]", "2", "failed"),
        ("train[2]", "3", "succeeded"),
    ]
    assert "exited 1" in seen[1]["reason"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('{ task = "train", allow_failed = "yes" }', "allow_failed must be true or false"),
        ('{ name = "train" }', 'must be a task name or { task = "NAME", allow_failed = true }'),
        ('{ task = "trian", allow_failed = true }', "did you mean 'train'?"),
    ],
)
def test_dependency_mistakes_name_the_key(tmp_path: Path, entry: str, message: str) -> None:
    write_job(tmp_path, JOB.replace('{ task = "train", allow_failed = true }', entry))
    done = labrun(tmp_path / "state", "check", "job.toml", cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "depends_on" in done.stderr and "Traceback" not in done.stderr
