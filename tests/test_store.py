"""The store on real SQLite files: schema version, WAL, guarded transitions, events, plans."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from pathlib import Path

import pytest

from labrun.errors import StoreError
from labrun.ledger import Ledger
from labrun.model import Runtime
from labrun.states import Subject, TaskState, TransitionError
from labrun.store import MIGRATIONS, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(str(tmp_path / "labrun.db"))


def make_run(store: Store, tasks: int = 3) -> int:
    with store.tx():
        run_id = store.create_run("job", "/j.toml", "text", 100.0)
        store.add_tasks(
            run_id, [(i, f"t[{i}]", "t", str(i), i, TaskState.READY, 1024) for i in range(1, tasks + 1)]
        )
    return run_id


def test_schema_is_versioned_and_wal(store: Store, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "labrun.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert oct(os.stat(tmp_path / "labrun.db").st_mode & 0o777) == "0o600"
    Store(str(tmp_path / "labrun.db"))  # reopening does not migrate twice


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "labrun.db"
    sqlite3.connect(path).execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer labrun"):
        Store(str(path))


def test_transition_is_guarded_and_recorded(store: Store) -> None:
    run_id = make_run(store)
    task = store.task_by_name(run_id, "t[1]")
    assert task is not None
    ledger = Ledger(store, run_id)
    with ledger.tx():
        ledger.claim(task, "local", Runtime.PROCESS, 101.0)
    # the same (now stale) row cannot move again: the guard sees it is no longer ready
    with pytest.raises(StoreError, match="no longer ready"), ledger.tx():
        ledger.claim(task, "local", Runtime.PROCESS, 102.0)
    with pytest.raises(TransitionError):
        current = store.task(task.id)
        store.update_task(current, dataclasses.replace(current, state=TaskState.WAITING))
    events = store.events(run_id, task.id)
    assert [(e.subject, e.from_state, e.to_state, e.cause) for e in events] == [
        (Subject.TASK, "ready", "running", "attempt 1 on local")
    ]
    assert store.task(task.id).attempts == 1
    assert ledger.counts[TaskState.RUNNING] == 1 and ledger.counts[TaskState.READY] == 2


def test_failed_transaction_rolls_back(store: Store) -> None:
    run_id = make_run(store)
    task = store.task_by_name(run_id, "t[2]")
    assert task is not None
    ledger = Ledger(store, run_id)
    with pytest.raises(RuntimeError), ledger.tx():
        ledger.claim(task, "local", Runtime.PROCESS, 101.0)
        raise RuntimeError("crash mid-tick")
    assert store.task(task.id).state is TaskState.READY
    assert store.events(run_id, task.id) == []


def test_ready_tasks_respect_order_and_backoff(store: Store) -> None:
    run_id = make_run(store, 4)
    first = store.task_by_name(run_id, "t[1]")
    assert first is not None
    with store.tx():
        store.conn.execute("UPDATE tasks SET not_before = 500 WHERE id = ?", (first.id,))
    assert [t.name for t in store.ready_tasks(run_id, 200.0, 2)] == ["t[2]", "t[3]"]
    assert store.next_ready_time(run_id) == 0
    assert store.counts(run_id) == {TaskState.READY: 4}


def test_tick_queries_use_indexes(store: Store) -> None:
    """The queries a tick issues, captured as SQLite runs them, each planned on an index."""
    run_id = make_run(store, 50)
    issued: list[str] = []
    store.conn.set_trace_callback(issued.append)
    store.ready_tasks(run_id, 1.0, 4)
    store.next_ready_time(run_id)
    store.open_attempts(run_id)
    store.conn.set_trace_callback(None)
    assert len(issued) == 3
    for sql in issued:
        plan = " ".join(row[3] for row in store.conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "INDEX" in plan and "SCAN tasks" not in plan, (sql, plan)


def _open(path: str) -> str:
    try:
        Store(path).close()
        return "ok"
    except Exception as exc:  # reported back to the test, which names it
        return f"{type(exc).__name__}: {exc}"


def test_many_processes_opening_a_new_database_at_once(tmp_path: Path) -> None:
    """`labrun run` and `labrun status` (or two cron jobs) starting on a fresh state dir."""
    import multiprocessing

    for attempt in range(5):
        path = str(tmp_path / f"fresh-{attempt}.db")
        with multiprocessing.get_context("fork").Pool(6) as pool:
            results = pool.map(_open, [path] * 6)
        assert results == ["ok"] * 6, results
