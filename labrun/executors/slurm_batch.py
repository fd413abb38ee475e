"""The batch script of a Slurm attempt: runs the task and leaves its exit record.

Standard library only, Python >= 3.8: its source becomes the body of the script `sbatch`
submits (`batch_script`), with the attempt's parameters (no secrets) in SPEC. It runs on
a compute node, where labrun is not installed. It

- reads the attempt's environment from its 0600 file (secrets included, so they never
  reach sbatch's command line or Slurm's job record), removes the file, takes the withheld
  names out of the environment Slurm gave it, and starts the command in a process group
  of its own (stdout and stderr are the job's --output and --error: the attempt's logs);
- forwards the signals labrun sends it (`scancel --batch --signal=...`) to that group;
- when the command ends, writes the exit record beside the logs (exit code or signal, end
  time, the largest resident size a descendant reached) with one rename, touches the
  marker that wakes the runner early, and exits the way the command did (by the same
  signal), so Slurm's own exit code agrees with the record.

A command that cannot start (not found, not executable) is exit 127 or 126 with the
reason on the attempt's stderr, as a shell would say it.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from typing import Any

SPEC: dict[str, Any] = {}  # replaced by the attempt's parameters in the submitted script
FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGCONT")


def environment(spec: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    try:
        with open(spec["env_file"], encoding="utf-8") as handle:
            wanted: dict[str, Any] = json.load(handle)
        os.unlink(spec["env_file"])
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"labrun: cannot read the attempt's environment file: {exc}\n")
        sys.exit(70)
    for name in wanted.get("withheld", ()):
        env.pop(name, None)
    env.update(wanted.get("env", {}))
    return env


def start(spec: dict[str, Any], env: dict[str, str]) -> subprocess.Popen[bytes] | int:
    try:
        return subprocess.Popen(spec["argv"], env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    except FileNotFoundError:
        sys.stderr.write("labrun: {}: command not found\n".format(spec["argv"][0]))
        return 127
    except (PermissionError, OSError) as exc:
        sys.stderr.write("labrun: {}: cannot execute: {}\n".format(spec["argv"][0], exc))
        return 126


def forward(child: subprocess.Popen[bytes]) -> None:
    def handler(signum: int, frame: Any) -> None:
        try:
            os.killpg(child.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    for name in FORWARDED:
        signal.signal(getattr(signal, name), handler)


def memory_counters() -> tuple[int | None, int | None]:
    """(OOM kills, peak bytes) of the memory cgroups Slurm put this job in: the task's, the
    step's and the job's (the kernel counts a kill where the victim was, the limit may sit
    higher up). None where no memory cgroup could be read: Slurm's state must then say."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None, None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return _counters(
                "/sys/fs/cgroup/memory" + path, "memory.oom_control", "memory.max_usage_in_bytes"
            )
    for line in lines:
        if line.startswith("0::"):
            return _counters("/sys/fs/cgroup" + line[3:], "memory.events", "memory.peak")
    return None, None


def _counters(directory: str, events: str, peak_file: str) -> tuple[int | None, int | None]:
    kills: list[int] = []
    peaks: list[int] = []
    for _ in range(3):  # task_0, step_batch, job_N
        try:
            with open(os.path.join(directory, events), encoding="ascii") as handle:
                kills += [int(line.split()[1]) for line in handle if line.startswith("oom_kill ")]
            with open(os.path.join(directory, peak_file), encoding="ascii") as handle:
                peaks.append(int(handle.read().strip()))
        except (OSError, ValueError, IndexError):
            pass
        directory = os.path.dirname(directory)
    return (max(kills) if kills else None), (max(peaks) if peaks else None)


def write_record(spec: dict[str, Any], exit_code: int | None, signum: int | None) -> None:
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    oom_kills, peak = memory_counters()
    record = {
        "exit": exit_code,
        "signal": signum,
        "ended": time.time(),
        "max_rss": peak_kib * 1024 if peak_kib else None,
        "cgroup_peak": peak,
        "oom_kills": oom_kills,
        "cpu": usage.ru_utime + usage.ru_stime,
        "job": os.environ.get("SLURM_JOB_ID"),
        "host": os.uname()[1],
    }
    temp = spec["record"] + ".tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, spec["record"])
    try:
        os.close(os.open(spec["marker"], os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError:
        pass  # the runner still learns of the end from Slurm


def main() -> None:
    spec = SPEC
    env = environment(spec)
    child = start(spec, env)
    if isinstance(child, int):
        write_record(spec, child, None)
        sys.exit(child)
    forward(child)
    status = child.wait()
    exit_code, signum = (None, -status) if status < 0 else (status, None)
    write_record(spec, exit_code, signum)
    sys.stdout.flush()
    if signum is not None:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
