"""Throughput of two checkouts of labrun, interleaved in one invocation (best of R).

    python bench/ab.py OLD_CHECKOUT [--tasks 2000] [--repeat 3]

Runs N `true` tasks through the real CLI of OLD_CHECKOUT and of this checkout (each on
this virtual environment, by PYTHONPATH), alternating with `xargs -P2`, so a change's
cost per task is measured against the version before it under the same load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import scale

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rate(
    n: int, command: list[str] | str, env: dict[str, str] | None = None, cwd: str | None = None
) -> float:
    began = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True, shell=isinstance(command, str))
    return n / (time.perf_counter() - began)


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
    for rep in range(args.repeat):
        for name, tree in trees.items():
            state = os.path.join(workdir, f"{name}{rep}")
            env = {**os.environ, "PYTHONPATH": tree, "LABRUN_STATE_DIR": state}
            argv = [sys.executable, "-m", "labrun", "run", job, "--config", config, "--quiet"]
            best[name] = max(best[name], rate(args.tasks, argv, env, workdir))
        best["xargs"] = max(best["xargs"], rate(args.tasks, f"seq {args.tasks} | xargs -P2 -n1 true"))
    print(" ".join(f"{name} {value:.0f} tasks/s" for name, value in best.items()))
    print(
        f"old/xargs {best['old'] / best['xargs']:.2f}  new/xargs {best['new'] / best['xargs']:.2f}  "
        f"new/old {best['new'] / best['old']:.2f}"
    )


if __name__ == "__main__":
    main()
