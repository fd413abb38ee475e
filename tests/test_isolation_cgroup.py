"""runtime = "cgroup" through `labrun run`, on the real kernel (here: cgroup v1 as root)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e import MiB, attempts, labrun, status, write_job

from labrun.cgroup import detect, open_existing
from labrun.paths import StatePaths
from labrun.store import Store

SUPPORT = detect()
pytestmark = pytest.mark.skipif(not SUPPORT.ok, reason=f"no cgroup here: {SUPPORT.reason}")
HOG = "head -c 300000000 /dev/zero | dd of=/dev/null bs=300M count=1 iflag=fullblock"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_oom_example_grows_memory_and_succeeds_on_attempt_2(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "oom.toml", tmp_path / "oom.toml")
    done = labrun(tmp_path, "run", "oom.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    first, second = attempts(tmp_path, "hog")
    assert first["outcome"] == "oom" and first["oom_killed"]
    assert first["mechanism"] == SUPPORT.mechanism and first["runtime"] == "cgroup"
    assert first["memory_limit"] == 100 * MiB
    # the kernel stops it at the limit: the high-water mark is the limit, give or take a page
    assert 90 * MiB <= first["peak_memory"] <= 101 * MiB
    assert second["outcome"] == "succeeded"
    assert second["memory_limit"] == 400 * MiB  # max(100 MiB × 4, peak × 1.2)
    assert second["peak_memory"] >= 280 * 10**6
    assert second["cpu_seconds"] > 0
    if SUPPORT.mechanism == "cgroup-v1":  # the retry ran in the first attempt's cgroup, reused
        refs = [a.ref for a in Store(StatePaths(str(tmp_path / "state")).db).run_attempts(1)]
        assert refs[0] is not None and refs == [refs[0]] * 2


def test_default_growth_doubles_until_it_fits(tmp_path: Path) -> None:
    hog = HOG.replace("300000000", "150000000").replace("300M", "150M")
    write_job(tmp_path, f'[[tasks]]\nname = "t"\nruntime = "cgroup"\nmemory = "100MiB"\ncommand = "{hog}"\n')
    done = labrun(tmp_path, "run", "job.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    got = attempts(tmp_path)
    assert [a["outcome"] for a in got] == ["oom", "succeeded"]
    assert [a["memory_limit"] for a in got] == [100 * MiB, 200 * MiB]


def test_gives_up_at_memory_max_saying_how_much(tmp_path: Path) -> None:
    write_job(
        tmp_path,
        '[[tasks]]\nname = "t"\nruntime = "cgroup"\nmemory = "64MiB"\nmemory_max = "128MiB"'
        f'\ncommand = "{HOG}"\n',
    )
    done = labrun(tmp_path, "run", "job.toml")
    assert done.returncode != 0
    got = attempts(tmp_path)
    assert [a["outcome"] for a in got] == ["oom", "oom"]
    assert [a["memory_limit"] for a in got] == [64 * MiB, 128 * MiB]
    reason = status(tmp_path)["tasks"][0]["reason"]
    assert "needs more than 128.0MiB" in reason and "memory_max is 128.0MiB" in reason


def test_child_oom_while_parent_exits_0_is_oom(tmp_path: Path) -> None:
    command = f"({HOG}); echo parent carries on; exit 0"
    write_job(
        tmp_path,
        '[[tasks]]\nname = "t"\nruntime = "cgroup"\nmemory = "64MiB"\non_oom = "fail"'
        f'\ncommand = "{command}"\n',
    )
    labrun(tmp_path, "run", "job.toml")
    (only,) = attempts(tmp_path)
    assert only["exit_code"] == 0
    assert only["outcome"] == "oom" and only["oom_killed"]


def test_sigkill_from_outside_is_failed_not_oom(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    write_job(
        tmp_path,
        f'[[tasks]]\nname = "t"\nruntime = "cgroup"\nretries = 0\nmemory = "64MiB"\n'
        f'command = "echo $$ > {pidfile}; exec sleep 30"\n',
    )
    env = {**os.environ, "LABRUN_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen([sys.executable, "-m", "labrun", "run", "job.toml"], cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 20
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.05)
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        assert proc.wait(timeout=20) != 0
    finally:
        proc.kill()
    (only,) = attempts(tmp_path)
    assert only["outcome"] == "failed"
    assert only["signal"] == "SIGKILL" and not only["oom_killed"]


def test_half_a_cpu_gets_about_half_a_core(tmp_path: Path) -> None:
    loop = "timeout 2 sh -c 'while :; do :; done'; exit 0"
    write_job(tmp_path, f'[[tasks]]\nname = "t"\nruntime = "cgroup"\ncpus = 0.5\ncommand = "{loop}"\n')
    done = labrun(tmp_path, "run", "job.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    (only,) = attempts(tmp_path)
    share = only["cpu_seconds"] / 2.0
    # unlimited it would be about 1.0 (less on a busy machine); the quota holds it at 0.5
    assert 0.2 <= share <= 0.65, share


def test_status_table_lists_every_attempt(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "oom.toml", tmp_path / "oom.toml")
    labrun(tmp_path, "run", "oom.toml")
    table = labrun(tmp_path, "status", "last").stdout
    lines = [line for line in table.splitlines() if line.strip().startswith("#")]
    assert len(lines) == 2
    assert f"cgroup ({SUPPORT.mechanism})" in lines[0] and "limit  100.0MiB" in lines[0]
    assert lines[0].rstrip().endswith("oom") and lines[1].rstrip().endswith("succeeded")


def test_no_cgroup_outlives_the_run(tmp_path: Path) -> None:
    write_job(
        tmp_path, '[[tasks]]\nname = "t"\nruntime = "cgroup"\nitems = { range = [0, 5] }\ncommand = "true"\n'
    )
    assert labrun(tmp_path, "run", "job.toml").returncode == 0
    store = Store(StatePaths(str(tmp_path / "state")).db)
    refs = [a.ref for a in store.run_attempts(1)]
    assert len(refs) == 5 and all(refs)
    for ref in refs:
        assert ref is not None
        assert open_existing(SUPPORT, ref) is None, f"cgroup {ref} outlived the run"
