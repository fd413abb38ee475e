"""Throughput of trivial tasks through `labrun run`: runtime cgroup against runtime process.

Each round runs the same job twice through the real CLI, once per runtime, alternating
which goes first, so drift on a shared machine hits both alike. The job is N tasks of
`true` (1,000 by default) with small cpus so that several run at once. Prints tasks per
second for each runtime and the ratio cgroup / process (target: >= 0.8).

    python bench/cgroup_throughput.py [-n 1000] [--rounds 3]

Needs a cgroup (root, or cgroup v2 with systemd); see `labrun check`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from labrun.cgroup import detect

JOB = """[job]
name = "bench-{runtime}"

[[tasks]]
name = "t"
runtime = "{runtime}"
cpus = 0.25
memory = "32MiB"
items = {{ range = [0, {n}] }}
command = "true"
"""


def one_run(workdir: str, runtime: str, n: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `labrun run` of n trivial tasks, CLI start to exit.

    The CPU time is the runner's and its tasks' (user + system): on a shared, loaded
    machine it is steadier than the wall time, which other users' work stretches."""
    path = os.path.join(workdir, f"{runtime}.toml")
    with open(path, "w") as handle:
        handle.write(JOB.format(runtime=runtime, n=n))
    env = {**os.environ, "LABRUN_STATE_DIR": os.path.join(workdir, "state")}
    begun = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "labrun", "run", "--quiet", path],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    took = time.perf_counter() - begun
    if proc.returncode != 0:
        raise SystemExit(f"labrun run {runtime} failed ({proc.returncode}): {output.decode()}")
    return took, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="trivial tasks per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per runtime")
    args = parser.parse_args()
    support = detect()
    if not support.ok:
        raise SystemExit(f"no cgroup here: {support.reason}")
    times: dict[str, list[float]] = {"process": [], "cgroup": []}
    cpu: dict[str, list[float]] = {"process": [], "cgroup": []}
    with tempfile.TemporaryDirectory(prefix="labrun-bench-") as workdir:
        for i in range(args.rounds):
            order = ("process", "cgroup") if i % 2 == 0 else ("cgroup", "process")
            for runtime in order:
                wall, used = one_run(workdir, runtime, args.n)
                times[runtime].append(wall)
                cpu[runtime].append(used)
    rate = {rt: args.n / statistics.median(ts) for rt, ts in times.items()}
    per_task = {rt: statistics.median(cs) / args.n * 1000 for rt, cs in cpu.items()}
    print(f"{args.n} trivial tasks per run, {args.rounds} runs per runtime, median; {support.mechanism}")
    for runtime, ts in times.items():
        runs = ", ".join(f"{t:.2f}s" for t in ts)
        print(f"  {runtime:<8} {rate[runtime]:7.1f} tasks/s  {per_task[runtime]:5.2f} ms CPU/task  ({runs})")
    print(f"  ratio cgroup/process: {rate['cgroup'] / rate['process']:.2f}x (target >= 0.8x)")
    print(f"  CPU per task cgroup/process: {per_task['cgroup'] / per_task['process']:.2f}x")


if __name__ == "__main__":
    main()
