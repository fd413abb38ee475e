"""Scale: a 20,000-task run end to end, and a tick whose cost does not grow with the run.

Not timed (the machine is shared): the plan of every statement a tick issues is checked
with EXPLAIN QUERY PLAN, and the work SQLite does per tick is counted in VM steps.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, cli_env, labrun, write_job
from test_runner import FakeExecutor, job, make_runner

from labrun.runner import Runner
from labrun.store import Store

N_RUN = 20_000

_FULL_SCAN = re.compile(r"\bSCAN (tasks|attempts|events|runs)\b(?! USING (COVERING )?INDEX)")


@pytest.mark.slow  # about 40 s on 2 shared cores
def test_a_20000_task_run_completes_with_status_json_and_logs(tmp_path: Path) -> None:
    path = write_job(
        tmp_path,
        f"""
        [job]
        name = "many"
        [defaults]
        cpus = 1
        memory = "16MiB"
        [[tasks]]
        name = "t"
        command = ["true"]
        items = {{ range = [0, {N_RUN}] }}
        """,
    )
    result = labrun(tmp_path / "state", "run", str(path), "--quiet", timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"{N_RUN} succeeded of {N_RUN} tasks" in result.stdout

    status = labrun(tmp_path / "state", "status", "last")
    # a summary, not 20,000 lines: only tasks that did not succeed would be listed
    assert f"{N_RUN} succeeded ({N_RUN} tasks)" in status.stdout
    assert len(status.stdout.splitlines()) < 10, status.stdout[:2000]

    proc = subprocess.Popen(
        [sys.executable, "-m", "labrun", "status", "last", "--json"],
        cwd=REPO,
        env=cli_env(tmp_path / "state"),
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    document = json.load(proc.stdout)
    proc.wait()
    assert len(document["tasks"]) == N_RUN
    assert document["tasks"][-1]["attempts"][0]["outcome"] == "succeeded"

    logs = labrun(tmp_path / "state", "logs", "last", f"t[{N_RUN - 1}]")
    assert logs.returncode == 0 and logs.stdout == ""


def _tick_statements(runner: Runner, store: Store, fake: FakeExecutor, ticks: int) -> tuple[list[str], int]:
    """Run `ticks` ticks, each ending every running attempt (one in three fails and
    retries); returns the statements issued and the SQLite VM steps of the last tick."""
    statements: list[str] = []
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    store.conn.set_trace_callback(statements.append)
    now = 1.0
    for i in range(ticks):
        for n, launch in enumerate(list(fake.launches.values())):
            fake.finish(launch, 1 if (i + n) % 3 == 0 else 0)
        steps[0] = 0
        store.conn.set_progress_handler(count, 100)
        runner.tick(now)
        store.conn.set_progress_handler(None, 0)
        now += 20.0  # past every retry's backoff
    store.conn.set_trace_callback(None)
    return statements, steps[0]


def test_the_queries_a_tick_issues_use_indexes_and_its_work_does_not_grow(tmp_path: Path) -> None:
    fake = FakeExecutor()
    runner, store = make_runner(
        tmp_path, job(f"{{ range = [0, {N_RUN}] }}", "max_parallel = 16"), fake, cpus=64
    )
    runner.tick(0.0)
    early, steps_early = _tick_statements(runner, store, fake, 20)
    # finish most of the run, then look at the statements of later ticks too
    middle, _ = _tick_statements(runner, store, fake, 900)
    late, steps_late = _tick_statements(runner, store, fake, 20)
    statements = early + middle + late
    done = sum(n for state, n in runner.counts.items() if state.terminal)
    assert done > 8_000, runner.counts

    distinct = {
        re.sub(r"\b\d+(\.\d+)?\b", "?", s): s for s in statements if not s.startswith(("BEGIN", "COMMIT"))
    }
    assert any("state = 'ready'" in s and "LIMIT" in s for s in distinct), "ready_tasks was not issued"
    plans = {}
    for sql in distinct.values():
        rows = store.conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
        plans[sql] = [row[-1] for row in rows]
    scans = {sql: plan for sql, plan in plans.items() if any(_FULL_SCAN.search(step) for step in plan)}
    assert not scans, f"full scans per tick: {scans}"
    sorts = {sql: plan for sql, plan in plans.items() if any("TEMP B-TREE" in step for step in plan)}
    assert not sorts, f"sorts per tick (cost grows with the queue): {sorts}"
    # the work per tick stays flat while finished tasks pile up (x3: slack for retries)
    assert steps_late <= 3 * max(steps_early, 10), (steps_early, steps_late)
    print(f"SQLite VM steps (x100) in a tick: {steps_early} early, {steps_late} after {done} finished")


def test_store_queries_of_the_tick_search_by_index(tmp_path: Path) -> None:
    """The same, straight from the store methods the tick calls, on a 20,000-task queue."""
    fake = FakeExecutor()
    runner, store = make_runner(tmp_path, job(f"{{ range = [0, {N_RUN}] }}", "max_parallel = 2"), fake)
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    store.ready_tasks(runner.run.id, 5.0, 3)
    store.next_ready_time(runner.run.id)
    store.counts(runner.run.id)
    store.conn.set_trace_callback(None)
    for sql in seen:
        plan = " | ".join(row[-1] for row in store.conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING" in plan and "INDEX" in plan, (sql, plan)
        assert not _FULL_SCAN.search(plan) and "TEMP B-TREE" not in plan, (sql, plan)


def _peak_rss_of_run(state: Path, job_file: Path) -> int:
    """Run labrun; its own peak RSS in bytes from wait4 (its children are `head`, tiny)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "labrun", "run", str(job_file), "--quiet"],
        cwd=REPO,
        env=cli_env(state),
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    return usage.ru_maxrss * 1024


def test_a_task_printing_200mb_does_not_grow_the_runner(tmp_path: Path) -> None:
    peaks = []
    for size in (200_000_000, 0):
        body = f"""
            [job]
            name = "loud"
            [[tasks]]
            name = "t"
            command = ["head", "-c", "{size}", "/dev/zero"]
            """
        peaks.append(_peak_rss_of_run(tmp_path / "state", write_job(tmp_path, body, f"j{size}.toml")))
    log = tmp_path / "state" / "runs" / "1" / "t.1.stdout"
    assert log.stat().st_size == 200_000_000  # the output went to a file
    loud, quiet = peaks
    assert loud - quiet < 10 * 2**20, f"runner peak RSS {loud} bytes with 200 MB printed, {quiet} without"
