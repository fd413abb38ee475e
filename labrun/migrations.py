"""The database's tables and indexes, as a list of migrations.

`Store` applies them in order under the write lock and records how far it got in
`PRAGMA user_version`. Each entry moves the schema from version i to i + 1: append a new
one for a change, never edit one that was released.
"""

from __future__ import annotations

_SCHEMA_V1 = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    job_file TEXT NOT NULL,
    job_text TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    ended REAL,
    pid INTEGER,
    host TEXT
);
CREATE INDEX runs_job ON runs(job, id);
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    item TEXT,
    idx INTEGER,
    state TEXT NOT NULL,
    not_before REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    memory INTEGER NOT NULL,
    reason TEXT,
    UNIQUE (run_id, name)
);
CREATE INDEX tasks_by_state ON tasks(run_id, state, seq);
CREATE INDEX tasks_ready_time ON tasks(run_id, state, not_before);
CREATE TABLE attempts (
    id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL REFERENCES tasks(id),
    run_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    node TEXT NOT NULL,
    runtime TEXT NOT NULL,
    mechanism TEXT,
    pid INTEGER,
    pid_start REAL,
    ref TEXT,
    started REAL NOT NULL,
    ended REAL,
    outcome TEXT,
    exit_code INTEGER,
    signal INTEGER,
    memory_limit INTEGER,
    peak_memory INTEGER,
    cpu_seconds REAL,
    oom_kills INTEGER,
    missing_outputs TEXT,
    detail TEXT,
    UNIQUE (task_id, n)
);
CREATE INDEX attempts_open ON attempts(run_id) WHERE outcome IS NULL;
CREATE INDEX attempts_run ON attempts(run_id, task_id, n);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    task_id INTEGER,
    attempt INTEGER,
    time REAL NOT NULL,
    from_state TEXT,
    to_state TEXT,
    cause TEXT NOT NULL
);
CREATE INDEX events_task ON events(task_id);
CREATE INDEX events_run ON events(run_id);
"""

# Dependencies: a finished spec promotes or skips the waiting tasks of its dependents.
_SCHEMA_DEPS = """
CREATE INDEX tasks_by_spec ON tasks(run_id, spec, state);
"""

# Attempts have their own lifecycle (states.AttemptState); events say whether they are
# about the run, a task or an attempt (states.Subject), since their states share names.
# An attempt with no pid and no reference never got past its launch.
_SCHEMA_ATTEMPT_STATES = """
ALTER TABLE attempts ADD COLUMN state TEXT NOT NULL DEFAULT 'recorded';
UPDATE attempts SET state = CASE
    WHEN outcome IS NOT NULL THEN 'recorded'
    WHEN pid IS NULL AND ref IS NULL THEN 'launching'
    ELSE 'running' END;
ALTER TABLE events ADD COLUMN subject TEXT NOT NULL DEFAULT 'task';
UPDATE events SET subject = 'run' WHERE task_id IS NULL;
UPDATE events SET subject = 'attempt' WHERE task_id IS NOT NULL AND from_state = to_state;
"""

# `labrun run --rerun-failed`: a run made from another's failures names it.
_SCHEMA_RERUN = """
ALTER TABLE runs ADD COLUMN rerun_of INTEGER;
"""

# What the executor noted (Facts.detail: Docker's State.Error, counters it could not read),
# kept apart from `detail` (the classifier's one line); and Docker's OOMKilled flag, kept
# apart from the kernel's counter (`oom_kills`) so `why` can say which source saw an OOM.
_SCHEMA_FACTS = """
ALTER TABLE attempts ADD COLUMN note TEXT;
ALTER TABLE attempts ADD COLUMN oom_killed INTEGER;
"""

# What an attempt used over time, written with its end (no write per sample): its memory
# series (labrun.memseries' text, at most 200 points) and the GPUs it held ("0,2"), for
# the report's charts. Read apart from the attempt rows: only the charts need them.
_SCHEMA_SERIES = """
ALTER TABLE attempts ADD COLUMN memory_series TEXT;
ALTER TABLE attempts ADD COLUMN gpus TEXT;
"""

# Fewer index pages written per transition: a task moves through 3-4 states, and every
# index whose key holds its state had two entries rewritten each time (a tick wrote about
# 18 database pages to the WAL, 9 of them task index pages). The ready tasks' times and
# the waiting tasks of a spec are only ever looked up in that one state: partial indexes
# hold just those rows, so running -> succeeded touches neither. Counting tasks per spec
# (once per runner start) walks tasks_by_state instead.
_SCHEMA_PARTIAL_INDEXES = """
DROP INDEX tasks_ready_time;
CREATE INDEX tasks_ready_time ON tasks(run_id, not_before) WHERE state = 'ready';
DROP INDEX tasks_by_spec;
CREATE INDEX tasks_waiting_by_spec ON tasks(run_id, spec, seq) WHERE state = 'waiting';
"""

# The oldest schema whose tables read as the current one's do (the migrations after it
# changed only indexes): a read-only store reads it without asking for an upgrade.
READS_SAME_SINCE = 6

# Each entry moves the schema from version i to i + 1; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    _SCHEMA_V1,
    _SCHEMA_DEPS,
    _SCHEMA_ATTEMPT_STATES,
    _SCHEMA_RERUN,
    _SCHEMA_FACTS,
    _SCHEMA_SERIES,
    _SCHEMA_PARTIAL_INDEXES,
)
