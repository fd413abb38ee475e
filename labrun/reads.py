"""The read queries of the store: runs, tasks, attempts and events, never a write.

`Store` (the writer) builds on `Reads`, and so does a read-only snapshot
(`labrun.readstore`): one copy of each SELECT, whichever connection runs it. Lists that
grow with a run (its tasks, attempts and events) are streamed: a run may hold 100,000
tasks, and `status --json` must not hold them all at once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from labrun.errors import StoreError
from labrun.rows import (
    ATTEMPT_COLUMNS,
    EVENT_COLUMNS,
    RUN_COLUMNS,
    TASK_COLUMNS,
    AttemptRow,
    EventRow,
    RunRow,
    TaskRow,
    attempt_row,
    event_row,
    run_row,
    task_row,
)
from labrun.states import RunState, Subject, TaskState

NamedEvent = tuple[EventRow, str | None]  # an event and the name of its task (None: the run's)

_EVENT_WITH_NAME = ", ".join(f"e.{c}" for c in EVENT_COLUMNS.split(", ")) + ", t.name"


def read_error(exc: sqlite3.Error, path: str) -> StoreError:
    """A failed read, said for a reader (the writer's own wording is `store._friendly`)."""
    text = str(exc)
    if "not a database" in text:
        return StoreError(f"{path} is not a labrun database ({text}); check state_dir in labrun.toml")
    if "malformed" in text:
        return StoreError(
            f"{path}: the database is damaged ({text}); keep a copy of the state directory "
            "and see https://sqlite.org/recovery.html to recover it"
        )
    if "unable to open" in text:
        return StoreError(
            f"{path}: cannot open the database ({text}); check that you may read it and its directory"
        )
    return StoreError(f"{path}: cannot read the database: {text}")


class Reads:
    """The SELECTs; a subclass provides `conn` and `path` (and may translate errors its way)."""

    conn: sqlite3.Connection
    path: str

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise read_error(exc, self.path) from None

    def _stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Any]:
        try:
            yield from self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise read_error(exc, self.path) from None

    # -- runs ---------------------------------------------------------------------------

    def run(self, run_id: int) -> RunRow | None:
        rows = self._read(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        return run_row(rows[0]) if rows else None

    def latest_run(self, job: str | None = None) -> RunRow | None:
        if job is None:
            rows = self._read(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT 1")
        else:
            rows = self._read(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE job = ? ORDER BY id DESC LIMIT 1", (job,)
            )
        return run_row(rows[0]) if rows else None

    def latest_finished_run(self, job: str) -> RunRow | None:
        """The newest run of `job` that ended (succeeded, failed or cancelled)."""
        return self.previous_finished_run(job, 2**62)

    def previous_finished_run(self, job: str, before: int) -> RunRow | None:
        """The newest run of `job` older than run `before` that finished or was cancelled."""
        rows = self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE job = ? AND id < ? AND state IN (?, ?, ?)"
            " ORDER BY id DESC LIMIT 1",
            (job, before, RunState.SUCCEEDED.value, RunState.FAILED.value, RunState.CANCELLED.value),
        )
        return run_row(rows[0]) if rows else None

    def runs(self, limit: int = 20, job: str | None = None) -> list[RunRow]:
        if job is None:
            rows = self._read(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?", (limit,))
        else:
            sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE job = ? ORDER BY id DESC LIMIT ?"
            rows = self._read(sql, (job, limit))
        return [run_row(r) for r in rows]

    def job_names(self) -> list[str]:
        """Every job that has a run, for `last:JOB`'s did-you-mean."""
        return [r[0] for r in self._read("SELECT DISTINCT job FROM runs ORDER BY job")]

    # -- tasks --------------------------------------------------------------------------

    def task(self, task_id: int) -> TaskRow:
        rows = self._read(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,))
        return task_row(rows[0])

    def task_by_name(self, run_id: int, name: str) -> TaskRow | None:
        rows = self._read(f"SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = ? AND name = ?", (run_id, name))
        return task_row(rows[0]) if rows else None

    def tasks(self, run_id: int, states: Sequence[TaskState] | None = None) -> Iterator[TaskRow]:
        """Every task of a run in creation order, streamed."""
        sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = ?"
        params: list[Any] = [run_id]
        if states:
            sql += f" AND state IN ({', '.join('?' * len(states))})"
            params += [s.value for s in states]
        for row in self._stream(sql + " ORDER BY id", params):
            yield task_row(row)

    def tasks_in_state(self, run_id: int, state: TaskState) -> Iterator[TaskRow]:
        """The tasks of a run in one state, in job order: a walk of one index range, no sort."""
        sql = (
            f"SELECT {TASK_COLUMNS} FROM tasks INDEXED BY tasks_by_state"
            " WHERE run_id = ? AND state = ? ORDER BY seq"
        )
        for row in self._stream(sql, (run_id, state.value)):
            yield task_row(row)

    def longest_task_name(self, run_id: int) -> int:
        """The length of the run's longest task name: how wide `status` makes its column."""
        rows = self._read("SELECT MAX(LENGTH(name)) FROM tasks WHERE run_id = ?", (run_id,))
        return int(rows[0][0] or 0) if rows else 0

    def counts(self, run_id: int) -> dict[TaskState, int]:
        rows = self._read("SELECT state, COUNT(*) FROM tasks WHERE run_id = ? GROUP BY state", (run_id,))
        return {TaskState(state): count for state, count in rows}

    # -- attempts -----------------------------------------------------------------------

    def attempt(self, attempt_id: int) -> AttemptRow:
        rows = self._read(f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE id = ?", (attempt_id,))
        return attempt_row(rows[0])

    def attempts(self, task_id: int) -> list[AttemptRow]:
        rows = self._read(f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE task_id = ? ORDER BY n", (task_id,))
        return [attempt_row(r) for r in rows]

    def run_attempts(self, run_id: int) -> Iterator[AttemptRow]:
        """Every attempt of a run grouped by task, streamed."""
        sql = f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ? ORDER BY task_id, n"
        for row in self._stream(sql, (run_id,)):
            yield attempt_row(row)

    def memory_series(self, attempt_ids: Sequence[int]) -> dict[int, str]:
        """{attempt id: its encoded memory series (labrun.memseries)} for those that have one;
        read apart from the rows, for the few attempts a chart draws."""
        found: dict[int, str] = {}
        ids = list(attempt_ids)
        for i in range(0, len(ids), 500):  # SQLite's bound on parameters per statement
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id, memory_series FROM attempts WHERE id IN ({marks}) AND memory_series NOTNULL"
            found.update(self._read(sql, chunk))
        return found

    def live_attempt_ids(self) -> set[int]:
        """Ids of the attempts still open in runs that may go on (running or interrupted):
        what an orphan sweep must leave alone. An attempt left open in a finished run is
        not among them: nothing will ever wait on it."""
        states = (RunState.RUNNING.value, RunState.INTERRUPTED.value)
        rows = self._read(
            "SELECT a.id FROM attempts a JOIN runs r ON r.id = a.run_id"
            " WHERE a.outcome IS NULL AND r.state IN (?, ?)",
            states,
        )
        return {int(r[0]) for r in rows}

    # -- events -------------------------------------------------------------------------

    def learned(self, run_id: int) -> list[tuple[str, str]]:
        """(task name, cause) of the run's tasks that start with memory learned from earlier runs."""
        return self._read(
            "SELECT t.name, e.cause FROM events e JOIN tasks t ON t.id = e.task_id"
            " WHERE e.run_id = ? AND e.from_state IS NULL AND e.subject = ?"
            " AND e.cause LIKE 'memory % learned%'"
            " ORDER BY e.id",
            (run_id, Subject.TASK.value),
        )

    def events(self, run_id: int, task_id: int | None = None) -> list[EventRow]:
        if task_id is None:
            rows = self._read(f"SELECT {EVENT_COLUMNS} FROM events WHERE run_id = ? ORDER BY id", (run_id,))
        else:
            rows = self._read(f"SELECT {EVENT_COLUMNS} FROM events WHERE task_id = ? ORDER BY id", (task_id,))
        return [event_row(r) for r in rows]

    def named_events(self, run_id: int, task_id: int | None = None) -> Iterator[NamedEvent]:
        """A run's events (or one task's) in the order they happened, with task names; streamed."""
        where = "e.run_id = ?" if task_id is None else "e.task_id = ?"
        sql = (
            f"SELECT {_EVENT_WITH_NAME} FROM events e LEFT JOIN tasks t ON t.id = e.task_id"
            f" WHERE {where} ORDER BY e.id"
        )
        for row in self._stream(sql, (run_id if task_id is None else task_id,)):
            yield event_row(row[:-1]), row[-1]
