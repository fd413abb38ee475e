"""Items are named everywhere: attempt lines, the summary, status and why show a task's
item beside its name, and every failure line carries the error `why` would give."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO, cli_env, write_job

from labrun.fit import item_text, task_with_item

JOB = """
[job]
name = "grid"
[[tasks]]
name = "train"
items = { file = "grid.csv" }
command = ["python3", "-c", "import sys; raise ValueError('bad lr ' + sys.argv[1])", "{item.lr}"]
retries = 0
[[tasks]]
name = "plain"
items = { range = [0, 2] }
command = "exit 4"
retries = 0
"""


def _labrun(state: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = cli_env(state)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "labrun", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_item_text_reads_rows_and_shortens() -> None:
    assert item_text('{"lr":"0.1","depth":"3"}') == "lr=0.1 depth=3"
    assert item_text("a   b\nc") == "a b c"
    assert len(item_text("x" * 100)) == 40
    assert task_with_item("train[2]", '{"lr":"0.1"}') == "train[2] (lr=0.1)"
    assert task_with_item("n[5]", "5") == "n[5]"  # a range's item is its index: said once
    assert task_with_item("report", None) == "report"


def test_lines_summary_status_and_why_name_the_item_and_the_error(tmp_path: Path) -> None:
    rows = "".join(f"{lr},{d}\n" for lr, d in [("0.1", 3), ("0.2", 4), ("0.3", 5), ("0.4", 6)])
    (tmp_path / "grid.csv").write_text("lr,depth\n" + rows)
    write_job(tmp_path, JOB)
    state = tmp_path / "state"
    done = _labrun(state, tmp_path, "run", "job.toml")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    first = next(line for line in lines if line.startswith("train[0]"))
    assert first.startswith("train[0] (lr=0.1 depth=3) attempt 1 on local: failed: exited 1 — ")
    assert "ValueError: bad lr 0.1" in first  # the error itself, not only "exited 1"
    plain = next(line for line in lines if line.startswith("plain[1]"))
    assert plain.startswith("plain[1] attempt 1")  # a range item is not repeated
    summary = lines[-1]
    assert "train[0] (lr=0.1 depth=3): exited 1" in summary
    assert "; and 3 more failed" in summary  # 6 failed, 3 named
    status = _labrun(state, tmp_path, "status", "last").stdout
    assert "(lr=0.4 depth=6) exited 1" in status
    why = _labrun(state, tmp_path, "why", "last", "train[3]").stdout
    assert why.startswith("run 1, task train[3] (lr=0.4 depth=6): application error")
