"""Memory learned across runs: a task (each item, matched by value) starts at what it
needed last time, so a nightly job stops rediscovering the same OOM kill every night."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import labrun, write_job
from labrun_proc import query
from test_scale import _FULL_SCAN

from labrun.cgroup import detect
from labrun.config.job import TaskSpec
from labrun.learned import LEARN_RUNS, Peak, learn
from labrun.store import Store

MiB = 1024 * 1024


def test_learn_takes_the_peak_with_a_margin_capped_and_never_lower() -> None:
    spec = TaskSpec("t", "true", memory=256 * MiB)
    memory, cause = learn(spec, 256 * MiB, Peak(3, 325 * MiB), 64 * 1024 * MiB)
    assert memory == 390 * MiB and cause == "memory 390.0MiB learned: peaked at 325.0MiB in run 3"
    assert learn(spec, 256 * MiB, Peak(3, 100 * MiB), 0) == (256 * MiB, "")  # never lowered
    assert learn(spec, 256 * MiB, None, 0) == (256 * MiB, "")
    capped = TaskSpec("t", "true", memory=256 * MiB, memory_max=300 * MiB)
    assert learn(capped, 256 * MiB, Peak(1, 325 * MiB), 0)[0] == 300 * MiB
    assert learn(spec, 256 * MiB, Peak(1, 325 * MiB), 280 * MiB) == (
        280 * MiB,
        "memory 280.0MiB learned (capped): peaked at 325.0MiB in run 1",
    )
    off = TaskSpec("t", "true", memory=256 * MiB, learn_memory=False)
    assert learn(off, 256 * MiB, Peak(1, 325 * MiB), 0) == (256 * MiB, "")
    # a rerun's row already grown past the lesson keeps its memory
    assert learn(spec, 512 * MiB, Peak(1, 325 * MiB), 0) == (512 * MiB, "")


def test_the_peaks_query_reads_only_the_latest_runs_by_index(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "labrun.db"))
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    store.peaks("nightly", 10, LEARN_RUNS, 1)
    store.learned(1)
    store.conn.set_trace_callback(None)
    for sql in seen:
        plan = " | ".join(row[-1] for row in store.conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "INDEX" in plan and not _FULL_SCAN.search(plan), (sql, plan)


HOG = "head -c {item}000000 /dev/zero | dd of=/dev/null bs={item}M count=1 iflag=fullblock 2>/dev/null"
JOB = f"""
[job]
name = "nightly"
[defaults]
runtime = "cgroup"
memory = "100MiB"
retry_delay = "0s"
[setup]
command = "printf 'MANIFEST' > {{shared}}/grid.txt"
outputs = ["{{shared}}/grid.txt"]
[[tasks]]
name = "train"
items = "setup"
command = "{HOG}"
"""


def _attempts(state: Path, run: int) -> dict[str, list[tuple[str, int]]]:
    rows = query(
        state,
        "SELECT t.name, t.item, a.outcome, a.memory_limit FROM attempts a JOIN tasks t ON t.id = a.task_id"
        " WHERE a.run_id = ? AND t.spec = 'train' ORDER BY a.id",
        (run,),
    )
    out: dict[str, list[tuple[str, int]]] = {}
    for _, item, outcome, limit in rows:
        out.setdefault(str(item), []).append((str(outcome), int(str(limit))))
    return out


@pytest.mark.skipif(not detect().ok, reason="no cgroup here")
def test_the_second_nightly_run_starts_each_item_at_what_it_needed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    write_job(tmp_path, JOB.replace("MANIFEST", "60\\\\n150\\\\n300\\\\n"))
    assert labrun(state, "run", "job.toml", cwd=tmp_path).returncode == 0
    first = _attempts(state, 1)
    assert [o for o, _ in first["300"]] == ["oom", "oom", "succeeded"]
    assert [o for o, _ in first["150"]] == ["oom", "succeeded"]

    # the grid comes back in another order: lessons follow the item, not its index
    write_job(tmp_path, JOB.replace("MANIFEST", "300\\\\n60\\\\n150\\\\n"))
    second = labrun(state, "run", "job.toml", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    again = _attempts(state, 2)
    assert {item: [o for o, _ in a] for item, a in again.items()} == {
        "300": ["succeeded"],
        "60": ["succeeded"],
        "150": ["succeeded"],
    }
    peak = query(
        state,
        "SELECT MAX(peak_memory) FROM attempts a JOIN tasks t ON t.id = a.task_id"
        " WHERE a.run_id = 1 AND t.item = '300'",
    )[0][0]
    learned = -(-int(str(peak)) * 12 // 10 // MiB) * MiB
    assert again["300"] == [("succeeded", learned)]
    assert again["60"] == [("succeeded", 100 * MiB)]  # never lowered below what the job asks
    assert sum(map(len, again.values())) < sum(map(len, first.values()))
    status = labrun(state, "status", "2", cwd=tmp_path).stdout
    assert "2 started with memory learned from earlier runs: train[0] memory" in status
    assert "learned: peaked at" in status and "in run 1" in status
    causes = query(state, "SELECT cause FROM events WHERE run_id = 2 AND cause LIKE 'memory %learned%'")
    assert len(causes) == 2

    write_job(
        tmp_path,
        JOB.replace("MANIFEST", "300\\\\n").replace("retry_delay", "learn_memory = false\nretry_delay"),
    )
    off = labrun(state, "run", "job.toml", cwd=tmp_path)
    assert off.returncode == 0 and "learned" not in off.stdout
    assert [o for o, _ in _attempts(state, 3)["300"]] == ["oom", "oom", "succeeded"]


@pytest.mark.skipif(not detect().ok, reason="no cgroup here")
def test_a_rerun_of_an_oom_failure_starts_at_the_learned_memory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    hog = HOG.replace("{item}", "150")
    write_job(
        tmp_path,
        f'[job]\nname = "r"\n[[tasks]]\nname = "t"\nruntime = "cgroup"\nmemory = "100MiB"\n'
        f'retries = 0\ncommand = "{hog}"\n',
    )
    assert labrun(state, "run", "job.toml", cwd=tmp_path).returncode == 1
    ((peak,),) = query(state, "SELECT peak_memory FROM attempts WHERE run_id = 1")
    rerun = labrun(state, "run", "--rerun-failed", "job.toml", cwd=tmp_path)
    assert "start with memory learned from earlier runs: t: memory" in rerun.stdout
    ((limit,),) = query(state, "SELECT memory_limit FROM attempts WHERE run_id = 2 AND n = 1")
    assert int(str(limit)) == -(-int(str(peak)) * 12 // 10 // MiB) * MiB > 100 * MiB
