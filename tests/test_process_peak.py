"""The process runtime samples the process tree's RSS for a best-effort peak."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from e2e import MiB, attempts, labrun, write_job

from labrun.executors.base import Waker
from labrun.executors.sampling import tree_rss


def test_peak_of_a_child_holding_memory_is_sampled(tmp_path: Path) -> None:
    # the memory is held by a grandchild, so only a sum over the tree finds it
    hold = f"{sys.executable} -c 'b = bytearray(200_000_000); import time; time.sleep(2.5)'"
    write_job(tmp_path, f'[[tasks]]\nname = "t"\ncommand = "{hold}; true"\n')
    assert labrun(tmp_path, "run", "job.toml").returncode == 0
    (only,) = attempts(tmp_path)
    assert only["runtime"] == "process" and only["outcome"] == "succeeded"
    assert 190 * 10**6 <= only["peak_memory"] <= 400 * MiB


def test_short_attempts_are_not_sampled(tmp_path: Path) -> None:
    write_job(tmp_path, '[[tasks]]\nname = "t"\ncommand = "true"\n')
    assert labrun(tmp_path, "run", "job.toml").returncode == 0
    (only,) = attempts(tmp_path)
    assert only["peak_memory"] is None


def test_executor_schedules_its_next_sample(tmp_path: Path) -> None:
    from labrun.executors.process import ProcessExecutor
    from labrun.model import Launch

    waker = Waker()
    ex = ProcessExecutor(waker)
    launch = Launch(
        1, 1, "t", 1, ("sleep", "5"), {}, str(tmp_path), str(tmp_path / "o"), str(tmp_path / "e"), 1, 0
    )
    started = time.time()
    try:
        ex.start(launch)
        assert started + 0.9 <= ex.next_sample_at <= time.time() + 1.1
        assert ex.wake_at(started + 0.5) == ex.next_sample_at  # the runner wakes for it
        ex.tick(started + 0.5)  # not due yet: nothing read, next stays at its first second
        assert ex.children[1].peak is None
        ex.tick(started + 1.5)
        assert ex.children[1].peak and ex.children[1].peak > 0
        assert ex.next_sample_at == started + 2.5
    finally:
        ex.signal(1, 9)
        while not ex.finished():
            waker.wait(1)
        waker.close()


def test_tree_rss_leaves_out_gone_processes() -> None:
    assert tree_rss([2**22 + 12345]) == {}
