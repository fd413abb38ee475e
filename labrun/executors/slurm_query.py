"""Talking to Slurm: its commands, what their output means, and a job's end as facts.

Slurm's commands are found as a user's shell finds them (PATH) and find their cluster as
they always do (SLURM_CONF, else the default configuration). Every call has a time limit
and fails as `SlurmError` with the command and what it said.

`job_facts` is the state mapping (verified on Slurm 22.05), pure:

    COMPLETED, FAILED    the exit record's exit code or signal (else Slurm's ExitCode)
    OUT_OF_MEMORY        oom (its ExitCode 0:125 puts 125 in the signal field), also when
                         only a child was killed and the batch script exited 0
    TIMEOUT              timeout (Slurm's --time ran out before labrun's own limit)
    CANCELLED            by labrun (it signalled the job): what the record says, else the
                         signal labrun sent; by anyone else: lost
    NODE_FAIL, BOOT_FAIL, PREEMPTED, DEADLINE, REVOKED
                         lost (not counted; rerun, that node avoided)
    in neither squeue nor sacct
                         the exit record if the job left one, else lost: never success
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labrun.model import Facts

TIMEOUT_S = 30.0
ACTIVE = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "RESV_DEL_HOLD",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "SPECIAL_EXIT",
    }
)
LOST_STATES = frozenset({"NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "DEADLINE", "REVOKED"})
# sacct's State for a job that Slurm's OOM handling ended
OOM_STATE = "OUT_OF_MEMORY"


class SlurmError(Exception):
    """A Slurm command failed or did not answer; the message names it and what it said."""


def why_pending(reason: str) -> str:
    """Why a queued job waits, in squeue's words (Resources, Priority...); squeue's "None"
    (read as "") means the scheduler's next pass has not looked at it yet."""
    return reason or "not yet looked at by Slurm's scheduler"


@dataclass(frozen=True)
class Job:
    """One job as squeue or sacct reported it."""

    job_id: str
    name: str
    state: str  # the first word: "CANCELLED by 0" -> "CANCELLED"
    reason: str = ""  # squeue's pending reason; sacct's "by UID" for a cancel
    nodes: str = ""
    exit_code: int | None = None  # sacct's ExitCode "code:signal"
    signal: int | None = None
    max_rss: int | None = None  # bytes, the batch step's MaxRSS; None: not measured
    cpu_seconds: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def why_pending(self) -> str:
        return why_pending(self.reason)


def run(argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = TIMEOUT_S) -> str:
    """stdout of a Slurm command; SlurmError when it cannot run, fails or hangs."""
    try:
        done = subprocess.run(
            list(argv),
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise SlurmError(
            f"{argv[0]} is not installed here (Slurm's client commands are needed on the machine "
            "that runs labrun: install slurm-client)"
        ) from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{' '.join(argv[:3])} ...` did not answer within {timeout:g}s") from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip() or "no message").splitlines()[-1]
        raise SlurmError(f"`{' '.join(argv[:3])} ...` exited {done.returncode}: {said}")
    return done.stdout


def user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def squeue(prefix: str) -> dict[str, Job]:
    """This user's jobs whose name starts with `prefix`, by name (finished ones too, while
    slurmctld keeps them: MinJobAge)."""
    out = run(["squeue", "-h", "-t", "all", "-u", user(), "-o", "%i|%j|%T|%r|%N"])
    jobs: dict[str, Job] = {}
    for line in out.splitlines():
        fields = line.split("|")
        if len(fields) == 5 and fields[1].startswith(prefix):
            job_id, name, state, reason, nodes = fields
            jobs[name] = Job(job_id, name, state.split()[0], "" if reason == "None" else reason, nodes)
    return jobs


def sacct(since: float, job_ids: Iterable[str] = (), prefix: str = "") -> dict[str, Job]:
    """Accounting of the given jobs (or of this user's jobs named with `prefix`) that started
    after `since` (an explicit start: without one sacct looks back only to midnight), by name."""
    import time

    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 60))
    argv = [
        "sacct",
        "-n",
        "-P",
        "-S",
        start,
        "-o",
        "JobIDRaw,JobName,State,ExitCode,MaxRSS,TotalCPU,NodeList",
    ]
    ids = list(job_ids)
    argv += ["-j", ",".join(ids)] if ids else ["-u", user()]
    jobs: dict[str, dict[str, Any]] = {}
    for line in run(argv).splitlines():
        fields = line.split("|")
        if len(fields) != 7:
            continue
        raw, name, state, exit_text, rss, cpu, nodes = fields
        job_id, _, step = raw.partition(".")
        entry = jobs.setdefault(job_id, {})
        if not step:
            code, sig = parse_exit(exit_text)
            entry.update(name=name, state=state, code=code, sig=sig, nodes=nodes, cpu=parse_cpu(cpu))
        elif step == "batch":
            entry.update(rss=parse_size_k(rss))
    found = {}
    for job_id, entry in jobs.items():
        name = entry.get("name", "")
        if "state" not in entry or not name.startswith(prefix):
            continue
        word, _, by = entry["state"].partition(" ")
        found[name] = Job(
            job_id,
            name,
            word,
            by,
            entry["nodes"],
            entry["code"],
            entry["sig"],
            entry.get("rss"),
            entry["cpu"],
        )
    return found


def parse_exit(text: str) -> tuple[int | None, int | None]:
    """sacct's ExitCode "code:signal" -> (exit code, signal): one of them None."""
    code, _, sig = text.partition(":")
    if not code.isdigit() or not sig.isdigit():
        return None, None
    return (None, int(sig)) if int(sig) else (int(code), None)


_SIZE = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size_k(text: str) -> int | None:
    """sacct's MaxRSS ("328K", "1.50G") in bytes; None where not measured (0 or empty)."""
    match = re.fullmatch(r"([0-9.]+)([KMGT]?)", text.strip())
    if not match:
        return None
    value = int(float(match.group(1)) * _SIZE[match.group(2)])
    return value or None


def parse_cpu(text: str) -> float | None:
    """sacct's TotalCPU ("00:00.052", "01:02:03", "1-02:03:04") in seconds."""
    days, _, rest = text.strip().rpartition("-")
    parts = rest.split(":")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        return None
    seconds = 0.0
    for number in numbers:
        seconds = seconds * 60 + number
    return seconds + (int(days) * 86400 if days.isdigit() else 0)


# -- the state mapping ------------------------------------------------------------------


def job_facts(
    job: Job | None, record: Mapping[str, Any] | None, sent: Sequence[int], now: float, where: str
) -> Facts:
    """The facts of an ended job (`job` None: in neither squeue nor sacct). `sent`: the
    signals labrun sent it; `where` names the node for messages."""
    ended = float(record["ended"]) if record and record.get("ended") else now
    peak = _peak(job, record)
    cpu = job.cpu_seconds if job is not None and job.cpu_seconds else (record or {}).get("cpu")
    if job is None:
        if record is None:
            why = f"{where}: the job is in neither squeue nor sacct and left no exit record"
            return Facts(None, None, now, lost=True, detail=why)
        note = f"{where}: Slurm has no record of the job any more; its exit record is used"
        return _from_record(record, ended, peak, cpu, note)
    state, label = job.state, f"{where}: Slurm job {job.job_id} ended {job.state}"
    if state in LOST_STATES or (state == "CANCELLED" and not sent):
        who = f" {job.reason}" if job.reason else ""
        return Facts(None, None, now, lost=True, detail=f"{label}{who} on {job.nodes or 'no node'}")
    if state == "TIMEOUT":
        detail = f"{label}: it ran past its Slurm time limit (--time)"
        return Facts(
            None, signal.SIGTERM, ended, timed_out=True, peak_memory=peak, cpu_seconds=cpu, detail=detail
        )
    oom = 1 if state == OOM_STATE else int((record or {}).get("oom_kills") or 0)
    if record is not None:
        facts = _from_record(record, ended, peak, cpu, label if oom else "")
        return dataclasses.replace(facts, oom_kills=oom)
    if state == "CANCELLED":  # by labrun, before the job started or with no record left
        return Facts(None, sent[-1], ended, peak_memory=peak, cpu_seconds=cpu, detail=f"{label} (scancel)")
    code, sig = job.exit_code, job.signal
    if oom and sig == 125:  # Slurm's OOM marker in the signal field, not a signal
        code, sig = None, signal.SIGKILL
    if code is None and sig is None:
        code = 0 if state == "COMPLETED" else 1
    note = f"{label}; the job left no exit record"
    return Facts(code, sig, ended, oom_kills=oom, peak_memory=peak, cpu_seconds=cpu, detail=note)


def _peak(job: Job | None, record: Mapping[str, Any] | None) -> int | None:
    """The job's memory cgroup's own peak where the batch script could read it; else sacct's
    MaxRSS (sampled each JobAcctGatherFrequency: 0 for short jobs) or the largest
    descendant's resident size, whichever is larger; None when nothing was measured."""
    record = record or {}
    if record.get("cgroup_peak"):
        return int(record["cgroup_peak"])
    found = [v for v in (job.max_rss if job else None, record.get("max_rss")) if v]
    return max(int(v) for v in found) if found else None


def final_record(record: Mapping[str, Any] | None, sent: Sequence[int]) -> bool:
    """Whether the exit record alone says how the attempt ended, without asking Slurm: the
    command exited (or died of a signal labrun sent, or of the OOM killer) and the OOM
    counter was read. Another signal may be Slurm's (its time limit, an admin's scancel):
    then Slurm must say."""
    if record is None or record.get("oom_kills") is None:
        return False
    sig, kills = record.get("signal"), int(record["oom_kills"])
    return record.get("exit") is not None or (sig is not None and (int(sig) in sent or kills > 0))


def record_facts(record: Mapping[str, Any], outputs_missing: tuple[str, ...] = ()) -> Facts:
    """The facts of a final record (`final_record`)."""
    facts = _from_record(record, float(record["ended"]), _peak(None, record), record.get("cpu"), "")
    return dataclasses.replace(facts, oom_kills=int(record["oom_kills"]), missing_outputs=outputs_missing)


def _from_record(
    record: Mapping[str, Any], ended: float, peak: int | None, cpu: float | None, detail: str
) -> Facts:
    code, sig = record.get("exit"), record.get("signal")
    return Facts(
        int(code) if code is not None else None,
        int(sig) if sig is not None else None,
        ended,
        peak_memory=peak,
        cpu_seconds=cpu,
        detail=detail,
    )
