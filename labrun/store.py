"""The SQLite store: runs, tasks, attempts and an append-only events table.

With `migrations.py` (the tables), the only SQL in labrun. Pragmas are set in one place
(`_connect`); every write happens inside `with store.tx():`, an immediate transaction, so
the runner writes a whole tick in at most two commits (claims before the processes start,
their pids after). A task's state changes only through `transition`, a guarded
`UPDATE … WHERE state = ?` whose row count is checked, plus an event row with the cause.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from labrun.errors import StoreError
from labrun.migrations import MIGRATIONS
from labrun.model import Facts, Runtime, Started
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
from labrun.states import Outcome, RunState, TaskState, check_transition

NewTask = tuple[int, str, str, str | None, int | None, TaskState, int]  # seq..memory


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    # Turning a new file to WAL while another process does the same can fail as "locked"
    # at once, without SQLite's busy wait: wait here instead (bounded).
    deadline = time.monotonic() + 30.0
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process crashes
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _friendly(exc: sqlite3.Error, path: str) -> StoreError:
    text = str(exc)
    if "disk is full" in text or "disk I/O" in text:
        return StoreError(
            f"{path}: the disk holding the state directory is full ({text}); nothing was lost "
            "that had been recorded. Free space there, then resume with `labrun run JOB --resume`."
        )
    if "readonly" in text or "unable to open" in text:
        return StoreError(f"{path}: cannot write the database ({text}); check its permissions")
    return StoreError(f"{path}: database error: {text}")


class Store:
    def __init__(self, path: str) -> None:
        self.path = path
        old_umask = os.umask(0o077)  # nothing in the state directory is world-readable
        try:
            self.conn = _connect(path)
            self._migrate()
        except sqlite3.Error as exc:
            raise _friendly(exc, path) from None
        finally:
            os.umask(old_umask)
        self._in_tx = False

    def close(self) -> None:
        self.conn.close()

    def _migrate(self) -> None:
        """Bring the schema up to date. The version is read under the write lock, so two
        processes opening a new state directory at once (a `run` and a `status`, two cron
        jobs) migrate it once between them instead of both creating the tables."""
        while True:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                version = self.conn.execute("PRAGMA user_version").fetchone()[0]
                if version > len(MIGRATIONS):
                    raise StoreError(
                        f"{self.path} was written by a newer labrun (schema {version}); upgrade labrun"
                    )
                if version == len(MIGRATIONS):
                    self.conn.execute("COMMIT")
                    return
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {version + 1}")
                self.conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    @contextlib.contextmanager
    def tx(self) -> Iterator[None]:
        """One immediate transaction; nested use joins the outer one."""
        if self._in_tx:
            yield
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _friendly(exc, self.path) from None
        self._in_tx = True
        try:
            yield
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise _friendly(exc, self.path) from None
        except BaseException:
            self._rollback()
            raise
        finally:
            self._in_tx = False

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("ROLLBACK")

    def _write(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        assert self._in_tx, "writes happen inside store.tx()"
        return self.conn.execute(sql, params)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _friendly(exc, self.path) from None

    # -- runs ---------------------------------------------------------------------------

    def create_run(self, job: str, job_file: str, job_text: str, now: float) -> int:
        cur = self._write(
            "INSERT INTO runs (job, job_file, job_text, state, created, pid, host)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                job,
                job_file,
                job_text,
                RunState.RUNNING.value,
                now,
                os.getpid(),
                os.uname().nodename,
            ),
        )
        run_id = int(cur.lastrowid or 0)
        self.event(run_id, None, None, now, None, RunState.RUNNING.value, "run started")
        return run_id

    def set_run_state(self, run_id: int, state: RunState, now: float, cause: str) -> None:
        ended = None if state is RunState.RUNNING else now
        pid = os.getpid() if state is RunState.RUNNING else None
        self._write(
            "UPDATE runs SET state = ?, ended = ?, pid = ? WHERE id = ?",
            (state.value, ended, pid, run_id),
        )
        self.event(run_id, None, None, now, None, state.value, cause)

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

    def runs(self, limit: int = 20) -> list[RunRow]:
        rows = self._read(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?", (limit,))
        return [run_row(r) for r in rows]

    # -- tasks --------------------------------------------------------------------------

    def add_tasks(self, run_id: int, tasks: Iterable[NewTask]) -> None:
        self.conn.executemany(
            "INSERT INTO tasks (run_id, seq, name, spec, item, idx, state, memory)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ((run_id, s, n, sp, it, ix, st.value, m) for s, n, sp, it, ix, st, m in tasks),
        )

    def task(self, task_id: int) -> TaskRow:
        rows = self._read(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,))
        return task_row(rows[0])

    def task_by_name(self, run_id: int, name: str) -> TaskRow | None:
        rows = self._read(f"SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = ? AND name = ?", (run_id, name))
        return task_row(rows[0]) if rows else None

    def tasks(self, run_id: int, states: Sequence[TaskState] | None = None) -> Iterator[TaskRow]:
        """Every task of a run in creation order, streamed (a run may hold 100,000 tasks)."""
        sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = ?"
        params: list[Any] = [run_id]
        if states:
            sql += f" AND state IN ({', '.join('?' * len(states))})"
            params += [s.value for s in states]
        cursor = self.conn.execute(sql + " ORDER BY id", params)
        for row in cursor:
            yield task_row(row)

    def ready_tasks(self, run_id: int, now: float, limit: int) -> list[TaskRow]:
        # INDEXED BY: walking tasks_by_state in seq order stops at LIMIT; the planner's own
        # pick (tasks_ready_time) sorted every ready task per tick: 38 ms at 100k, now 0.01 ms
        rows = self._read(
            f"SELECT {TASK_COLUMNS} FROM tasks INDEXED BY tasks_by_state WHERE run_id = ? AND state = 'ready'"
            " AND not_before <= ? ORDER BY seq LIMIT ?",
            (run_id, now, limit),
        )
        return [task_row(r) for r in rows]

    def next_ready_time(self, run_id: int) -> float | None:
        rows = self._read("SELECT MIN(not_before) FROM tasks WHERE run_id = ? AND state = 'ready'", (run_id,))
        return rows[0][0] if rows else None

    def counts(self, run_id: int) -> dict[TaskState, int]:
        rows = self._read("SELECT state, COUNT(*) FROM tasks WHERE run_id = ? GROUP BY state", (run_id,))
        return {TaskState(state): count for state, count in rows}

    # -- dependencies (labrun.deps decides; these read and feed it) ---------------------

    def spec_counts(self, run_id: int) -> list[tuple[str, TaskState, int, str]]:
        """(spec, state, how many, one task's name) per spec and state: once per runner start."""
        rows = self._read(
            "SELECT spec, state, COUNT(*), MIN(name) FROM tasks WHERE run_id = ? GROUP BY spec, state",
            (run_id,),
        )
        return [(spec, TaskState(state), n, name) for spec, state, n, name in rows]

    def waiting_of_spec(self, run_id: int, spec: str) -> list[TaskRow]:
        rows = self._read(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = ? AND spec = ? AND state = 'waiting'"
            " ORDER BY seq",
            (run_id, spec),
        )
        return [task_row(r) for r in rows]

    def max_seq(self, run_id: int) -> int:
        rows = self._read("SELECT MAX(seq) FROM tasks WHERE run_id = ?", (run_id,))
        return int(rows[0][0] or 0)

    def transition(
        self,
        task: TaskRow,
        new: TaskState,
        now: float,
        cause: str,
        attempt: int | None = None,
        **fields: Any,
    ) -> None:
        """Move one task from the state it is in to `new`, recording why."""
        check_transition(task.state, new)
        sets = ", ".join(f"{name} = ?" for name in ("state", *fields))
        cur = self._write(
            f"UPDATE tasks SET {sets} WHERE id = ? AND state = ?",
            (new.value, *fields.values(), task.id, task.state.value),
        )
        if cur.rowcount != 1:
            raise StoreError(
                f"task {task.name} was no longer {task.state.value} when moving it to "
                f"{new.value}: is another runner working on run {task.run_id}?"
            )
        self.event(task.run_id, task.id, attempt, now, task.state.value, new.value, cause)

    def event(
        self,
        run_id: int,
        task_id: int | None,
        attempt: int | None,
        now: float,
        from_state: str | None,
        to_state: str | None,
        cause: str,
    ) -> None:
        self._write(
            "INSERT INTO events (run_id, task_id, attempt, time, from_state, to_state, cause)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run_id, task_id, attempt, now, from_state, to_state, cause),
        )

    def events(self, run_id: int, task_id: int | None = None) -> list[EventRow]:
        if task_id is None:
            rows = self._read(f"SELECT {EVENT_COLUMNS} FROM events WHERE run_id = ? ORDER BY id", (run_id,))
        else:
            rows = self._read(f"SELECT {EVENT_COLUMNS} FROM events WHERE task_id = ? ORDER BY id", (task_id,))
        return [event_row(r) for r in rows]

    # -- attempts -----------------------------------------------------------------------

    def add_attempt(
        self, task: TaskRow, n: int, node: str, runtime: Runtime, now: float, memory_limit: int
    ) -> int:
        cur = self._write(
            "INSERT INTO attempts (task_id, run_id, n, node, runtime, started, memory_limit)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (task.id, task.run_id, n, node, runtime.value, now, memory_limit),
        )
        return int(cur.lastrowid or 0)

    def attempt_started(self, attempt_id: int, started: Started) -> None:
        self._write(
            "UPDATE attempts SET pid = ?, pid_start = ?, ref = ?, mechanism = ? WHERE id = ?",
            (started.pid, started.pid_start, started.ref, started.mechanism, attempt_id),
        )

    def finish_attempt(self, attempt_id: int, facts: Facts, outcome: Outcome, detail: str) -> None:
        self._write(
            "UPDATE attempts SET ended = ?, outcome = ?, exit_code = ?, signal = ?,"
            " peak_memory = ?, cpu_seconds = ?, oom_kills = ?, missing_outputs = ?, detail = ?,"
            " note = ?, oom_killed = ? WHERE id = ? AND outcome IS NULL",
            (
                facts.ended,
                outcome.value,
                facts.exit_code,
                facts.signal,
                facts.peak_memory,
                facts.cpu_seconds,
                facts.oom_kills,  # the kernel's counter only; Docker's flag is its own column
                json.dumps(list(facts.missing_outputs)) if facts.missing_outputs else None,
                detail,
                facts.detail or None,
                int(facts.oom_killed),
                attempt_id,
            ),
        )

    def attempt(self, attempt_id: int) -> AttemptRow:
        rows = self._read(f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE id = ?", (attempt_id,))
        return attempt_row(rows[0])

    def attempts(self, task_id: int) -> list[AttemptRow]:
        rows = self._read(f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE task_id = ? ORDER BY n", (task_id,))
        return [attempt_row(r) for r in rows]

    def run_attempts(self, run_id: int) -> Iterator[AttemptRow]:
        """Every attempt of a run grouped by task, streamed."""
        cursor = self.conn.execute(
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ? ORDER BY task_id, n",
            (run_id,),
        )
        for row in cursor:
            yield attempt_row(row)

    def open_attempts(self, run_id: int) -> list[AttemptRow]:
        rows = self._read(
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ? AND outcome IS NULL",
            (run_id,),
        )
        return [attempt_row(r) for r in rows]

    # -- resume, cancel and gc (labrun/resume.py, labrun/gc.py) ---------------------------

    def latest_unfinished_run(self, job: str) -> RunRow | None:
        """The newest run of `job` that neither finished nor was cancelled."""
        rows = self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE job = ? AND state IN (?, ?) ORDER BY id DESC LIMIT 1",
            (job, RunState.RUNNING.value, RunState.INTERRUPTED.value),
        )
        return run_row(rows[0]) if rows else None

    def old_finished_runs(self, before: float) -> list[RunRow]:
        rows = self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE state IN (?, ?, ?) AND COALESCE(ended, created) < ?"
            " ORDER BY id",
            (RunState.SUCCEEDED.value, RunState.FAILED.value, RunState.CANCELLED.value, before),
        )
        return [run_row(r) for r in rows]

    def delete_run(self, run_id: int) -> None:
        """A finished run's rows, all of them; its logs are the caller's."""
        for table in ("events", "attempts"):
            self._write(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
        self._write("DELETE FROM tasks WHERE run_id = ?", (run_id,))
        self._write("DELETE FROM runs WHERE id = ? AND state != ?", (run_id, RunState.RUNNING.value))
