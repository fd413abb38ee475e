"""Memory over time: each attempt that runs past a second keeps a bounded series of its
memory (labrun.memseries), sampled from its runtime's best source and stored with its end."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest
from helpers import labrun, write_job

from labrun.cgroup import detect
from labrun.memseries import MAX_POINTS, Series, decode

MIB = 1024 * 1024
SUPPORT = detect()

# Grows by 8 MiB every 0.25 s (pages touched, so resident) up to `steps`, then holds a second.
GROW = """
import sys, time
held = []
for _ in range(int(sys.argv[1])):
    held.append(b"x" * (8 << 20))
    time.sleep(0.25)
time.sleep(1)
"""


def grow_job(tmp_path: Path, runtime: str, steps: int, memory: str, extra: str = "") -> None:
    (tmp_path / "grow.py").write_text(GROW)
    write_job(
        tmp_path,
        f"""
        [job]
        name = "grow"

        [[tasks]]
        name = "grow"
        runtime = "{runtime}"
        memory = "{memory}"
        command = "{sys.executable} grow.py {steps}"
        {extra}
        """,
    )


def stored(state: Path) -> list[tuple[str, int | None, int | None, str | None]]:
    conn = sqlite3.connect(state / "labrun.db")
    try:
        sql = "SELECT outcome, peak_memory, memory_limit, memory_series FROM attempts ORDER BY id"
        return list(conn.execute(sql))
    finally:
        conn.close()


def test_a_series_stays_bounded_and_keeps_its_peak_through_every_merge() -> None:
    series = Series(started=100.0)
    for second in range(10_000):  # 10,000 samples, one a second: 5 merges
        series.add(100.0 + second, 5000 * MIB if second == 7777 else second * 1024)
    assert len(series) <= MAX_POINTS and series.every == 64.0
    points = decode(series.encode())
    assert max(size for _, size in points) == 5000 * MIB  # the one spike survived
    assert points[-1][0] > 9000  # the last bucket is near the end, in seconds after the start


def test_a_bucket_keeps_the_largest_sample_and_missed_buckets_stay_empty() -> None:
    series = Series(started=0.0)
    series.add(0.2, 10 * MIB)
    series.add(0.7, 30 * MIB)
    series.add(3.5, 20 * MIB)  # the runner was busy for two seconds
    assert series.values == [30 * MIB, None, None, 20 * MIB]
    assert decode(series.encode()) == [(0.5, 30 * MIB), (3.5, 20 * MIB)]
    assert Series(0.0).encode() is None  # never sampled: nothing stored
    assert decode("not json") == [] and decode('{"every": 1}') == []


def test_a_process_attempt_keeps_its_growth(tmp_path: Path) -> None:
    grow_job(tmp_path, "process", steps=16, memory="1GiB")
    done = labrun(tmp_path / "state", "run", "job.toml", "--plain", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    ((outcome, peak, _, text),) = stored(tmp_path / "state")
    points = decode(text)
    assert outcome == "succeeded" and len(points) >= 3, text
    sizes = [size for _, size in points]
    assert sizes[-1] >= sizes[0] + 40 * MIB  # it grew while sampled
    assert peak == max(sizes)  # the peak is the largest sample on this runtime


@pytest.mark.skipif(not SUPPORT.ok, reason=f"no cgroup here: {SUPPORT.reason}")
def test_an_oom_killed_cgroup_attempt_keeps_its_climb_to_the_limit(tmp_path: Path) -> None:
    grow_job(tmp_path, "cgroup", steps=60, memory="160MiB", extra='on_oom = "fail"')
    done = labrun(tmp_path / "state", "run", "job.toml", "--plain", cwd=tmp_path, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    ((outcome, peak, limit, text),) = stored(tmp_path / "state")
    points = decode(text)
    assert (outcome, limit) == ("oom", 160 * MIB) and len(points) >= 3, text
    sizes = [size for _, size in points]
    top = sizes.index(max(sizes))
    # the cgroup's charge, climbing to the kill; a sample taken between the kill and the
    # end's notice reads the charge after the kernel freed the task (seen in CI: 0.6 MB)
    assert sizes[: top + 1] == sorted(sizes[: top + 1]) and len(sizes) - top <= 2, sizes
    assert 60 * MIB <= sizes[top] <= 160 * MIB and peak is not None and peak >= sizes[top]
