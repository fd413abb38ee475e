"""Measurements behind bench/throughput.py: each runs the real `labrun` CLI in a subprocess.

Every helper returns plain numbers; the caller builds the table. A temporary state
directory per measurement keeps runs apart; the run's own SQLite file is read back for
what only the runner knows (when the first attempt started).
"""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

LABRUN = [sys.executable, "-m", "labrun"]


def job_text(name: str, n: int, command: str, max_parallel: int | None = None, cpus: float = 1.0) -> str:
    """A job of n tasks fanned out over a range; command is a TOML value."""
    cap = f"max_parallel = {max_parallel}\n" if max_parallel else ""
    return (
        f'[job]\nname = "{name}"\n{cap}\n[defaults]\ncpus = {cpus}\nmemory = "16MiB"\n\n'
        f'[[tasks]]\nname = "t"\ncommand = {command}\nitems = {{ range = [0, {n}] }}\n'
    )


def two_cpu_lab(directory: str, runtime_line: str = "") -> str:
    """A labrun.toml whose local node has 2 cpus: with cpus = 1 per task, 2 run at once."""
    path = os.path.join(directory, "labrun.toml")
    with open(path, "w") as handle:
        handle.write(f'state_dir = "state"\n{runtime_line}\n[nodes.local]\ncpus = 2\n')
    return path


@dataclass(frozen=True)
class Finished:
    wall: float  # seconds, from exec to exit
    rc: int
    max_rss: int  # bytes, of the labrun process (its children end before it and are reaped by it)
    output: str


def run_cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> Finished:
    """Run labrun once; ru_maxrss comes from wait4 on exactly that child."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*LABRUN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    out = b""
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    return Finished(wall, proc.returncode, usage.ru_maxrss * 1024, out.decode(errors="replace"))


@dataclass(frozen=True)
class ScaleRun:
    tasks: int
    wall: float
    enqueue: float  # run created -> first attempt started, from the run's own rows
    max_rss: int
    rate: float
    state_dir: str
    config: str


def scale_run(n: int, workdir: str) -> ScaleRun:
    """A full run of n `true` tasks, 2 at a time; enqueue time read back from the store."""
    directory = tempfile.mkdtemp(prefix=f"scale{n}-", dir=workdir)
    config = two_cpu_lab(directory)
    job = os.path.join(directory, "job.toml")
    with open(job, "w") as handle:
        handle.write(job_text("scale", n, '["true"]'))
    done = run_cli(["run", job, "--config", config, "--quiet"])
    if done.rc != 0:
        raise RuntimeError(f"the {n}-task run failed ({done.rc}): {done.output[-500:]}")
    db = sqlite3.connect(os.path.join(directory, "state", "labrun.db"))
    created, ended = db.execute("SELECT created, ended FROM runs").fetchone()
    first = db.execute("SELECT MIN(started) FROM attempts").fetchone()[0]
    db.close()
    return ScaleRun(n, done.wall, first - created, done.max_rss, n / (ended - created), directory, config)


def timed_cli(args: list[str], repeat: int) -> tuple[float, int]:
    """Best wall time of `repeat` runs with stdout to /dev/null, and the largest max RSS."""
    best, rss = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.Popen([*LABRUN, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        best = min(best, time.perf_counter() - start)
        rss = max(rss, usage.ru_maxrss * 1024)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"labrun {' '.join(args)} failed")
    return best, rss


def idle_cpu(workdir: str, seconds: float) -> float:
    """Fraction of one core the runner uses while two `sleep` tasks run (psutil, runner only)."""
    import psutil

    directory = tempfile.mkdtemp(prefix="idle-", dir=workdir)
    config = two_cpu_lab(directory)
    job = os.path.join(directory, "job.toml")
    with open(job, "w") as handle:
        handle.write(job_text("idle", 2, f'["sleep", "{seconds:g}"]'))
    proc = psutil.Popen([*LABRUN, "run", job, "--config", config, "--quiet"], stdout=subprocess.DEVNULL)
    try:
        # wait until both sleeps run, so start-up (imports, enqueue) is not counted
        deadline = time.monotonic() + 30
        while len(proc.children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        before, t0 = proc.cpu_times(), time.monotonic()
        time.sleep(max(0.5, seconds - 2.0))
        after, t1 = proc.cpu_times(), time.monotonic()
    finally:
        proc.wait()
    used = (after.user + after.system) - (before.user + before.system)
    return used / (t1 - t0)


def big_log_rss(workdir: str, megabytes: int) -> tuple[int, int]:
    """Runner max RSS for one task printing `megabytes` MB, and for one printing nothing."""
    results = []
    for size in (megabytes, 0):
        directory = tempfile.mkdtemp(prefix="biglog-", dir=workdir)
        config = two_cpu_lab(directory)
        job = os.path.join(directory, "job.toml")
        command = f'["head", "-c", "{size * 1_000_000}", "/dev/zero"]'
        with open(job, "w") as handle:
            handle.write(job_text("biglog", 1, command))
        done = run_cli(["run", job, "--config", config, "--quiet"])
        if done.rc != 0:
            raise RuntimeError(f"the big-log run failed: {done.output[-300:]}")
        results.append(done.max_rss)
    return results[0], results[1]


def self_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
