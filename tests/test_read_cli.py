"""`status`, `why`, `runs` and `logs` as a user runs them, against a real state directory
that a runner (or anyone) holds the write lock of, or that is mounted read-only."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from db_writer import Writer
from helpers import REPO, cli_env, finished_run, labrun, write_job

# Well under the store's 30 s busy timeout: a reader that waited for the lock would fail.
NO_WAIT = 10.0

STORY_JOB = """
[job]
name = "story"
[defaults]
retry_delay = 0
memory = "64MiB"
[[tasks]]
name = "flaky"
command = "test -f marker || { touch marker; exit 3; }"
retries = 2
[[tasks]]
name = "broken"
command = "echo boom >&2; exit 4"
retries = 0
"""


@pytest.fixture
def story(tmp_path: Path) -> Path:
    """A finished run: `flaky` failed once and succeeded on its retry, `broken` failed."""
    return finished_run(tmp_path, STORY_JOB)


def read(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A read command that must answer without waiting for any lock (exit 0)."""
    done = labrun(state, *args, timeout=NO_WAIT)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def check_every_read_command(state: Path) -> None:
    table = read(state, "status", "last").stdout
    assert "1 succeeded, 1 failed (2 tasks)" in table
    assert "broken" in table and "exited 4" in table
    document = json.loads(read(state, "status", "last", "--json").stdout)
    assert {t["id"]: t["state"] for t in document["tasks"]} == {"flaky": "succeeded", "broken": "failed"}
    why = read(state, "why", "last", "broken").stdout
    assert "exit code 4" in why and "boom" in why
    assert "story" in read(state, "runs").stdout
    assert read(state, "logs", "last", "broken", "--stderr").stdout == "boom\n"
    events = read(state, "status", "--events", "last", "flaky").stdout
    assert "exited 3" in events
    trace = read(state, "report", "last", "--format", "tsv", "-o", "-").stdout
    assert "broken\t\t1\tlocal\tprocess\tfailed\t4" in trace


def test_read_commands_answer_while_another_process_holds_the_write_lock(story: Path) -> None:
    writer = Writer(story / "labrun.db")
    try:
        writer.send("lock")
        check_every_read_command(story)
    finally:
        writer.close()


def test_status_events_tells_a_retried_tasks_story_in_order(story: Path) -> None:
    text = read(story, "status", "--events", "last", "flaky").stdout.splitlines()
    assert text[0].endswith("events of task flaky") and text[1].startswith("TIME")
    rows = [line.split() for line in text[2:]]
    moves = [(r[4], r[6], r[8]) for r in rows if r[5] == "task"]
    assert moves == [
        ("#1", "ready", "running"),
        ("#1", "running", "ready"),
        ("#2", "ready", "running"),
        ("#2", "running", "succeeded"),
    ], text
    task_lines = [line for line, r in zip(text[2:], rows, strict=True) if r[5] == "task"]
    assert "exited 3" in task_lines[1] and "retry" in task_lines[1] and "exited 0" in task_lines[3]
    attempt_moves = [(r[4], r[6], r[8]) for r in rows if r[5] == "attempt"]
    assert ("#1", "launching", "running") in attempt_moves and ("#2", "ended", "recorded") in attempt_moves

    document = json.loads(read(story, "status", "--events", "last", "flaky", "--json").stdout)
    events = document["events"]
    assert document["task"] == "flaky"
    assert [(e["attempt"], e["from"], e["to"]) for e in events if e["subject"] == "task"] == [
        (1, "ready", "running"),
        (1, "running", "ready"),
        (2, "ready", "running"),
        (2, "running", "succeeded"),
    ]
    task_events = [e for e in events if e["subject"] == "task"]
    assert "exited 3" in task_events[1]["cause"] and all(e["task"] == "flaky" for e in events)
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)

    every = json.loads(read(story, "status", "--events", "last", "--json").stdout)["events"]
    assert (every[0]["task"], every[0]["to"], every[0]["cause"]) == (None, "running", "run started")
    assert (every[-1]["task"], every[-1]["to"]) == (None, "failed")
    assert [e["to"] for e in every if e["task"] == "broken" and e["subject"] == "task"] == [
        "running",
        "failed",
    ]


def test_status_of_one_task_and_unknown_tasks(story: Path) -> None:
    one = read(story, "status", "last", "flaky").stdout
    assert "flaky" in one and "broken" not in one and "#2" in one
    wrong = labrun(story, "status", "--events", "last", "flakey", timeout=NO_WAIT)
    assert wrong.returncode == 2 and "did you mean 'flaky'" in wrong.stderr


def test_reading_a_state_directory_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    state = tmp_path / "nothing-here"
    status = labrun(state, "status", timeout=NO_WAIT)
    assert status.returncode == 2 and "there are no runs yet" in status.stderr
    assert read(state, "runs").stdout.startswith("  RUN JOB")
    assert not state.exists()


def test_reading_leaves_the_state_directory_as_it_is(story: Path) -> None:
    """A writer tightens the state directory to 0700; a reader changes nothing there. On a
    writable directory SQLite may add the -wal and -shm it reads through, private like the
    database (on a read-only one it cannot: see the mount tests below)."""
    story.chmod(0o750)
    before = {p.name for p in story.iterdir()}
    check_every_read_command(story)
    assert stat.S_IMODE(story.stat().st_mode) == 0o750
    after = {p.name for p in story.iterdir()}
    assert after - before <= {"labrun.db-wal", "labrun.db-shm"}, after - before
    for name in after - before:
        assert stat.S_IMODE((story / name).stat().st_mode) == 0o600, name


# -- a state directory mounted read-only ------------------------------------------------


def _sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(state, view): `view` is `state` bind-mounted read-only. Root ignores permission
    bits, so only a read-only mount makes a directory unwritable for these tests."""
    state, view = tmp_path / "state", tmp_path / "view"
    state.mkdir(mode=0o700, exist_ok=True)
    view.mkdir()
    bind = _sh("mount", "--bind", str(state), str(view))
    if bind.returncode != 0:
        pytest.skip(f"mount --bind is refused here: {bind.stderr.strip()}")
    try:
        ro = _sh("mount", "-o", "remount,bind,ro", str(view))
        if ro.returncode != 0:
            pytest.skip(f"remounting a bind mount read-only is refused here: {ro.stderr.strip()}")
        assert not os.access(view, os.W_OK)
        yield state, view
    finally:
        _sh("umount", "-l", str(view))


def _finish(tmp_path: Path, state: Path) -> None:
    job = write_job(tmp_path, STORY_JOB)
    done = labrun(state, "run", str(job), "--plain", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr


def _checkpoint(db: Path) -> None:
    """What the last connection to close does: the -wal is folded in and removed."""
    conn = sqlite3.connect(db)
    conn.execute("SELECT COUNT(*) FROM runs").fetchone()
    conn.close()
    assert not Path(f"{db}-wal").exists()


def test_read_commands_work_on_a_read_only_mount_of_a_finished_run(
    tmp_path: Path, read_only_view: tuple[Path, Path]
) -> None:
    state, view = read_only_view
    _finish(tmp_path, state)
    _checkpoint(state / "labrun.db")
    before = sorted(p.name for p in state.iterdir())
    check_every_read_command(view)
    assert sorted(p.name for p in state.iterdir()) == before  # nothing was created, not even a -shm


def test_a_read_only_mount_shows_what_a_live_writer_committed(
    tmp_path: Path, read_only_view: tuple[Path, Path]
) -> None:
    """A runner writing through another path: its commits sit in the -wal, which the
    reader must read (immutable would show the older file) while it holds the lock."""
    state, view = read_only_view
    _finish(tmp_path, state)
    writer = Writer(state / "labrun.db")
    try:
        writer.send(
            "sql INSERT INTO events (run_id, time, cause) VALUES (1, 2000000000, 'committed after the mount')"
        )
        writer.send("lock")
        assert Path(f"{state}/labrun.db-wal").exists()
        check_every_read_command(view)
        assert "committed after the mount" in read(view, "status", "--events", "last").stdout
    finally:
        writer.close()


READ_THEN_WAIT = """
import sys
from labrun.readstore import ReadStore
from labrun.errors import StoreError
reader = ReadStore(sys.argv[1])
try:
    with reader.snapshot() as snap:
        print(snap.counts(1), flush=True)
        sys.stdin.readline()  # the test writes through the writable path meanwhile
        print(list(snap.tasks(1))[0].name, flush=True)
    print("unchanged", flush=True)
except StoreError as exc:
    print(exc, flush=True)
"""


def test_a_read_without_locks_notices_a_write_under_it(
    tmp_path: Path, read_only_view: tuple[Path, Path]
) -> None:
    """With no -wal on a read-only mount the database is read without locks (immutable);
    a runner that writes through another path meanwhile is noticed, not shown mixed."""
    state, view = read_only_view
    _finish(tmp_path, state)
    _checkpoint(state / "labrun.db")
    proc = subprocess.Popen(
        [sys.executable, "-c", READ_THEN_WAIT, str(view / "labrun.db")],
        cwd=REPO,
        env=cli_env(state),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert "SUCCEEDED" in proc.stdout.readline()
        conn = sqlite3.connect(state / "labrun.db", isolation_level=None)
        conn.execute("UPDATE tasks SET reason = 'changed' WHERE name = 'broken'")
        conn.close()  # the last connection: its commit is checkpointed into the file
        time.sleep(0.01)  # a new mtime even on a coarse clock (not a race: the order is fixed)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out = proc.stdout.read()
    finally:
        proc.wait(timeout=60)
    assert "changed while it was read through a read-only directory" in out and "run the command again" in out
