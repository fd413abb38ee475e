"""examples/sweep-grid.toml tells the story its comments tell: a failure, the fix, a rerun."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers import REPO, labrun
from labrun_proc import query


def test_the_failure_fix_and_rerun_story_of_the_sweep_grid_example(tmp_path: Path) -> None:
    examples = tmp_path / "examples"
    shutil.copytree(REPO / "examples", examples)
    state = tmp_path / "state"
    (examples / "data" / "diverges.txt").write_text("0.3\n")
    first = labrun(state, "run", "examples/sweep-grid.toml", cwd=tmp_path, timeout=300)
    assert first.returncode == 1, first.stdout + first.stderr
    line = next(
        x for x in first.stdout.splitlines() if x.startswith("train[8] (lr=0.3 depth=2 fold=0) attempt 1")
    )
    assert "failed: exited 2 — application error" in line and "loss is NaN" in line, line
    assert "; gave up: exit 2 is in no_retry_exit" in line
    tasks = dict(query(state, "SELECT name, state FROM tasks WHERE run_id = 1"))
    assert sorted(n for n, s in tasks.items() if s == "failed") == [
        "summarise",
        "train[10]",
        "train[11]",
        "train[8]",
        "train[9]",
    ]
    assert query(state, "SELECT MAX(attempts) FROM tasks WHERE run_id = 1") == [(1,)]  # nothing retried
    best = json.loads((state / "runs" / "1" / "shared" / "best.json").read_text())
    assert best["results"] == 8 and len(best["failed"]) == 4  # the partial summary ran
    why = labrun(state, "why", "last", "train[8]", cwd=tmp_path)
    assert "loss is NaN" in why.stdout

    (examples / "data" / "diverges.txt").unlink()  # the fix
    rerun = labrun(state, "run", "--rerun-failed", "examples/sweep-grid.toml", cwd=tmp_path, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "5 task(s) to run, 8 succeeded before and are kept" in rerun.stdout
    ran = query(state, "SELECT COUNT(DISTINCT task_id) FROM attempts WHERE run_id = 2")
    assert ran == [(5,)]
    best = json.loads((state / "runs" / "2" / "shared" / "best.json").read_text())
    assert best["results"] == 12 and best["failed"] == []
