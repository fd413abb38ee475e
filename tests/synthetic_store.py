"""A finished run of N tasks written straight into a real state directory's database, for
reports at scale: every 50th task failed (OOM-killed on its first attempt, with a full
memory series of 200 points, then exited 1) and the others succeeded, on four nodes; an
hour of attempts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from labrun.memseries import MAX_POINTS, Series
from labrun.store import Store

JOB_TEXT = """
[job]
name = "big"
[[tasks]]
name = "t"
command = "work {item}"
items = { range = [0, 1] }
"""

MIB = 1024 * 1024
FAIL_EVERY = 50


def failed_count(n: int) -> int:
    return len(range(0, n, FAIL_EVERY))


def make_run(state: Path, n: int, start: float = 1_700_000_000.0) -> Path:
    """The database of `state` (made 0700) holding run 1 of job `big` with `n` tasks."""
    state.mkdir(mode=0o700, exist_ok=True)
    db = state / "labrun.db"
    Store(str(db)).close()  # the current schema, made the way a runner makes it
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "INSERT INTO runs (id, job, job_file, job_text, state, created, ended, host)"
            " VALUES (1, 'big', 'big.toml', ?, 'failed', ?, ?, 'head')",
            (JOB_TEXT, start, start + 3600),
        )
        conn.executemany(
            "INSERT INTO tasks (id, run_id, seq, name, spec, item, idx, state, attempts, failures, memory,"
            " reason)"
            " VALUES (?, 1, ?, ?, 't', ?, ?, ?, ?, ?, ?, ?)",
            (_task(i) for i in range(n)),
        )
        conn.executemany(
            "INSERT INTO attempts (task_id, run_id, n, node, runtime, started, ended, outcome, exit_code,"
            " signal, memory_limit, peak_memory, cpu_seconds, oom_kills, detail, memory_series, state)"
            " VALUES (?, 1, ?, ?, 'process', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'recorded')",
            (row for i in range(n) for row in _attempts(i, start)),
        )
    conn.close()
    return state


def _climb() -> str | None:
    """A full series (the largest a chart draws): 200 one-second buckets up to 128 MiB."""
    series = Series(0.0)
    for second in range(MAX_POINTS):
        series.add(second + 0.5, (second + 1) * 128 * MIB // MAX_POINTS)
    return series.encode()


CLIMB = _climb()


def _failed(i: int) -> bool:
    return i % FAIL_EVERY == 0


def _task(i: int) -> tuple[object, ...]:
    failed = _failed(i)
    reason = "exited 1; gave up after 2 attempts" if failed else None
    return (
        i + 1,
        i + 1,
        f"t[{i}]",
        f"item-{i}",
        i,
        "failed" if failed else "succeeded",
        2 if failed else 1,
        2 if failed else 0,
        256 * MIB,
        reason,
    )


def _attempts(i: int, start: float) -> list[tuple[object, ...]]:
    node = f"node{i % 4}"
    begin = start + (i * 3600.0 / 100_000)
    peak = (100 + i % 97) * MIB
    if not _failed(i):
        return [
            (i + 1, 1, node, begin, begin + 30, "succeeded", 0, None, 256 * MIB, peak, 25.0, 0, None, None)
        ]
    return [
        (
            i + 1,
            1,
            node,
            begin,
            begin + 10,
            "oom",
            None,
            9,
            128 * MIB,
            128 * MIB,
            9.0,
            1,
            "killed by the kernel's OOM killer",
            CLIMB,
        ),
        (
            i + 1,
            2,
            node,
            begin + 11,
            begin + 20,
            "failed",
            1,
            None,
            256 * MIB,
            peak,
            8.0,
            0,
            "exited 1",
            None,
        ),
    ]
