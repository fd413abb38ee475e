"""`{attempt_dir}` is the attempt's own: never shared with another state directory's run,
never holding what an earlier incarnation of the state directory left there."""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers import labrun, write_job

from labrun import state_id
from labrun.expand import placeholder_values
from labrun.paths import StatePaths
from labrun.rows import RunRow, TaskRow
from labrun.states import RunState, TaskState

JOB = """
[job]
name = "scoped"
[[tasks]]
name = "t"
command = "{command}"
outputs = ["{{attempt_dir}}/out.txt"]
"""


def test_two_state_directories_using_one_workdir_keep_their_outputs_apart(tmp_path: Path) -> None:
    """Both have a run 1 of task t, attempt 1: each writes its own file and keeps it."""
    job = write_job(tmp_path, JOB.format(command="echo $LABRUN_STATE > {attempt_dir}/out.txt"))
    for name in ("a", "b"):
        done = labrun(tmp_path / name, "run", str(job), "--plain", cwd=tmp_path, LABRUN_STATE=name)
        assert done.returncode == 0, done.stdout + done.stderr
    for name in ("a", "b"):
        found = state_id.read(str(tmp_path / name))
        assert found is not None
        assert (tmp_path / "attempts" / found / "run-1" / "t" / "1" / "out.txt").read_text() == f"{name}\n"


def test_a_state_directory_made_again_does_not_find_the_old_outputs(tmp_path: Path) -> None:
    """The state directory was deleted to start afresh; run 1 again exits 0 without writing
    its output: it fails for the missing output, not succeeds on the file the old run 1 left."""
    job = write_job(tmp_path, JOB.format(command="echo first > {attempt_dir}/out.txt"))
    done = labrun(tmp_path / "state", "run", str(job), "--plain", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    shutil.rmtree(tmp_path / "state")
    job = write_job(
        tmp_path, JOB.format(command="true").replace("[[tasks]]", "[defaults]\nretries = 0\n[[tasks]]")
    )
    done = labrun(tmp_path / "state", "run", str(job), "--plain", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "out.txt" in done.stdout + done.stderr and "missing" in (done.stdout + done.stderr).lower()
    assert len(list((tmp_path / "attempts").iterdir())) == 2  # the old run's directory is kept


def test_an_attempt_an_older_labrun_started_is_found_where_it_ran(tmp_path: Path) -> None:
    """Adopted after an upgrade: its directory has no state id in its path; a new attempt's
    does, and so does one that ran since the upgrade."""
    paths = StatePaths(str(tmp_path / "state"))
    run = RunRow(1, "j", "j.toml", "", RunState.RUNNING, 0.0, None, None, None)
    task = TaskRow(1, 1, 1, "t", "t", None, None, TaskState.RUNNING, 0.0, 1, 0, 1, None)
    before = tmp_path / "attempts" / "run-1" / "t" / "1"
    now = f"attempts/{paths.id}/run-1/t/1"
    assert placeholder_values(paths, run, task, 1, str(tmp_path))["attempt_dir"] == now
    before.mkdir(parents=True)
    assert placeholder_values(paths, run, task, 1, str(tmp_path))["attempt_dir"] == "attempts/run-1/t/1"
    assert placeholder_values(paths, run, task, 1)["attempt_dir"] == now  # a new attempt: never
    (tmp_path / now).mkdir(parents=True)
    assert placeholder_values(paths, run, task, 1, str(tmp_path))["attempt_dir"] == now
