"""The read-only store on real SQLite files: it never writes, never migrates, never
creates the state directory, and one snapshot is one version of the database."""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from db_writer import Writer

from labrun.errors import StoreError
from labrun.migrations import MIGRATIONS, READS_SAME_SINCE
from labrun.readstore import ReadStore
from labrun.states import TaskState
from labrun.store import Store
from labrun.views.build import PROBLEM_ORDER, events_view, status_view

_FULL_SCAN = re.compile(r"\bSCAN (tasks|attempts|events|runs)\b(?! USING (COVERING )?INDEX)")


def make_run(db: Path, tasks: int) -> int:
    store = Store(str(db))
    with store.tx():
        run_id = store.create_run("job", "/j.toml", "[job]\nname = 'job'\n", 100.0)
        store.add_tasks(
            run_id, [(i, f"t[{i}]", "t", str(i), i, TaskState.READY, 1024) for i in range(1, tasks + 1)]
        )
    store.close()
    return run_id


def test_a_missing_state_directory_reads_as_empty_and_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "state" / "labrun.db"
    reader = ReadStore(str(db))
    with reader.snapshot() as snap:
        assert snap.latest_run() is None and snap.runs() == []
    assert not (tmp_path / "state").exists()


def test_the_reader_never_writes_nor_takes_the_write_lock(tmp_path: Path) -> None:
    db = tmp_path / "labrun.db"
    run_id = make_run(db, 3)
    reader = ReadStore(str(db))
    seen: list[str] = []
    reader.conn.set_trace_callback(seen.append)
    with reader.snapshot() as snap:
        view = status_view(snap, snap.run(run_id), show_all=True)  # type: ignore[arg-type]
        assert [t.name for t in view.tasks] == ["t[1]", "t[2]", "t[3]"]
    assert seen[0] == "BEGIN DEFERRED" and seen[-1] == "COMMIT"
    assert all(s.lstrip().upper().startswith(("SELECT", "BEGIN DEFERRED", "COMMIT")) for s in seen), seen
    with pytest.raises(sqlite3.OperationalError, match=r"readonly|query_only"):
        reader.conn.execute("DELETE FROM runs")


def test_counts_and_rows_of_one_snapshot_agree_though_a_writer_commits_between(tmp_path: Path) -> None:
    db = tmp_path / "labrun.db"
    run_id = make_run(db, 10)
    writer = Writer(db)
    reader = ReadStore(str(db))
    try:
        with reader.snapshot() as snap:
            counts = snap.counts(run_id)
            # another process commits between the two reads of this one snapshot
            writer.send(f"sql UPDATE tasks SET state = 'running' WHERE run_id = {run_id} AND seq <= 4")
            rows = list(snap.tasks(run_id))
        assert counts == {TaskState.READY: 10}
        assert Counter(t.state for t in rows) == counts
        with reader.snapshot() as snap:  # the next snapshot sees the commit
            assert snap.counts(run_id) == {TaskState.READY: 6, TaskState.RUNNING: 4}
    finally:
        writer.close()


def test_status_views_agree_with_their_rows_while_a_writer_keeps_moving_tasks(tmp_path: Path) -> None:
    """A writer process moves tasks back and forth, one commit per move, while status
    views are read: each view's header counts agree with its rows."""
    db = tmp_path / "labrun.db"
    run_id = make_run(db, 200)
    writer = Writer(db)
    reader = ReadStore(str(db))
    seen: set[tuple[int, int]] = set()
    views = 0
    deadline = time.monotonic() + 120
    try:
        writer.send(f"churn {run_id}")
        while len(seen) < 5 or views < 20:  # until the writer has visibly moved tasks meanwhile
            assert time.monotonic() < deadline, f"only {len(seen)} distinct states in {views} views"
            with reader.snapshot() as snap:
                view = status_view(snap, snap.run(run_id), show_all=True)  # type: ignore[arg-type]
                rows = Counter(t.state for t in view.tasks)
            assert {s: n for s, n in view.run.counts.items() if n} == dict(rows)
            seen.add((rows[TaskState.READY], rows[TaskState.RUNNING]))
            views += 1
        writer.send("stop")
    finally:
        writer.close()


def test_an_older_schema_says_to_upgrade_by_writing_and_is_left_as_it_is(tmp_path: Path) -> None:
    db = tmp_path / "labrun.db"
    conn = sqlite3.connect(db)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO runs (job, job_file, job_text, state, created) VALUES ('j', 'j', '', 'failed', 1)"
    )
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"older labrun \(schema 1; .*run any labrun write command"):
        ReadStore(str(db))
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 1
    Store(str(db)).close()  # a write command upgrades it; then it reads
    with ReadStore(str(db)).snapshot() as snap:
        assert snap.latest_run() is not None


def test_a_newer_schema_says_to_upgrade_labrun(tmp_path: Path) -> None:
    db = tmp_path / "labrun.db"
    make_run(db, 1)
    sqlite3.connect(db).execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match=r"newer labrun \(schema 99; .*upgrade labrun"):
        ReadStore(str(db))


def test_a_file_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    db = tmp_path / "labrun.db"
    db.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreError, match="is not a labrun database"):
        ReadStore(str(db))


def test_status_and_events_read_by_index_on_a_large_run(tmp_path: Path) -> None:
    """What `status` and `status --events TASK` issue on 20,000 tasks: no full scan, no sort."""
    db = tmp_path / "labrun.db"
    run_id = make_run(db, 20_000)
    reader = ReadStore(str(db))
    seen: list[str] = []
    reader.conn.set_trace_callback(seen.append)
    with reader.snapshot() as snap:
        run = snap.run(run_id)
        assert run is not None
        view = status_view(snap, run, show_all=False)
        assert not view.every and len(list(view.tasks)) == 20_000  # all ready: all listed
        task = snap.task_by_name(run_id, "t[7]")
        assert task is not None
        assert [e.to_state for e in events_view(snap, run, task).events] == []
        assert [e.cause for e in events_view(snap, run, None).events] == ["run started"]
    reader.conn.set_trace_callback(None)
    distinct = {re.sub(r"\b\d+(\.\d+)?\b", "?", s): s for s in seen if s.startswith("SELECT")}
    for sql in distinct.values():
        plan = " | ".join(row[-1] for row in reader.conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert not _FULL_SCAN.search(plan) and "TEMP B-TREE" not in plan, (sql, plan)


def test_a_status_summary_lists_every_state_but_succeeded() -> None:
    assert set(PROBLEM_ORDER) == set(TaskState) - {TaskState.SUCCEEDED}


def test_a_schema_that_differs_only_in_indexes_reads_without_an_upgrade(tmp_path: Path) -> None:
    """Schema 7 changed only indexes: a state directory last written by the labrun before it
    reads as it is (an upgrade must not make `status` ask for a write first), and the next
    write command migrates it with its rows intact."""
    db = tmp_path / "labrun.db"
    conn = sqlite3.connect(db)
    for script in MIGRATIONS[:READS_SAME_SINCE]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {READS_SAME_SINCE}")
    conn.execute(
        "INSERT INTO runs (job, job_file, job_text, state, created) VALUES ('j', 'j', '', 'failed', 1)"
    )
    conn.execute(
        "INSERT INTO tasks (run_id, seq, name, spec, state, memory) VALUES (1, 1, 't', 't', 'ready', 1)"
    )
    conn.commit()
    conn.close()
    with ReadStore(str(db)).snapshot() as snap:
        run = snap.latest_run()
        assert run is not None and [t.name for t in snap.tasks(run.id)] == ["t"]
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == READS_SAME_SINCE
    Store(str(db)).close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    partial = dict(
        conn.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql LIKE '%WHERE%'")
    )
    assert "state = 'ready'" in partial["tasks_ready_time"]
    assert "state = 'waiting'" in partial["tasks_waiting_by_spec"]
    assert conn.execute("SELECT name, state FROM tasks").fetchall() == [("t", "ready")]


def test_the_runners_task_queries_read_by_index_on_a_large_run(tmp_path: Path) -> None:
    """What the runner asks of a 20,000-task run each tick (ready tasks, the next retry time,
    the waiting tasks of a spec) walks an index: no full scan, no sort."""
    db = tmp_path / "labrun.db"
    run_id = make_run(db, 20_000)
    store = Store(str(db))
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    assert len(store.ready_tasks(run_id, 200.0, 2)) == 2
    assert store.next_ready_time(run_id) == 0.0
    assert store.waiting_of_spec(run_id, "t") == []
    store.conn.set_trace_callback(None)
    for sql in seen:
        plan = " | ".join(row[-1] for row in store.conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert not _FULL_SCAN.search(plan) and "TEMP B-TREE" not in plan, (sql, plan)
    store.close()
