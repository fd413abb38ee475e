"""no_retry_exit: an exit code the job names as deterministic fails at once, without retry."""

from __future__ import annotations

from pathlib import Path

from helpers import labrun, write_job
from labrun_proc import query

from labrun.retry import Policy, decide
from labrun.states import Outcome

POLICY = Policy(retries=3, retry_delay=1.0, retry_delay_max=1.0, attempt_cap=10, no_retry_exit=(1, 2))


def test_a_listed_exit_code_fails_at_once_and_others_still_retry() -> None:
    listed = decide(POLICY, Outcome.FAILED, 1, 1, 1, 0.0, 0.5, exit_code=2)
    assert not listed.retry and listed.counted
    assert listed.reason == "exit 2 is in no_retry_exit: not retried"
    assert decide(POLICY, Outcome.FAILED, 1, 1, 1, 0.0, 0.5, exit_code=3).retry
    assert decide(POLICY, Outcome.FAILED, 1, 1, 1, 0.0, 0.5, exit_code=None).retry  # a signal
    # an OOM kill or a timeout is not the program's verdict, whatever the exit code says
    assert decide(POLICY, Outcome.TIMEOUT, 1, 1, 1, 0.0, 0.5, exit_code=1).retry


JOB = """
[job]
name = "nr"
[defaults]
no_retry_exit = [1, 2]
retry_delay = "0s"
retries = 2
[[tasks]]
name = "train"
items = ["a", "b"]
command = "echo {item} >> starts.log; echo 'ValueError: bad' >&2; [ {item} = a ] && exit 1; exit 3"
"""


def test_the_run_says_why_it_did_not_retry(tmp_path: Path) -> None:
    write_job(tmp_path, JOB)
    state = tmp_path / "state"
    run = labrun(state, "run", "job.toml", cwd=tmp_path)
    assert run.returncode == 1
    line = next(
        x
        for x in run.stdout.splitlines()
        if x.startswith("train[0] (a) attempt 1 on local: failed: exited 1")
    )
    assert line.endswith("; gave up: exit 1 is in no_retry_exit: not retried"), line
    assert sorted((tmp_path / "starts.log").read_text().split()) == ["a", "b", "b", "b"]
    attempts = query(state, "SELECT name, attempts FROM tasks ORDER BY name")
    assert attempts == [("train[0]", 1), ("train[1]", 3)]
    why = labrun(state, "why", "last", "train[0]", cwd=tmp_path)
    assert "exit 1 is in no_retry_exit: not retried" in why.stdout


def test_a_bad_exit_code_list_names_the_key(tmp_path: Path) -> None:
    write_job(tmp_path, JOB.replace("[1, 2]", "[0, 1]"))
    check = labrun(tmp_path / "state", "check", "job.toml", cwd=tmp_path)
    assert check.returncode == 2
    assert "defaults.no_retry_exit" in check.stderr
    assert "exit codes are 1 to 255 (0 is success)" in check.stderr
