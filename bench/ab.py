"""Throughput of two checkouts of labrun, interleaved in one invocation (best of R).

    python bench/ab.py OLD_CHECKOUT [--tasks 2000] [--repeat 3]

Runs N `true` tasks through the real CLI of OLD_CHECKOUT and of this checkout (each on
this virtual environment, by PYTHONPATH), alternating with `xargs -P2`, so a change's
cost per task is measured against the version before it under the same load. Also
prints the runner's own CPU per task (getrusage of the runner process at its exit,
startup included; median of R), steadier than the rates: the runner is CPU-bound.
Delete nothing large in the minutes before: on an ext4 without a journal, inode
allocation slows for minutes after mass deletions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import scale

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The runner run in a Python that prints its own CPU seconds as it exits.
_MEASURED = """import atexit, resource, sys
def _said():
    used = resource.getrusage(resource.RUSAGE_SELF)
    print("runner-cpu", used.ru_utime + used.ru_stime, file=sys.stderr)
atexit.register(_said)
sys.argv = ["labrun", *sys.argv[1:]]
from labrun.cli import main
main()
"""


def rate(
    n: int, command: list[str] | str, env: dict[str, str] | None = None, cwd: str | None = None
) -> tuple[float, float | None]:
    """Tasks per second, and the runner's CPU seconds per task when it says them."""
    began = time.perf_counter()
    done = subprocess.run(
        command, env=env, cwd=cwd, check=True, capture_output=True, text=True, shell=isinstance(command, str)
    )
    seconds = time.perf_counter() - began
    said = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("runner-cpu ")]
    return n / seconds, float(said[-1]) / n if said else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("old", help="a checkout of the version to compare with")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="ab-")
    config = scale.two_cpu_lab(workdir)
    job = os.path.join(workdir, "job.toml")
    with open(job, "w") as handle:
        handle.write(scale.job_text("ab", args.tasks, '["true"]'))
    trees = {"old": os.path.abspath(args.old), "new": HERE}
    for tree in trees.values():
        # Both trees with their bytecode written: where it is not (PYTHONDONTWRITEBYTECODE,
        # a fresh worktree), every run compiles labrun first, 0.2 ms a task on 2,000 tasks,
        # and the comparison measures the compiler. `make bench` does the same.
        subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(tree, "labrun")], check=True)
    best = {"old": 0.0, "new": 0.0, "xargs": 0.0}
    cpu: dict[str, list[float]] = {"old": [], "new": []}
    for rep in range(args.repeat):
        for name, tree in trees.items():
            state = os.path.join(workdir, f"{name}{rep}")
            env = {**os.environ, "PYTHONPATH": tree, "LABRUN_STATE_DIR": state}
            argv = [sys.executable, "-c", _MEASURED, "run", job, "--config", config, "--quiet"]
            got, per_task = rate(args.tasks, argv, env, workdir)
            best[name] = max(best[name], got)
            cpu[name] += [per_task] if per_task is not None else []
        got, _ = rate(args.tasks, f"seq {args.tasks} | xargs -P2 -n1 true")
        best["xargs"] = max(best["xargs"], got)
    print(" ".join(f"{name} {value:.0f} tasks/s" for name, value in best.items()))
    print(
        f"old/xargs {best['old'] / best['xargs']:.2f}  new/xargs {best['new'] / best['xargs']:.2f}  "
        f"new/old {best['new'] / best['old']:.2f}"
    )
    if cpu["old"] and cpu["new"]:
        old, new = statistics.median(cpu["old"]), statistics.median(cpu["new"])
        ms = f"old {old * 1e3:.3f} ms  new {new * 1e3:.3f} ms"
        print(f"runner CPU a task, median: {ms}  new/old {new / old:.2f}")


if __name__ == "__main__":
    main()
