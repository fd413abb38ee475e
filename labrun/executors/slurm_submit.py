"""What `sbatch` gets for one attempt: its arguments, its batch script, its environment.

The same `sbatch_args` serves a real submission and `labrun check`'s `sbatch --test-only`,
so the check asks Slurm about exactly what the run will ask for. The environment reaches
the job through a 0600 file next to the attempt's logs that the batch script reads and
removes (never sbatch's command line, never Slurm's job record): sbatch itself runs with
labrun's environment less the job's secrets and less Slurm's own input variables.
"""

from __future__ import annotations

import json
import math
import os
import pkgutil
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from labrun import private
from labrun.model import Launch
from labrun.paths import beside

MiB = 1 << 20
# Slurm checks --time about every 30 s and rounds it up to minutes; labrun stops the
# attempt itself at its timeout, so Slurm's limit only has to come later.
TIME_MARGIN_MIN = 2
RECORD = "slurm-exit.json"  # the exit record the batch script leaves beside the logs
ENV_FILE = "slurm-env.json"
SCRIPT = "slurm-batch.py"
# Options labrun sets itself for every attempt: refused in `options` (labschema).
MANAGED = (
    "--job-name",
    "-J",
    "--mem",
    "--mem-per-cpu",
    "--cpus-per-task",
    "-c",
    "--gpus",
    "-G",
    "--output",
    "-o",
    "--error",
    "-e",
    "--chdir",
    "-D",
    "--time",
    "-t",
    "--requeue",
    "--no-requeue",
    "--export",
    "--partition",
    "-p",
    "--account",
    "-A",
    "--qos",
    "-q",
    "--parsable",
    "--wrap",
)
# sbatch refusals that another try will not change (anything else may be passing: a
# controller restarting, a submit limit reached)
CONFIG_ERRORS = (
    "Invalid partition",
    "invalid partition",
    "Invalid account",
    "Invalid qos",
    "Requested node configuration is not available",
    "Memory required by task is not available",
    "More processors requested than permitted",
    "Invalid generic resource",
    "Invalid feature specification",
    "Requested time limit is invalid",
    "unrecognized option",
    "invalid option",
    "Node count specification invalid",
)


@dataclass(frozen=True)
class SlurmOptions:
    """A Slurm node's `slurm = {...}` table."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    options: tuple[str, ...] = ()  # more sbatch options, as written (e.g. "--constraint=a100")


def managed(option: str) -> bool:
    """Whether an sbatch option is one labrun sets itself ("--mem=4G", "-c4", "-J x")."""
    flag = option.split("=", 1)[0].split()[0] if option.strip() else option
    short = [m for m in MANAGED if not m.startswith("--")]
    return flag in MANAGED or any(flag.startswith(m) for m in short)


def job_name(state: str, run_id: int, attempt_id: int) -> str:
    """The job's name: this state directory's id, the run and the attempt (never another's)."""
    return f"{name_prefix(state)}r{run_id}-a{attempt_id}"


def name_prefix(state: str) -> str:
    return f"labrun-{state}-"


def attempt_of(name: str, state: str) -> tuple[int, int] | None:
    """(run id, attempt id) from one of this state directory's job names; None otherwise."""
    match = re.fullmatch(re.escape(name_prefix(state)) + r"r(\d+)-a(\d+)", name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def time_minutes(limit: float) -> int:
    return math.ceil(limit / 60) + TIME_MARGIN_MIN


def sbatch_args(
    options: SlurmOptions,
    name: str,
    launch: Launch,
    exclude: Sequence[str] = (),
) -> list[str]:
    """sbatch's options for the attempt (the script path follows them)."""
    argv = [f"--job-name={name}", f"--mem={max(1, math.ceil(launch.memory / MiB))}M"]
    argv.append(f"--cpus-per-task={max(1, math.ceil(launch.cpus))}")
    if launch.gpus:
        argv.append(f"--gpus={len(launch.gpus)}")
    for flag, value in (
        ("--partition", options.partition),
        ("--account", options.account),
        ("--qos", options.qos),
    ):
        if value:
            argv.append(f"{flag}={value}")
    if launch.time_limit is not None:
        argv.append(f"--time={time_minutes(launch.time_limit)}")
    if exclude:
        argv.append(f"--exclude={','.join(exclude)}")
    argv += ["--no-requeue", f"--chdir={launch.workdir}"]
    argv += [f"--output={launch.stdout_path}", f"--error={launch.stderr_path}", *options.options]
    return argv


def is_config_error(message: str) -> bool:
    return any(pattern in message for pattern in CONFIG_ERRORS)


def sbatch_env(launch: Launch, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """sbatch's own environment (the job inherits it: --export=ALL): labrun's, less the
    secrets of the job and what the attempt sets (those come from the env file), less
    Slurm's input variables (labrun may itself run inside a job)."""
    source = os.environ if environ is None else environ
    drop = set(launch.withheld) | set(launch.env)
    return {
        k: v
        for k, v in source.items()
        if k not in drop and not k.startswith("SBATCH_") and (k == "SLURM_CONF" or not k.startswith("SLURM_"))
    }


def attempt_file(launch: Launch, name: str) -> str:
    return beside(launch.stdout_path, name)


def write_attempt_files(launch: Launch, marker: str) -> str:
    """The env file (0600) and the batch script of the attempt; returns the script's path."""
    gpu_set = bool(launch.gpus)  # Slurm sets CUDA_VISIBLE_DEVICES for the GPUs it gives
    env = {
        k: v
        for k, v in launch.env.items()
        if not (gpu_set and k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"))
    }
    env_file = attempt_file(launch, ENV_FILE)
    private.write_atomic(env_file, json.dumps({"env": env, "withheld": list(launch.withheld)}).encode())
    spec = {
        "argv": list(launch.argv),
        "env_file": env_file,
        "record": attempt_file(launch, RECORD),
        "marker": marker,
        "attempt_id": launch.attempt_id,
    }
    script = attempt_file(launch, SCRIPT)
    private.write_atomic(script, batch_script(spec).encode("utf-8"))
    return script


def batch_script(spec: Mapping[str, object]) -> str:
    """The wrapper's source (labrun/executors/slurm_batch.py) with the attempt's SPEC in it."""
    source = pkgutil.get_data("labrun.executors", "slurm_batch.py")
    if source is None:  # pragma: no cover - a broken installation
        raise RuntimeError("labrun/executors/slurm_batch.py is missing from this installation")
    text = source.decode("utf-8")
    head = f"#!/usr/bin/env python3\n# labrun: attempt {spec.get('attempt_id')} as a Slurm batch job\n"
    line = "SPEC: dict[str, Any] = {}"
    if line not in text:  # pragma: no cover - the wrapper was edited without this line
        raise RuntimeError("labrun/executors/slurm_batch.py lost its SPEC line")
    return head + text.replace(line, f"SPEC: dict[str, Any] = json.loads({json.dumps(spec)!r})", 1)
