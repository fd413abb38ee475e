"""Unattended runs: the job lock, graceful stop, cancel, plain and quiet output, gc."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from labrun_proc import integrity, query, run, start

SLOW_JOB = """
[job]
name = "slow"
[[tasks]]
name = "nap"
command = "sleep 30; echo woke >> woke.txt"
grace = 1
"""


def _wait_started(state: Path, proc: subprocess.Popen[str], limit: float = 30.0) -> int:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            rows = query(state, "SELECT pid FROM attempts WHERE pid IS NOT NULL")
        except Exception:
            rows = []
        if rows:
            return int(str(rows[0][0]))
        time.sleep(0.02)
    raise AssertionError("no attempt started")


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: an orphan's reaper may be slow or absent in a container)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_two_runs_of_one_job_exactly_one_runs(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(SLOW_JOB.replace("sleep 30", "sleep 2"))
    state = tmp_path / "state"
    run(["gc"], state, tmp_path)  # the state directory exists before the race (readers create nothing)
    procs = [start(["run", "job.toml", "--plain"], state, tmp_path) for _ in range(2)]
    first = None
    while first is None:
        first = next((p for p in procs if p.poll() is not None), None)
        time.sleep(0.01)
    other = procs[1 - procs.index(first)]
    assert first.returncode == 75, first.communicate()
    _, err = first.communicate()
    holder = other.pid
    assert f"pid {holder}" in err and "already running" in err
    assert other.wait(30) == 0
    assert query(state, "SELECT COUNT(*) FROM runs") == [(1,)]


CHECKED_JOB = """
[job]
name = "slow"
[preflight]
env = ["ONLY_SET_FOR_THE_FIRST_RUN"]
checks = [{ name = "slow check", command = "touch checked-$$; sleep 3" }]
timeout = "30s"
[[tasks]]
name = "nap"
command = "sleep 30"
grace = 1
"""


def test_an_overlapping_run_exits_75_without_running_its_preflight(tmp_path: Path) -> None:
    """Cron starts the job again while last night's run is still going: the second runner
    must refuse at once (75), before its checks, even when those checks would fail now."""
    (tmp_path / "job.toml").write_text(CHECKED_JOB)
    state = tmp_path / "state"
    first = start(["run", "job.toml", "--plain"], state, tmp_path, ONLY_SET_FOR_THE_FIRST_RUN="yes")
    _wait_started(state, first)
    checked = sorted(p.name for p in tmp_path.glob("checked-*"))
    assert len(checked) == 1  # the first run's own check
    second = run(["run", "job.toml", "--plain"], state, tmp_path)  # the variable is unset now
    assert second.returncode == 75, second.stderr
    assert "already running" in second.stderr and "preflight" not in second.stderr
    skipped = run(["run", "job.toml", "--quiet", "--if-running", "skip"], state, tmp_path)
    assert (skipped.returncode, skipped.stdout, skipped.stderr) == (0, "", "")
    assert sorted(p.name for p in tmp_path.glob("checked-*")) == checked  # no check ran again
    bad = run(["run", "job.toml", "--if-running", "later"], state, tmp_path)
    assert bad.returncode == 2 and "fail, wait, skip" in bad.stderr
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 130
    assert query(state, "SELECT COUNT(*) FROM runs") == [(1,)]


def test_lock_survives_a_sigkilled_holder(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(SLOW_JOB.replace("sleep 30", "sleep 0.2"))
    state = tmp_path / "state"
    proc = start(["run", "job.toml", "--plain"], state, tmp_path)
    _wait_started(state, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = run(["run", "job.toml", "--plain"], state, tmp_path)
    assert done.returncode == 0, done.stderr


def test_no_attempt_inherits_the_job_lock(tmp_path: Path) -> None:
    """A task's process that outlives its runner must not hold the job's lock: the next run
    (cron's, tomorrow) would be refused as "already running"."""
    (tmp_path / "job.toml").write_text(
        '[job]\nname = "fds"\n[[tasks]]\nname = "t"\ncommand = "ls -l /proc/$$/fd > fds.txt"\n'
    )
    state = tmp_path / "state"
    done = run(["run", "job.toml", "--plain"], state, tmp_path)
    assert done.returncode == 0, done.stderr
    fds = (tmp_path / "fds.txt").read_text()
    assert "fds.txt" in fds and "fds.lock" not in fds, fds


def test_sigterm_stops_gracefully_and_exits_130(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(SLOW_JOB)
    state = tmp_path / "state"
    proc = start(["run", "job.toml", "--plain"], state, tmp_path)
    pid = _wait_started(state, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 130
    assert _gone(pid)
    assert query(state, "SELECT outcome FROM attempts") == [("killed",)]
    assert query(state, "SELECT state FROM runs") == [("interrupted",)]
    assert query(state, "SELECT state FROM tasks") == [("ready",)]  # resumable


def test_cancel_from_another_terminal(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(SLOW_JOB)
    state = tmp_path / "state"
    proc = start(["run", "job.toml", "--plain"], state, tmp_path)
    _wait_started(state, proc)
    done = run(["cancel", "last"], state, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "cancelled" in done.stdout
    assert proc.wait(15) == 130
    assert query(state, "SELECT state FROM runs") == [("cancelled",)]
    assert query(state, "SELECT state FROM tasks") == [("cancelled",)]
    # cancelled is final: a resume starts a new run instead
    assert query(state, "SELECT outcome FROM attempts") == [("killed",)]


def test_cancel_when_the_runner_is_gone(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(SLOW_JOB)
    state = tmp_path / "state"
    proc = start(["run", "job.toml", "--plain"], state, tmp_path)
    pid = _wait_started(state, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = run(["cancel", "1"], state, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1 leftover attempt stopped" in done.stdout
    time.sleep(0.1)
    assert _gone(pid)
    assert query(state, "SELECT state FROM runs") == [("cancelled",)]
    assert query(state, "SELECT state FROM tasks") == [("cancelled",)]
    again = run(["cancel", "1"], state, tmp_path)
    assert again.returncode == 2 and "already cancelled" in again.stderr


MIXED_JOB = """
[job]
name = "mixed"
[[tasks]]
name = "ok"
items = ["a", "b", "c"]
command = "true"
[[tasks]]
name = "bad"
command = "exit 4"
retries = 0
"""


def test_plain_and_quiet_output(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(MIXED_JOB)
    state = tmp_path / "state"
    plain = run(["run", "job.toml"], state, tmp_path)  # stdout is a pipe: plain lines
    assert plain.returncode == 1
    lines = plain.stdout.splitlines()
    assert len(lines) <= 3 and "\x1b" not in plain.stdout
    assert lines[-1].startswith("labrun: job mixed run 1 failed")
    quiet = run(["run", "job.toml", "--quiet"], state, tmp_path)
    assert quiet.returncode == 1
    qlines = quiet.stdout.splitlines()
    assert len(qlines) == 2 and qlines[0].startswith("bad attempt 1") and "gave up" in qlines[0]
    assert qlines[-1].startswith("labrun: job mixed run 2 failed")
    ok = run(["run", "job.toml", "--quiet"], state, tmp_path)
    assert ok.stderr == ""


def test_gc_removes_old_finished_runs_only(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(MIXED_JOB)
    state = tmp_path / "state"
    for _ in range(3):
        run(["run", "job.toml", "-q"], state, tmp_path)
    old = time.time() - 40 * 86400
    import sqlite3

    conn = sqlite3.connect(state / "labrun.db")
    with conn:
        conn.execute("UPDATE runs SET created = ?, ended = ? WHERE id IN (1, 2)", (old, old))
        conn.execute("UPDATE runs SET state = 'running', ended = NULL WHERE id = 2")
    conn.close()
    done = run(["gc", "--older-than", "30d"], state, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("removed 1 run(s)")
    assert query(state, "SELECT id FROM runs ORDER BY id") == [(2,), (3,)]
    for table in ("tasks", "attempts", "events"):
        assert query(state, f"SELECT COUNT(*) FROM {table} WHERE run_id = 1") == [(0,)]
    assert not (state / "runs" / "1").exists()
    assert (state / "runs" / "2").exists() and (state / "runs" / "3").exists()
    assert integrity(state) == "ok"
    bad = run(["gc", "--older-than", "soon"], state, tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
