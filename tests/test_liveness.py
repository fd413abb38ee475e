"""A run whose runner died without a word reads `interrupted`, not `running` (issue 12, item 6)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from helpers import labrun, start_labrun, write_job
from labrun_proc import query

from labrun.liveness import runner_gone
from labrun.rows import RunRow
from labrun.states import RunState


def _row(pid: int | None, host: str | None = None, state: RunState = RunState.RUNNING) -> RunRow:
    return RunRow(1, "j", "j.toml", "", state, 0.0, None, pid, host or os.uname().nodename)


def test_runner_gone_only_for_a_dead_labrun_on_this_host() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert runner_gone(_row(dead.pid))
    assert not runner_gone(_row(os.getpid()))  # this process
    other = subprocess.Popen(["sleep", "30"])  # alive, but no labrun: the pid was reused
    try:
        assert runner_gone(_row(other.pid))
    finally:
        other.kill()
        other.wait()
    assert not runner_gone(_row(dead.pid, host="another-machine"))  # cannot tell from here
    assert not runner_gone(_row(dead.pid, state=RunState.SUCCEEDED))
    assert not runner_gone(_row(None))


def test_status_and_runs_of_a_sigkilled_runner_say_interrupted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    job_text = '[job]\nname = "slow"\n\n[[tasks]]\nname = "wait"\ncommand = ["sleep", "617.5"]\n'
    job = write_job(tmp_path, job_text)
    runner = start_labrun(state, "run", str(job), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        # running, with its pid recorded (the mechanism is written with it)
        while '"mechanism": "process"' not in labrun(state, "status", "--json", cwd=tmp_path).stdout:
            assert runner.poll() is None and time.monotonic() < deadline, "the attempt never started"
            time.sleep(0.1)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    status = labrun(state, "status", cwd=tmp_path)
    assert "): interrupted" in status.stdout and "--resume" in status.stdout, status.stdout
    assert "interrupted" in labrun(state, "runs", cwd=tmp_path).stdout
    assert json.loads(labrun(state, "status", "--json", cwd=tmp_path).stdout)["state"] == "interrupted"
    # the sleep the dead runner left: a resume would adopt it; a cancel stops it
    assert labrun(state, "cancel", "last", cwd=tmp_path).returncode == 0
    assert b"sleep 617.5" not in subprocess.run(["ps", "-eo", "args"], capture_output=True).stdout


def test_an_internal_error_leaves_the_run_interrupted_and_resumable(tmp_path: Path) -> None:
    """A bug in the runner (a failpoint raises right after a spawn): exit 70, and the run is
    recorded interrupted, not left `running`; `--resume` adopts the attempt and finishes."""
    state = tmp_path / "state"
    job = write_job(tmp_path, '[job]\nname = "bug"\n\n[[tasks]]\nname = "a"\ncommand = "echo a >> ran.txt"\n')
    crashed = labrun(state, "run", str(job), cwd=tmp_path, LABRUN_FAILPOINT="spawned:1:raise")
    assert crashed.returncode == 70, crashed.stderr
    assert "internal error" in crashed.stderr and "Traceback" not in crashed.stderr
    assert query(state, "SELECT state FROM runs") == [("interrupted",)]
    resumed = labrun(state, "run", str(job), "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (tmp_path / "ran.txt").read_text() == "a\n"  # adopted (or its end read), not run twice


def test_cancel_stops_an_attempt_whose_runner_died_before_recording_its_pid(tmp_path: Path) -> None:
    """The runner SIGKILLs itself right after a spawn (failpoint `spawned`): the attempt runs
    with no pid in the store. `labrun cancel` finds it by its wrapper's command line and
    stops it; it said "0 leftover attempts stopped" and left it running before."""
    state = tmp_path / "state"
    job = write_job(tmp_path, '[job]\nname = "nap"\n\n[[tasks]]\nname = "a"\ncommand = ["sleep", "618.5"]\n')
    crashed = labrun(state, "run", str(job), cwd=tmp_path, LABRUN_FAILPOINT="spawned:1")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert query(state, "SELECT state, pid FROM attempts") == [("launching", None)]
    assert b"sleep 618.5" in subprocess.run(["ps", "-eo", "args"], capture_output=True).stdout
    cancelled = labrun(state, "cancel", "last", cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert "1 leftover attempt stopped" in cancelled.stdout, cancelled.stdout
    deadline = time.monotonic() + 30
    while b"sleep 618.5" in subprocess.run(["ps", "-eo", "args"], capture_output=True).stdout:
        assert time.monotonic() < deadline, "the attempt is still running after the cancel"
        time.sleep(0.05)
    assert query(state, "SELECT outcome FROM attempts") == [("killed",)]
