"""labrun on Slurm, measured against the test cluster (tests/slurm.py starts it, as root).

Rows:
  queries     a run of `--tasks` tasks (`sleep --sleep`) on one Slurm node with
              `max_jobs = --jobs` and `poll = --poll`: every Slurm command labrun ran,
              counted through logging shims on PATH; squeue and sacct calls per minute
              over the run's middle (its first and last `--poll` left out), and sbatch
              calls per attempt
  per task    `--trivial` trivial tasks (`true`) through `labrun run` against a bare
              `sbatch --wait` loop on the same cluster: seconds per task each way

Usage: python bench/slurm.py [--tasks N] [--sleep S] [--jobs J] [--poll P] [--trivial T]
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import slurm as test_cluster  # noqa: E402 - the tests' fixture module, used as a library

COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "scontrol")


def shims(directory: str, log: str) -> None:
    """One script per Slurm command that logs `<time> <command>` and runs the real one."""
    for name in COMMANDS:
        real = subprocess.run(["which", name], capture_output=True, text=True, check=True).stdout.strip()
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f'#!/bin/sh\necho "$(date +%s.%N) {name}" >> {log}\nexec {real} "$@"\n')
        os.chmod(path, 0o755)


def labrun_run(work: str, env: dict[str, str], body: str) -> float:
    with open(os.path.join(work, "job.toml"), "w", encoding="utf-8") as handle:
        handle.write(body)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "labrun", "run", "job.toml"], cwd=work, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"labrun run exited {done.returncode}: {done.stdout}{done.stderr}")
    return time.monotonic() - started


def lab(work: str, cluster: test_cluster.Cluster, jobs: int, poll: str) -> dict[str, str]:
    with open(os.path.join(work, "labrun.toml"), "w", encoding="utf-8") as handle:
        handle.write(f'[nodes.hpc]\nslurm = {{ partition = "{cluster.partition}" }}\nmax_jobs = {jobs}\n')
        handle.write(f'poll = "{poll}"\n')
    env = {**os.environ, **cluster.env, "LABRUN_STATE_DIR": os.path.join(work, "state")}
    env.pop("LABRUN_CONFIG", None)
    return env


def queries(cluster: test_cluster.Cluster, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="labrun-bench-slurm-") as work:
        log = os.path.join(work, "calls.log")
        os.makedirs(os.path.join(work, "bin"))
        shims(os.path.join(work, "bin"), log)
        env = lab(work, cluster, args.jobs, f"{args.poll}s")
        env["PATH"] = os.path.join(work, "bin") + os.pathsep + env["PATH"]
        body = (
            '[job]\nname = "bench"\n[[tasks]]\nname = "t"\nnodes = ["hpc"]\nmemory = "32MiB"\n'
            f'items = {list(range(args.tasks))}\ncommand = "sleep {args.sleep}"\n'
        )
        seconds = labrun_run(work, env, body)
        with open(log, encoding="utf-8") as handle:
            calls = [(float(t), name) for t, name in (line.split() for line in handle)]
    first, last = calls[0][0], calls[-1][0]
    middle = [(t, n) for t, n in calls if first + args.poll <= t <= last - args.poll]
    minutes = max((last - first - 2 * args.poll) / 60, 1e-9)
    per_minute = {n: sum(1 for _, m in middle if m == n) / minutes for n in ("squeue", "sacct")}
    sbatch = sum(1 for _, n in calls if n == "sbatch")
    polls = [t for t, n in calls if n == "squeue"]
    gaps = sorted(b - a for a, b in itertools.pairwise(polls))
    median_gap = gaps[len(gaps) // 2] if gaps else float("nan")
    print(
        f"queries   {args.tasks} x sleep {args.sleep}s, max_jobs {args.jobs}, poll {args.poll}s: "
        f"run {seconds:.0f}s; squeue {per_minute['squeue']:.1f}/min, sacct {per_minute['sacct']:.1f}/min "
        f"in its middle (median gap between squeues {median_gap:.0f}s, {len(polls)} in all); "
        f"sbatch {sbatch / args.tasks:.2f} per attempt"
    )


def per_task(cluster: test_cluster.Cluster, args: argparse.Namespace) -> None:
    n = args.trivial
    with tempfile.TemporaryDirectory(prefix="labrun-bench-slurm-") as work:
        env = lab(work, cluster, 100, "30s")
        body = (
            '[job]\nname = "trivial"\n[[tasks]]\nname = "t"\nnodes = ["hpc"]\nmemory = "32MiB"\n'
            f'items = {list(range(n))}\ncommand = "true"\n'
        )
        ours = labrun_run(work, env, body)
        started = time.monotonic()
        for _ in range(n):
            subprocess.run(
                ["sbatch", "--wait", "--parsable", "--mem=32M", "-o", "/dev/null", "--wrap", "true"],
                env=env,
                check=True,
                capture_output=True,
            )
        bare = time.monotonic() - started
    print(
        f"per task  {n} x true: labrun {ours / n:.2f}s/task ({ours:.1f}s), bare sbatch --wait loop "
        f"{bare / n:.2f}s/task ({bare:.1f}s): labrun/bare {ours / bare:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # the test cluster runs 8 jobs at once: 96 x 10 s is about two minutes of steady state
    parser.add_argument("--tasks", type=int, default=96)
    parser.add_argument("--sleep", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--poll", type=float, default=30.0)
    parser.add_argument("--trivial", type=int, default=20)
    args = parser.parse_args()
    try:
        cluster = test_cluster.find_or_start()
    except (test_cluster.Unavailable, test_cluster.StartFailed) as exc:
        print(f"slurm     skipped: {exc}")
        return
    queries(cluster, args)
    per_task(cluster, args)


if __name__ == "__main__":
    main()
