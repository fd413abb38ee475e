"""`labrun gc` (and `--resume`) remove the cgroups that dead runners of this state directory
left, and nothing else (issue 12: 336 cgroup directories were left after a final resume)."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
from contract_backends import wait_until
from helpers import labrun, write_job

from labrun.cgroup import Limits, create, detect, open_existing

SUPPORT = detect()
pytestmark = pytest.mark.skipif(not SUPPORT.ok, reason=f"runtime cgroup cannot run here: {SUPPORT.reason}")


def _dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def test_gc_removes_dead_runners_cgroups_of_this_state_directory_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    text = '[job]\nname = "cg"\n\n[[tasks]]\nname = "a"\nruntime = "cgroup"\ncommand = "true"\n'
    job = write_job(tmp_path, text)
    assert labrun(state, "run", str(job), cwd=tmp_path).returncode == 0
    dead = _dead_pid()
    idle, busy = f"p{dead}-test01-1", f"p{dead}-test01-2"  # a dead runner's pool
    other = f"p{dead}-other1-1"  # the same dead pid, but no attempt here used it
    made = [create(SUPPORT, name, Limits()) for name in (idle, busy, other)]
    sleeper = subprocess.Popen(made[1].wrap_argv(["sleep", "300"]))  # joins `busy`, then execs
    try:
        wait_until(lambda: bool(made[1].pids()), "the sleeper is in its cgroup")
        with sqlite3.connect(state / "labrun.db") as conn:  # two finished attempts used them
            conn.execute("UPDATE attempts SET ref = ? WHERE id = (SELECT MIN(id) FROM attempts)", (idle,))
            row = conn.execute("SELECT task_id, run_id FROM attempts").fetchone()
            conn.execute(
                "INSERT INTO attempts (task_id, run_id, n, node, runtime, started, ended, outcome, ref,"
                " state) VALUES (?, ?, 2, 'local', 'cgroup', 0, 1, 'succeeded', ?, 'recorded')",
                (*row, busy),
            )
        done = labrun(state, "gc", cwd=tmp_path)
        assert done.returncode == 0 and "1 cgroup(s) that dead runners left" in done.stdout, done.stdout
        assert open_existing(SUPPORT, idle) is None  # empty, its runner dead: removed
        assert open_existing(SUPPORT, busy) is not None  # a process in it: never touched
        assert open_existing(SUPPORT, other) is not None  # not this state directory's
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
        for name in (idle, busy, other):
            cg = open_existing(SUPPORT, name)
            if cg is not None:
                cg.remove()
