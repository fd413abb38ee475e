"""The SQLite store: runs, tasks, attempts and an append-only events table.

With `migrations.py` (the tables), `reads.py` (the SELECTs, shared with read-only
snapshots) and `readstore.py` (opening read-only), the only SQL in labrun. Pragmas are
set in one place (`_connect`); every write happens inside `with store.tx():`, an
immediate transaction, so the runner writes a whole tick in at most two commits (claims
before the processes start, their pids after). Task and attempt rows change through
guarded `UPDATE … WHERE state = ?` statements whose row counts are checked;
`labrun.ledger` is their one caller and writes the event rows with their causes beside
them. Commands that only read open `readstore.ReadStore` instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from labrun import private
from labrun.errors import StoreError
from labrun.migrations import MIGRATIONS
from labrun.model import Facts, Runtime, Started
from labrun.reads import Reads
from labrun.rows import (
    ATTEMPT_COLUMNS,
    RUN_COLUMNS,
    TASK_COLUMNS,
    AttemptRow,
    RunRow,
    TaskRow,
    attempt_row,
    run_row,
    task_row,
)
from labrun.states import (
    AttemptState,
    Outcome,
    RunState,
    Subject,
    TaskState,
    check_attempt_transition,
    check_transition,
)

NewTask = tuple[int, str, str, str | None, int | None, TaskState, int]  # seq..memory
# run_id, task_id, attempt, time, from_state, to_state, cause, subject
NewEvent = tuple[int, int | None, int | None, float, str | None, str | None, str, str]


def _create_private(path: str) -> None:
    """A new database file made 0600 before SQLite opens it: SQLite gives its -wal and -shm
    files the database's own mode, so none of the three follows the umask (a process-wide
    umask set around the open would also reach files other threads create meanwhile)."""
    if path == ":memory:" or path.startswith("file:"):
        return
    try:
        os.close(private.open_fd(path, os.O_WRONLY | os.O_EXCL))
    except OSError:
        pass  # it exists; or SQLite's own open says what is wrong, with the path (`_friendly`)


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
    # A checkpoint every 4,000 WAL pages (16 MiB) rather than 1,000: the runner rewrites the
    # same few pages every tick, and a checkpoint copies each once however often it changed
    # (20 us less per task on 2,000 `true` tasks). SQLite removes the WAL when the last
    # connection closes.
    conn.execute("PRAGMA wal_autocheckpoint = 4000")
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


class Store(Reads):
    """The writer; its reads are `Reads`' (shared with read-only snapshots)."""

    def __init__(self, path: str) -> None:
        self.path = path
        _create_private(path)
        try:
            self.conn = _connect(path)
            self._migrate()
        except sqlite3.Error as exc:
            raise _friendly(exc, path) from None
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

    def create_run(
        self, job: str, job_file: str, job_text: str, now: float, rerun_of: int | None = None
    ) -> int:
        cur = self._write(
            "INSERT INTO runs (job, job_file, job_text, state, created, pid, host, rerun_of)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job,
                job_file,
                job_text,
                RunState.RUNNING.value,
                now,
                os.getpid(),
                os.uname().nodename,
                rerun_of,
            ),
        )
        run_id = int(cur.lastrowid or 0)
        cause = (
            "run started"
            if rerun_of is None
            else f"run started: reruns what did not succeed in run {rerun_of}"
        )
        self.event(run_id, None, None, now, None, RunState.RUNNING.value, cause, Subject.RUN)
        return run_id

    def mark_carried(self, run_id: int, from_run: int) -> None:
        """Tasks of a rerun that succeeded in `from_run` say so (they never run again)."""
        self._write(
            "UPDATE tasks SET reason = ? WHERE run_id = ? AND state = ?",
            (f"succeeded in run {from_run}; carried over", run_id, TaskState.SUCCEEDED.value),
        )

    def set_run_state(self, run_id: int, state: RunState, now: float, cause: str) -> None:
        ended = None if state is RunState.RUNNING else now
        pid = os.getpid() if state is RunState.RUNNING else None
        self._write(
            "UPDATE runs SET state = ?, ended = ?, pid = ? WHERE id = ?",
            (state.value, ended, pid, run_id),
        )
        self.event(run_id, None, None, now, None, state.value, cause)

    def set_run_job(self, run_id: int, job_file: str, job_text: str, now: float, cause: str) -> None:
        """The run follows the job file as now written (a resume after an edit)."""
        self._write("UPDATE runs SET job_file = ?, job_text = ? WHERE id = ?", (job_file, job_text, run_id))
        self.event(run_id, None, None, now, None, None, cause)

    # -- tasks --------------------------------------------------------------------------

    def add_tasks(self, run_id: int, tasks: Iterable[NewTask]) -> None:
        self.conn.executemany(
            "INSERT INTO tasks (run_id, seq, name, spec, item, idx, state, memory)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ((run_id, s, n, sp, it, ix, st.value, m) for s, n, sp, it, ix, st, m in tasks),
        )

    def peaks(self, job: str, before: int, runs: int, above: int) -> list[tuple[int, str, str | None, int]]:
        """(run id, spec, item, largest peak) of tasks in the `runs` latest runs of `job`
        before run `before` whose attempts peaked above `above` bytes; newest run first."""
        return self._read(
            "SELECT t.run_id, t.spec, t.item, MAX(a.peak_memory) FROM attempts a"
            " JOIN tasks t ON t.id = a.task_id"
            " WHERE a.run_id IN (SELECT id FROM runs WHERE job = ? AND id < ? ORDER BY id DESC LIMIT ?)"
            " AND a.peak_memory > ? GROUP BY a.run_id, a.task_id ORDER BY a.run_id DESC",
            (job, before, runs, above),
        )

    def set_reasons(self, run_id: int, reasons: Sequence[tuple[str, str]]) -> None:
        """The reason of named tasks of the run (rows added in a final state)."""
        self.conn.executemany(
            "UPDATE tasks SET reason = ? WHERE run_id = ? AND name = ?",
            ((reason, run_id, name) for name, reason in reasons),
        )

    def note_tasks(self, run_id: int, notes: Sequence[tuple[str, str]], now: float) -> None:
        """An event per named task of the run, with its cause (e.g. memory learned)."""
        self.conn.executemany(
            "INSERT INTO events (run_id, task_id, attempt, time, from_state, to_state, cause, subject)"
            " SELECT run_id, id, NULL, ?, NULL, state, ?, ? FROM tasks WHERE run_id = ? AND name = ?",
            ((now, cause, Subject.TASK.value, run_id, name) for name, cause in notes),
        )

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

    def retarget_task(self, task: TaskRow, item: str | None, memory: int) -> None:
        """A task not yet started takes its item and memory from the edited job file."""
        cur = self._write(
            "UPDATE tasks SET item = ?, memory = ? WHERE id = ? AND state = ?",
            (item, memory, task.id, task.state.value),
        )
        if cur.rowcount != 1:
            raise StoreError(f"task {task.name} was no longer {task.state.value}: is another runner working?")

    def update_task(self, old: TaskRow, new: TaskRow) -> None:
        """Write `new` over the task row `old`, guarded on `old`'s state; no event (the
        ledger writes the event with its cause, batched with the rest of the tick)."""
        check_transition(old.state, new.state)
        values = (new.state.value, new.not_before, new.attempts, new.failures, new.memory, new.reason)
        cur = self._write(
            "UPDATE tasks SET state = ?, not_before = ?, attempts = ?, failures = ?, memory = ?, reason = ?"
            " WHERE id = ? AND state = ?",
            (*values, old.id, old.state.value),
        )
        if cur.rowcount != 1:
            raise StoreError(
                f"task {old.name} was no longer {old.state.value} when moving it to "
                f"{new.state.value}: is another runner working on run {old.run_id}?"
            )

    def update_running(self, old: TaskRow, new: TaskRow) -> None:
        """A running task's counters (another attempt launched, a counted failure while a
        sibling still runs), guarded on what they were."""
        assert old.state is new.state is TaskState.RUNNING, "not a state change: see update_task"
        cur = self._write(
            "UPDATE tasks SET attempts = ?, failures = ? WHERE id = ? AND state = 'running'"
            " AND attempts = ? AND failures = ?",
            (new.attempts, new.failures, old.id, old.attempts, old.failures),
        )
        if cur.rowcount != 1:
            raise StoreError(
                f"task {old.name} was no longer running with {old.attempts} attempt(s) and "
                f"{old.failures} failure(s): is another runner working on run {old.run_id}?"
            )

    def event(
        self,
        run_id: int,
        task_id: int | None,
        attempt: int | None,
        now: float,
        from_state: str | None,
        to_state: str | None,
        cause: str,
        subject: Subject = Subject.RUN,
    ) -> None:
        self._write(
            "INSERT INTO events (run_id, task_id, attempt, time, from_state, to_state, cause, subject)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, task_id, attempt, now, from_state, to_state, cause, subject.value),
        )

    def add_events(self, events: Sequence[NewEvent]) -> None:
        """Many event rows in one statement: a tick's transitions are written together."""
        assert self._in_tx, "writes happen inside store.tx()"
        self.conn.executemany(
            "INSERT INTO events (run_id, task_id, attempt, time, from_state, to_state, cause, subject)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            events,
        )

    # -- attempts -----------------------------------------------------------------------

    def add_attempt(
        self, task: TaskRow, n: int, node: str, runtime: Runtime, now: float, memory_limit: int
    ) -> int:
        cur = self._write(
            "INSERT INTO attempts (task_id, run_id, n, node, runtime, started, memory_limit, state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (task.id, task.run_id, n, node, runtime.value, now, memory_limit, AttemptState.LAUNCHING.value),
        )
        return int(cur.lastrowid or 0)

    def attempts_started(self, started: Sequence[tuple[int, Started]]) -> None:
        """launching -> running for each (attempt id, how to find it again), in one statement."""
        assert self._in_tx, "writes happen inside store.tx()"
        cur = self.conn.executemany(
            "UPDATE attempts SET pid = ?, pid_start = ?, ref = ?, mechanism = ?, state = 'running'"
            " WHERE id = ? AND state = 'launching'",
            ((s.pid, s.pid_start, s.ref, s.mechanism, attempt_id) for attempt_id, s in started),
        )
        if cur.rowcount != len(started):
            ids = ", ".join(str(attempt_id) for attempt_id, _ in started)
            raise StoreError(
                f"attempts {ids}: {len(started) - cur.rowcount} were no longer launching when "
                "recording their start: is another runner working on this run?"
            )

    def adopt_attempt(self, attempt_id: int, old: AttemptState) -> None:
        """An attempt a new runner took over; one that never recorded its start is running now."""
        if old is AttemptState.RUNNING:
            return
        check_attempt_transition(old, AttemptState.RUNNING)
        self._guarded_attempt("UPDATE attempts SET state = 'running'", (), attempt_id, old, "adopting it")

    def finish_attempt(
        self,
        attempt_id: int,
        facts: Facts,
        outcome: Outcome,
        detail: str,
        old: AttemptState,
        new: AttemptState,
    ) -> None:
        """Record how an attempt ended and the state it ends in, guarded on the state it
        was in: an attempt is finished once; a second time is a bug and raises."""
        if new is AttemptState.ABANDONED:  # given up without an observed end
            check_attempt_transition(old, new)
        else:  # ended, and (usually in the same tick) taken in by its task
            check_attempt_transition(old, AttemptState.ENDED)
            if new is not AttemptState.ENDED:
                check_attempt_transition(AttemptState.ENDED, new)
        sql = (
            "UPDATE attempts SET ended = ?, outcome = ?, exit_code = ?, signal = ?, peak_memory = ?,"
            " cpu_seconds = ?, oom_kills = ?, missing_outputs = ?, detail = ?, note = ?,"
            " oom_killed = ?, memory_series = ?, gpus = ?, state = ?"
        )
        values = (
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
            facts.memory_series,
            ",".join(str(gpu) for gpu in facts.gpus) or None,
            new.value,
        )
        self._guarded_attempt(sql, values, attempt_id, old, f"recording it {outcome.value}")

    def _guarded_attempt(
        self, sql: str, values: tuple[Any, ...], attempt_id: int, old: AttemptState, doing: str
    ) -> None:
        cur = self._write(sql + " WHERE id = ? AND state = ?", (*values, attempt_id, old.value))
        if cur.rowcount != 1:
            rows = self._read("SELECT state FROM attempts WHERE id = ?", (attempt_id,))
            now = rows[0][0] if rows else "missing"
            raise StoreError(
                f"attempt {attempt_id} was {now}, not {old.value}, when {doing}: "
                "is another runner working on this run?"
            )

    def succeeded_durations(self, run_id: int) -> list[tuple[str, float]]:
        """(task name, seconds) of every succeeded attempt of the run: relative time limits."""
        rows = self._read(
            "SELECT t.spec, a.ended - a.started FROM attempts a JOIN tasks t ON t.id = a.task_id"
            " WHERE a.run_id = ? AND a.outcome = ? AND a.ended IS NOT NULL",
            (run_id, Outcome.SUCCEEDED.value),
        )
        return [(spec, float(seconds)) for spec, seconds in rows]

    def open_attempts(self, run_id: int) -> list[AttemptRow]:
        rows = self._read(
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ? AND outcome IS NULL",
            (run_id,),
        )
        return [attempt_row(r) for r in rows]

    # -- resume, cancel and gc (labrun/resume.py, labrun/gc.py) ---------------------------

    def local_cgroups(self) -> list[tuple[str, bool]]:
        """The cgroups this state directory's local attempts used: (name, whether an
        attempt that has not ended uses it)."""
        rows = self._read(
            "SELECT ref, MAX(outcome IS NULL) FROM attempts"
            " WHERE runtime = 'cgroup' AND node = 'local' AND ref IS NOT NULL GROUP BY ref"
        )
        return [(str(ref), bool(open_)) for ref, open_ in rows]

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
