"""Crash-safe resume through the real CLI: the runner is SIGKILLed and `--resume` finishes."""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from labrun_proc import integrity, query, run, start

FAULT_JOB = """
[job]
name = "fault"
max_parallel = 4
[[tasks]]
name = "t"
items = { range = [0, 100] }
command = "echo {task} >> out.txt"
retry_delay = 0
"""


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _kill_when(proc: subprocess.Popen[str], ready: object, limit: float = 60.0) -> bool:
    """SIGKILL the runner once ready() holds; False if it finished first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if callable(ready) and ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("the runner neither finished nor reached the kill point in time")


def test_sigkill_at_seeded_points_then_resume(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(FAULT_JOB)
    state, out = tmp_path / "state", tmp_path / "out.txt"
    points = sorted(random.Random(6).sample(range(5, 95), 4))
    kills = 0
    for i, point in enumerate(points):
        args = ["run", "job.toml", "--plain"] + (["--resume"] if i else [])
        proc = start(args, state, tmp_path)
        kills += _kill_when(proc, lambda p=point: _lines(out) >= p)  # type: ignore[misc]
        assert integrity(state) == "ok"
    assert kills >= 2, "the job finished before most kill points: the test proves little"
    for _ in range(3):
        done = run(["run", "job.toml", "--plain", "--resume"], state, tmp_path)
        if done.returncode == 0:
            break
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = collections.Counter(out.read_text().splitlines())
    assert set(lines) == {f"t[{i}]" for i in range(100)}
    rows = query(
        state,
        "SELECT t.name, SUM(a.outcome = 'succeeded'), SUM(a.outcome = 'lost'), COUNT(*)"
        " FROM tasks t JOIN attempts a ON a.task_id = t.id GROUP BY t.id",
    )
    assert len(rows) == 100
    for name, succeeded, lost, _ in rows:
        assert succeeded == 1, f"{name} succeeded {succeeded} times"
        # a line twice only where an attempt running at a kill could not be adopted
        assert lines[str(name)] <= 1 + int(str(lost)), f"{name} ran again without a lost attempt"
    assert query(state, "SELECT COUNT(*), MIN(state) FROM runs") == [(1, "succeeded")]
    assert integrity(state) == "ok"


ADOPT_JOB = """
[job]
name = "adopt"
[[tasks]]
name = "slow"
command = "sleep 3; echo done >> done.txt"
"""


def _started(state: Path) -> bool:
    try:
        return bool(query(state, "SELECT pid FROM attempts WHERE pid IS NOT NULL"))
    except Exception:
        return False


def test_running_attempt_is_adopted_not_restarted(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(ADOPT_JOB)
    state = tmp_path / "state"
    proc = start(["run", "job.toml", "--plain"], state, tmp_path)
    assert _kill_when(proc, lambda: _started(state))
    (pid,) = query(state, "SELECT pid FROM attempts")[0]
    os.kill(int(str(pid)), 0)  # the attempt outlived its runner
    began = time.monotonic()
    done = run(["run", "job.toml", "--plain", "--resume"], state, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 running attempt(s) adopted" in done.stdout
    assert time.monotonic() - began < 3.5  # it waited for the old attempt, not a new one
    assert (tmp_path / "done.txt").read_text() == "done\n"
    assert query(state, "SELECT n, outcome, exit_code FROM attempts") == [(1, "succeeded", 0)]


def test_vanished_attempt_is_lost_and_runs_again(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(ADOPT_JOB)
    state = tmp_path / "state"
    proc = start(["run", "job.toml", "--plain"], state, tmp_path)
    assert _kill_when(proc, lambda: _started(state))
    (pid,) = query(state, "SELECT pid FROM attempts")[0]
    os.killpg(int(str(pid)), signal.SIGKILL)  # the attempt dies with no exit status
    time.sleep(0.2)
    done = run(["run", "job.toml", "--plain", "--resume"], state, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert query(state, "SELECT n, outcome FROM attempts ORDER BY n") == [(1, "lost"), (2, "succeeded")]
    assert query(state, "SELECT failures FROM tasks") == [(0,)]  # lost does not count
    assert (tmp_path / "done.txt").read_text() == "done\n"


def test_resume_key_and_finished_runs(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(ADOPT_JOB.replace('name = "adopt"', 'name = "adopt"\nresume = true'))
    state = tmp_path / "state"
    proc = start(["run", "job.toml", "--plain"], state, tmp_path)
    assert _kill_when(proc, lambda: _started(state))
    assert run(["run", "job.toml", "--plain"], state, tmp_path).returncode == 0
    assert query(state, "SELECT id, state FROM runs") == [(1, "succeeded")]
    # nothing unfinished is left: a resume starts a new run
    (tmp_path / "job.toml").write_text(ADOPT_JOB.replace("sleep 3", "true"))
    assert run(["run", "job.toml", "--plain", "--resume"], state, tmp_path).returncode == 0
    assert query(state, "SELECT id, state FROM runs") == [(1, "succeeded"), (2, "succeeded")]
