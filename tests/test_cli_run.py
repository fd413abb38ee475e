"""`labrun` as a user runs it: real processes, a real state directory, real signals."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from helpers import REPO, labrun, start_labrun, write_job

EXAMPLES = sorted(p.name for p in (REPO / "examples").glob("*.toml"))


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_runs_to_success(tmp_path: Path, example: str) -> None:
    if example == "oom.toml" and not os.path.isdir("/sys/fs/cgroup"):
        pytest.skip("needs cgroups")
    result = labrun(tmp_path, "run", f"examples/{example}", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("labrun: job ")
    assert " succeeded in " in result.stdout


def test_status_json_logs_and_runs(tmp_path: Path) -> None:
    assert labrun(tmp_path, "run", "examples/hello.toml").returncode == 0
    status = json.loads(labrun(tmp_path, "status", "last", "--json").stdout)
    assert status["job"] == "hello" and status["state"] == "succeeded"
    task = next(t for t in status["tasks"] if t["id"] == "greet[2]")
    (attempt,) = task["attempts"]
    assert {"n", "outcome", "exit_code", "signal", "started", "ended", "node"} <= set(attempt)
    assert attempt["outcome"] == "succeeded" and attempt["exit_code"] == 0 and attempt["node"] == "local"
    logs = labrun(tmp_path, "logs", str(status["run"]), "greet[2]")
    assert logs.stdout == "hello from task greet[2], item night shift\n"
    table = labrun(tmp_path, "status").stdout
    assert "greet[1]" in table and "succeeded" in table
    assert "hello" in labrun(tmp_path, "runs").stdout
    wrong = labrun(tmp_path, "logs", "last", "gret[0]")
    assert wrong.returncode == 2 and "did you mean 'greet'" in wrong.stderr


def test_failures_exit_1_and_name_the_task(tmp_path: Path) -> None:
    write_job(
        tmp_path,
        """
        [job]
        name = "mixed"
        [defaults]
        retries = 1
        retry_delay = "0.1s"
        memory = "64MiB"
        [[tasks]]
        name = "ok"
        command = "true"
        [[tasks]]
        name = "bad"
        command = "echo boom >&2; exit 3"
        [[tasks]]
        name = "missing"
        command = ["no-such-program-xyz"]
        [[tasks]]
        name = "missing-sh"
        command = "no-such-program-xyz --flag > /dev/null"
        """,
    )
    result = labrun(tmp_path / "s", "run", "--plain", "job.toml", cwd=tmp_path)
    assert result.returncode == 1
    summary = result.stdout.strip().splitlines()[-1]
    assert "1 succeeded" in summary and "3 failed" in summary and "bad: exited 3" in summary
    status = {t["id"]: t for t in json.loads(labrun(tmp_path / "s", "status", "--json").stdout)["tasks"]}
    assert [a["outcome"] for a in status["bad"]["attempts"]] == ["failed", "failed"]
    # a command that cannot run is a configuration error, never retried
    assert [a["outcome"] for a in status["missing"]["attempts"]] == ["config_error"]
    assert "command not found" in status["missing"]["attempts"][0]["detail"]
    assert [a["outcome"] for a in status["missing-sh"]["attempts"]] == ["config_error"]  # sh: 127
    stderr = labrun(tmp_path / "s", "logs", "last", "bad", "--stderr").stdout
    assert stderr == "boom\n"


def test_timeout_stops_the_attempt(tmp_path: Path) -> None:
    write_job(
        tmp_path,
        """
        [job]
        name = "slow"
        [[tasks]]
        name = "sleeper"
        command = "trap '' TERM; sleep 30"
        timeout = "0.5s"
        grace = "0.5s"
        retries = 0
        memory = "64MiB"
        """,
    )
    started = time.monotonic()
    result = labrun(tmp_path / "s", "run", "--plain", "job.toml", cwd=tmp_path)
    assert result.returncode == 1
    assert time.monotonic() - started < 15
    (task,) = json.loads(labrun(tmp_path / "s", "status", "--json").stdout)["tasks"]
    (attempt,) = task["attempts"]
    assert attempt["outcome"] == "timeout" and attempt["signal"] == "SIGKILL"


def _wait_for_running(state: Path, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 90  # a deadline, not a timing claim: the machine may be busy
    while time.monotonic() < deadline:
        result = labrun(state, "status", "--json")
        if result.returncode == 0:
            attempts = [a for t in json.loads(result.stdout)["tasks"] for a in t["attempts"]]
            if sum(1 for a in attempts if a["outcome"] is None) >= count:
                return attempts
        time.sleep(0.2)
    raise AssertionError("attempts did not start")


def _pids(state: Path) -> list[int]:
    import sqlite3

    conn = sqlite3.connect(state / "labrun.db")
    return [r[0] for r in conn.execute("SELECT pid FROM attempts WHERE pid IS NOT NULL")]


def test_ctrl_c_stops_gracefully_and_leaves_no_process(tmp_path: Path) -> None:
    write_job(
        tmp_path,
        """
        [job]
        name = "long"
        [defaults]
        memory = "64MiB"
        grace = "1s"
        [[tasks]]
        name = "polite"
        command = "(trap '' TERM; sleep 60) & sleep 60; wait"
        [[tasks]]
        name = "stubborn"
        command = "trap '' TERM INT; sleep 60 & wait; sleep 60"
        [[tasks]]
        name = "queued"
        command = "true"
        """,
    )
    runner = start_labrun(tmp_path / "s", "run", "--plain", "job.toml", cwd=tmp_path, capture=True)
    _wait_for_running(tmp_path / "s", 2)
    runner.send_signal(signal.SIGINT)
    out, err = runner.communicate(timeout=30)
    assert runner.returncode == 130, out + err
    assert "interrupted" in out.strip().splitlines()[-1]
    tasks = {t["id"]: t for t in json.loads(labrun(tmp_path / "s", "status", "--json").stdout)["tasks"]}
    assert [a["outcome"] for a in tasks["polite"]["attempts"]] == ["killed"]
    assert [a["outcome"] for a in tasks["stubborn"]["attempts"]] == ["killed"]
    assert tasks["queued"]["attempts"] == [] and tasks["queued"]["state"] == "ready"
    for pid in _pids(tmp_path / "s"):  # each attempt's process group empties within seconds
        assert _group_gone(pid), f"process group {pid} still has processes"


def _group_gone(pgid: int) -> bool:
    """No live process in the group (a zombie has ended: whoever adopted it reaps it)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not _live_members(pgid):
            return True
        time.sleep(0.05)
    return False


def _live_members(pgid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rpartition(b")")[2].split()
        except (OSError, ValueError):
            continue
        if name.isdigit() and int(fields[2]) == pgid and fields[0] != b"Z":
            found.append(int(name))
    return found


def test_a_second_run_of_the_same_job_exits_75_naming_the_holder(tmp_path: Path) -> None:
    write_job(
        tmp_path,
        """
        [job]
        name = "single"
        [[tasks]]
        name = "hold"
        command = "sleep 5"
        memory = "64MiB"
        """,
    )
    first = start_labrun(tmp_path / "s", "run", "--plain", "job.toml", cwd=tmp_path)
    try:
        _wait_for_running(tmp_path / "s", 1)
        started = time.monotonic()
        second = labrun(tmp_path / "s", "run", "--plain", "job.toml", cwd=tmp_path)
        assert second.returncode == 75
        assert time.monotonic() - started < 5
        assert f"pid {first.pid}" in second.stderr and "run 1" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)


def test_help_and_schema(tmp_path: Path) -> None:
    result = labrun(tmp_path, "--help")
    assert result.returncode == 0 and "Exit codes" in result.stdout
    schema = json.loads(labrun(tmp_path, "schema").stdout)
    assert "memory" in schema["properties"]["tasks"]["items"]["properties"]
