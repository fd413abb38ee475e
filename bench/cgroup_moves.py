"""What moving the runner into an attempt's cgroup and back costs, by the file written.

cgroup.procs moves the whole process; on v1, `tasks` moves the calling thread only
(which is what `entered` does there). Interleaved rounds, median per in-and-out move
across the hierarchies a `memory` + `cpus` attempt needs. Needs root and cgroup v1.

    python bench/cgroup_moves.py [--rounds 10] [-n 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

from labrun.cgroup import Limits, create, detect
from labrun.cgroup.common import move_self


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("-n", type=int, default=200, help="moves in and out per round")
    args = parser.parse_args()
    support = detect()
    if support.mechanism != "cgroup-v1":
        raise SystemExit(f"needs cgroup v1 as root; here: {support.mechanism} {support.reason}")
    cg = create(support, "bench-moves", Limits(memory=256 * 1024**2, cpus=0.25))
    try:
        procs = (*cg.procs_files, *cg.home_procs_files())
        files = {"cgroup.procs": procs, "tasks": tuple(p.replace("cgroup.procs", "tasks") for p in procs)}
        took: dict[str, list[float]] = {name: [] for name in files}
        for _ in range(args.rounds):
            for name, paths in files.items():
                begun = time.perf_counter()
                for _ in range(args.n):
                    move_self(paths)  # in, then home: the last half of paths
                took[name].append((time.perf_counter() - begun) / args.n * 1000)
        print(f"{len(cg.procs_files)} hierarchies, in and out, median of {args.rounds} rounds:")
        for name, times in took.items():
            print(f"  {name:<13} {statistics.median(times):.3f} ms  (min {min(times):.3f})")
    finally:
        cg.remove()


if __name__ == "__main__":
    main()
