"""labrun's overhead, measured: one table, every ratio taken in the same run.

Rows:
  throughput  N trivial tasks (`true`) through the real `labrun run` CLI, 2 at a time
              (a 2-cpu local node, cpus = 1 per task), against `xargs -P2`,
              GNU `parallel -j2` and a bare Python subprocess loop; each way is run
              `--repeat` times interleaved and its best rate kept (the machine is shared)
  cgroup      the same through `runtime = "cgroup"`, or a line saying why it is skipped
  scale       full runs of 1k, 10k and 100k `true` tasks: enqueue time (run created ->
              first attempt started, read from the run's rows: inserting every task and the
              first tick), the runner's peak RSS (wait4 ru_maxrss) and the run's rate
  status      `labrun status`, `status --json`, `status --all` and `logs` on the largest run
  idle        the runner's CPU (psutil, the runner alone) while two `sleep` tasks run
  big log     the runner's peak RSS while a task writes 200 MB to stdout, against 0 bytes

Usage: python bench/throughput.py [--quick] [--tasks N] [--repeat R]
  --quick: a smoke run (200 tasks, scale 200/1k/2k, short sleeps): checks the bench works.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scale


def xargs_p2(n: int) -> None:
    feed = "".join(f"{i}\n" for i in range(n)).encode()
    subprocess.run(["xargs", "-P2", "-n1", "true"], input=feed, check=True, stdout=subprocess.DEVNULL)


def parallel_j2(n: int) -> None:
    feed = "".join(f"{i}\n" for i in range(n)).encode()
    subprocess.run(["parallel", "-j2", "true"], input=feed, check=True, stdout=subprocess.DEVNULL)


def python_loop(n: int) -> None:
    """Two at a time, each started as soon as one ends: the least any runner can do."""
    running: list[subprocess.Popen[bytes]] = []
    for _ in range(n):
        if len(running) == 2:
            os.wait()  # reap one; poll() then finds which
            running = [p for p in running if p.poll() is None]
        running.append(subprocess.Popen(["true"]))
    for proc in running:
        proc.wait()


def labrun_way(n: int, workdir: str, runtime: str) -> Callable[[int], None]:
    directory = tempfile.mkdtemp(prefix=f"tp-{runtime}-", dir=workdir)
    config = scale.two_cpu_lab(directory)
    job = os.path.join(directory, "job.toml")
    text = scale.job_text("tp", n, '["true"]').replace("[defaults]\n", f'[defaults]\nruntime = "{runtime}"\n')
    with open(job, "w") as handle:
        handle.write(text)

    def go(_: int) -> None:
        done = scale.run_cli(["run", job, "--config", config, "--quiet"])
        if done.rc != 0:
            lines = done.output.strip().splitlines() or [f"exit {done.rc}"]
            raise RuntimeError(lines[-1].split(": ", 2)[-1][:100])  # without "labrun: FILE:L:C"

    return go


def best_rates(ways: dict[str, Callable[[int], None]], n: int, repeat: int) -> dict[str, float | str]:
    """tasks/s per way (best of `repeat`, interleaved), or why the way could not run."""
    rates: dict[str, float | str] = {}
    for _ in range(repeat):
        for name, way in ways.items():
            if isinstance(rates.get(name), str):
                continue
            start = time.perf_counter()
            try:
                way(n)
            except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                rates[name] = f"skipped: {exc}"
                continue
            rate = n / (time.perf_counter() - start)
            old = rates.get(name)
            rates[name] = max(rate, old) if isinstance(old, float) else rate
    return rates


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, what: str, measured: str, target: str = "", verdict: str = "") -> None:
        self.rows.append((what, measured, target, verdict))
        print(f"  ... {what}: {measured}", file=sys.stderr, flush=True)

    def check(self, what: str, measured: str, ok: bool, target: str) -> None:
        self.add(what, measured, target, "ok" if ok else "MISSED")

    def print(self) -> None:
        widths = [max(len(r[i]) for r in [*self.rows, ("measure", "result", "target", "")]) for i in range(4)]
        line = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
        print(line.format("measure", "result", "target", ""))
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for row in self.rows:
            print(line.format(*row))


def throughput_rows(table: Table, n: int, repeat: int, workdir: str) -> None:
    ways: dict[str, Callable[[int], None]] = {
        "labrun (process)": labrun_way(n, workdir, "process"),
        "labrun (cgroup)": labrun_way(n, workdir, "cgroup"),
        "xargs -P2": xargs_p2,
        "python loop": python_loop,
    }
    if shutil.which("parallel"):
        ways["parallel -j2"] = parallel_j2
    rates = best_rates(ways, n, repeat)
    if "parallel -j2" not in rates:
        rates["parallel -j2"] = "skipped: GNU parallel is not installed (apt-get install parallel)"
    for name in ("xargs -P2", "parallel -j2", "python loop"):
        rate = rates[name]
        table.add(f"{name}, {n} x true", f"{rate:.0f} tasks/s" if isinstance(rate, float) else rate)
    for runtime in ("process", "cgroup"):
        rate = rates[f"labrun ({runtime})"]
        if not isinstance(rate, float):
            table.add(f"labrun {runtime}, {n} x true", rate)
            continue
        table.add(f"labrun {runtime}, {n} x true", f"{rate:.0f} tasks/s")
        targets = {"xargs -P2": 0.5, "parallel -j2": 2.0, "python loop": 0.0}
        for other, target in targets.items():
            base = rates[other]
            if not isinstance(base, float):
                continue
            ratio = rate / base
            name = f"  labrun {runtime} / {other}"
            if target:
                table.check(name, f"{ratio:.2f}x", ratio >= target, f">= {target:g}x")
            else:
                table.add(name, f"{ratio:.2f}x")


def scale_rows(table: Table, sizes: list[int], workdir: str, repeat: int) -> None:
    runs = []
    for n in sizes:
        run = scale.scale_run(n, workdir)
        runs.append(run)
        mb = run.max_rss / 2**20
        table.add(f"{n} tasks: enqueue (created -> first start)", f"{run.enqueue:.2f} s")
        table.add(f"{n} tasks: runner peak RSS, whole run", f"{mb:.0f} MB ({run.rate:.0f} tasks/s)")
    big, small = runs[-1], runs[0]
    table.check(f"{big.tasks} tasks enqueued", f"{big.enqueue:.2f} s", big.enqueue < 5, "< 5 s")
    mb = big.max_rss / 2**20
    table.check(f"{big.tasks} tasks peak RSS", f"{mb:.0f} MB", mb < 150, "< 150 MB")
    growth = (big.max_rss - small.max_rss) / max(1, big.tasks - small.tasks)
    table.add("  RSS growth per extra task", f"{growth:.0f} bytes ({small.tasks} -> {big.tasks})")
    args = ["--config", big.config]
    status, _ = scale.timed_cli(["status", "last", *args], repeat)
    table.check(f"status on {big.tasks} tasks", f"{status:.2f} s", status < 0.5, "< 0.5 s")
    as_json, json_rss = scale.timed_cli(["status", "last", "--json", *args], 1)
    table.add(f"status --json on {big.tasks} tasks", f"{as_json:.2f} s, peak RSS {json_rss / 2**20:.0f} MB")
    every, _ = scale.timed_cli(["status", "last", "--all", *args], 1)
    table.add(f"status --all on {big.tasks} tasks", f"{every:.2f} s")
    logs, _ = scale.timed_cli(["logs", "last", f"t[{big.tasks - 1}]", *args], repeat)
    table.add(f"logs of the last task of {big.tasks}", f"{logs:.2f} s")


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes")
    parser.add_argument("--tasks", type=int, default=None, help="tasks in the throughput rows")
    parser.add_argument("--repeat", type=int, default=None, help="runs per way (best kept)")
    args = parser.parse_args()
    n = args.tasks or (200 if args.quick else 2000)
    repeat = args.repeat or (1 if args.quick else 3)
    sizes = [200, 1000, 2000] if args.quick else [1000, 10_000, 100_000]
    workdir = tempfile.mkdtemp(prefix="labrun-bench-")
    table = Table()
    try:
        help_time, _ = scale.timed_cli(["--help"], 5)
        table.check("labrun --help", f"{help_time:.2f} s", help_time < 0.3, "< 0.3 s")
        throughput_rows(table, n, repeat, workdir)
        scale_rows(table, sizes, workdir, repeat)
        seconds = 4.0 if args.quick else 10.0
        cpu = scale.idle_cpu(workdir, seconds)
        what = f"runner CPU, two `sleep {seconds:g}` running"
        table.check(what, f"{cpu:.2%} of a core", cpu < 0.01, "< 1%")
        megabytes = 20 if args.quick else 200
        big, small = scale.big_log_rss(workdir, megabytes)
        grew = (big - small) / 2**20
        table.check(
            f"runner peak RSS, task writes {megabytes} MB",
            f"{big / 2**20:.0f} MB (+{grew:.1f} MB vs 0 bytes)",
            grew < 10,
            "< +10 MB",
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    with open("/proc/cpuinfo") as handle:
        models = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
    cpu_model = models[0] if models else platform.processor()
    print(f"\nmachine: {os.cpu_count()} cpus ({cpu_model}), Python {platform.python_version()}")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"command: python bench/throughput.py{' --quick' if args.quick else ''}\n")
    if args.quick:
        print("--quick: 200 tasks are too few to amortise labrun's start-up; its ratios mean nothing\n")
    table.print()


if __name__ == "__main__":
    main()
