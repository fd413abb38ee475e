"""--resume after the job file was edited: it says what changed and runs the job as now written."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from helpers import labrun, start_labrun, write_job
from labrun_proc import query

V1 = """
[job]
name = "fix"
[defaults]
retries = 0
[[tasks]]
name = "first"
command = "echo first >> log"
[[tasks]]
name = "gate"
depends_on = ["first"]
command = "touch gate-started; while [ ! -f go ]; do sleep 0.05; done"
[[tasks]]
name = "old"
depends_on = ["gate"]
command = "echo old >> log"
[[tasks]]
name = "train"
items = ["a", "b"]
depends_on = ["gate"]
command = "echo v1-{item} >> log"
"""

V2 = """
[job]
name = "fix"
[defaults]
retries = 0
[[tasks]]
name = "first"
command = "echo first-v2 >> log"
[[tasks]]
name = "gate"
depends_on = ["first"]
command = "echo gate-v2 >> log"
[[tasks]]
name = "train"
items = ["a", "b", "c"]
depends_on = ["gate"]
command = "echo v2-{item} >> log"
[[tasks]]
name = "report"
depends_on = ["train"]
command = "echo report >> log"
"""


def _interrupt_at_the_gate(tmp_path: Path) -> None:
    """Run V1 and stop the runner (SIGINT) while `gate` runs: an unfinished run."""
    write_job(tmp_path, V1)
    proc = start_labrun(tmp_path / "state", "run", "job.toml", cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not (tmp_path / "gate-started").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "gate never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    state = tmp_path / "state"
    assert query(state, "SELECT state FROM runs") == [("interrupted",)]


def test_resume_runs_the_job_as_now_written_and_says_what_changed(tmp_path: Path) -> None:
    _interrupt_at_the_gate(tmp_path)
    write_job(tmp_path, V2)
    state = tmp_path / "state"
    resumed = labrun(state, "run", "--resume", "job.toml", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    out = resumed.stdout
    assert "labrun: resuming run 1 with" in out and "as now written" in out
    assert "added: report (2 task(s) to run)" in out  # report, and train's new item c
    assert "changed: first (command)" in out
    assert "changed: gate (command)" in out
    assert "changed: train (items, command)" in out or "changed: train (command, items)" in out
    assert "removed: old (1 task(s): old): left alone, not run, not counted as failed" in out
    # first had succeeded: not run again; the others ran as now written; old never ran
    log = (tmp_path / "log").read_text().split()
    assert log[:2] == ["first", "gate-v2"] and log[-1] == "report", log
    assert sorted(log[2:-1]) == ["v2-a", "v2-b", "v2-c"], log  # train's items run side by side
    tasks = dict(query(state, "SELECT name, state FROM tasks WHERE run_id = 1"))
    assert tasks["old"] == "skipped" and tasks["train[2]"] == "succeeded" and tasks["report"] == "succeeded"
    assert query(state, "SELECT state FROM runs") == [("succeeded",)]
    reason = query(state, "SELECT reason FROM tasks WHERE name = 'old'")
    assert reason == [("no longer in the job file: left alone, not run",)]
    # the run now follows the new file: why and status name its tasks
    why = labrun(state, "why", "last", "report", cwd=tmp_path)
    assert why.returncode == 0, why.stdout + why.stderr


def test_as_recorded_keeps_the_job_the_run_started_with(tmp_path: Path) -> None:
    _interrupt_at_the_gate(tmp_path)
    write_job(tmp_path, V2.replace('name = "fix"', 'name = "fix"', 1))
    (tmp_path / "go").touch()
    resumed = labrun(tmp_path / "state", "run", "--resume", "--as-recorded", "job.toml", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "as now written" not in resumed.stdout
    assert sorted((tmp_path / "log").read_text().split()) == ["first", "old", "v1-a", "v1-b"]


def test_as_recorded_without_resume_is_a_usage_error(tmp_path: Path) -> None:
    write_job(tmp_path, V2)
    said = labrun(tmp_path / "state", "run", "--as-recorded", "job.toml", cwd=tmp_path)
    assert said.returncode == 2 and "--as-recorded goes with --resume" in said.stderr


def test_a_task_running_when_the_runner_died_and_removed_since_refuses_the_resume(tmp_path: Path) -> None:
    write_job(tmp_path, V1)
    state = tmp_path / "state"
    proc = start_labrun(state, "run", "job.toml", cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not (tmp_path / "gate-started").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "gate never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # gate's process lives on; the run stays `running`
    proc.wait(timeout=60)
    try:
        without_gate = V1.replace('depends_on = ["gate"]', 'depends_on = ["first"]')
        start = without_gate.index('name = "gate"')
        without_gate = (
            without_gate[: start - len("[[tasks]]\n")]
            + without_gate[without_gate.index('[[tasks]]\nname = "old"') :]
        )
        write_job(tmp_path, without_gate)
        refused = labrun(state, "run", "--resume", "job.toml", cwd=tmp_path)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert (
            "gate of run 1 was running when its runner stopped and is no longer in the job file"
            in refused.stderr
        )
        assert "labrun run --resume --as-recorded" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        (tmp_path / "go").touch()  # let gate's loop end
    finished = labrun(state, "run", "--resume", "--as-recorded", "job.toml", cwd=tmp_path)
    assert finished.returncode == 0, finished.stdout + finished.stderr
