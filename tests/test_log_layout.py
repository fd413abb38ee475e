"""An attempt's logs lie in its run's directory as TASK.N.stdout and TASK.N.stderr, with
no directory per task or attempt; runs an earlier labrun wrote (runs/RUN/TASK/N/stdout)
still read."""

from __future__ import annotations

import os
from pathlib import Path

from helpers import labrun, write_job

from labrun.paths import StatePaths, beside, run_dir_of

JOB = """
[job]
name = "layout"
[defaults]
retries = 0
[[tasks]]
name = "t"
command = "echo out-$LABRUN_ATTEMPT; echo err-$LABRUN_ATTEMPT >&2; exit 3"
"""


def test_a_run_makes_no_directory_per_task_or_attempt(tmp_path: Path) -> None:
    job = write_job(tmp_path, JOB)
    done = labrun(tmp_path / "state", "run", str(job), "--plain", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    run_dir = tmp_path / "state" / "runs" / "1"
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["shared"]
    assert (run_dir / "t.1.stdout").read_text() == "out-1\n"
    assert (run_dir / "t.1.stderr").read_text() == "err-1\n"


def test_logs_and_why_read_a_run_an_earlier_labrun_wrote(tmp_path: Path) -> None:
    """The same run with its logs moved where labrun before this layout kept them."""
    job = write_job(tmp_path, JOB)
    state = tmp_path / "state"
    assert labrun(state, "run", str(job), "--plain", cwd=tmp_path).returncode == 1
    run_dir = state / "runs" / "1"
    (run_dir / "t" / "1").mkdir(parents=True)
    for stream in ("stdout", "stderr"):
        os.rename(run_dir / f"t.1.{stream}", run_dir / "t" / "1" / stream)
    shown = labrun(state, "logs", "last", "t", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout == "out-1\n", shown.stdout + shown.stderr
    err = labrun(state, "logs", "last", "t", "--stderr", cwd=tmp_path)
    assert err.stdout == "err-1\n", err.stdout + err.stderr
    why = labrun(state, "why", "last", "t", cwd=tmp_path)
    assert "err-1" in why.stdout, why.stdout + why.stderr


def test_the_files_beside_a_log_and_its_run_in_either_layout(tmp_path: Path) -> None:
    paths = StatePaths(str(tmp_path / "state"))
    run_dir = paths.run_dir(4)
    new = paths.attempt_log(4, "fit[12]", 2, "stderr")
    assert new == os.path.join(run_dir, "fit[12].2.stderr")
    assert beside(new, "cgroup-usage") == os.path.join(run_dir, "fit[12].2.cgroup-usage")
    assert run_dir_of(new) == run_dir
    old = os.path.join(run_dir, "fit[12]", "2", "stderr")
    assert beside(old, "cgroup-usage") == os.path.join(run_dir, "fit[12]", "2", "cgroup-usage")
    assert run_dir_of(old) == run_dir
    # where neither exists yet (an attempt about to start), the new layout's path
    assert paths.log(4, "fit[12]", 2, "stderr") == new
