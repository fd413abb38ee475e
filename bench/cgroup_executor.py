"""The runner's own cost per trivial attempt: CgroupExecutor against ProcessExecutor.

Starts N attempts of `true` one after another through each executor, in interleaved
rounds, and prints the median wall time per attempt and the runner's own CPU time per
attempt (this process only, not the tasks'). The runner is single-threaded, so its CPU
per attempt bounds throughput; unlike `labrun run` timings (bench/cgroup_throughput.py)
it holds steady on a busy machine. Needs root and a cgroup.

    python bench/cgroup_executor.py [-n 200] [--rounds 6]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from labrun.cgroup import detect
from labrun.executors.base import Executor, Waker
from labrun.executors.cgroup import CgroupExecutor
from labrun.executors.process import ProcessExecutor
from labrun.model import Launch


def one(ex: Executor, waker: Waker, attempt_id: int, workdir: str) -> None:
    out = f"{workdir}/out"
    ex.start(Launch(attempt_id, 1, "t", 1, ("true",), {}, workdir, out, out, 0.25, 32 * 1024**2))
    while not ex.finished():
        waker.wait(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="attempts per round")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    support = detect()
    if not support.ok:
        raise SystemExit(f"no cgroup here: {support.reason}")
    waker = Waker()
    executors: dict[str, Executor] = {
        "process": ProcessExecutor(waker),
        "cgroup": CgroupExecutor(waker, support),
    }
    wall: dict[str, list[float]] = {name: [] for name in executors}
    cpu: dict[str, list[float]] = {name: [] for name in executors}
    attempt_id = 0
    with tempfile.TemporaryDirectory(prefix="labrun-bench-") as workdir:
        try:
            for _ in range(args.rounds):
                for name, ex in executors.items():
                    begun, cpu_begun = time.perf_counter(), time.process_time()
                    for _ in range(args.n):
                        attempt_id += 1
                        one(ex, waker, attempt_id, workdir)
                    wall[name].append((time.perf_counter() - begun) / args.n * 1000)
                    cpu[name].append((time.process_time() - cpu_begun) / args.n * 1000)
        finally:
            for ex in executors.values():
                ex.close()
            waker.close()
    print(f"{args.n} x true per round, {args.rounds} rounds, median per attempt; {support.mechanism}")
    for name in executors:
        print(
            f"  {name:<8} wall {statistics.median(wall[name]):.3f} ms  "
            f"runner CPU {statistics.median(cpu[name]):.3f} ms"
        )
    extra = statistics.median(cpu["cgroup"]) - statistics.median(cpu["process"])
    print(f"  cgroup's extra runner CPU per attempt: {extra:.3f} ms")


if __name__ == "__main__":
    main()
