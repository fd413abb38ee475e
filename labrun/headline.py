"""The one-line headline of a failed attempt, as `labrun why` would give it, for the line
a run prints when the attempt ends (cron mail shows the error, not only "exited 1").

Read only for attempts whose failure counts: a success costs nothing here, not even the
import of `diagnose` and its patterns (13 ms of every run's start).
"""

from __future__ import annotations

from labrun.masking import Masker, shown_tail
from labrun.model import Facts, Launch, Runtime
from labrun.states import Outcome


def failure_headline(
    launch: Launch,
    runtime: Runtime,
    outcome: Outcome,
    detail: str,
    facts: Facts,
    timeout: float | None,
    mask: Masker,
) -> str:
    """`mask`: the job's secret values; the line never shows one (labrun/masking.py)."""
    from labrun.diagnose import AttemptRecord, diagnose

    record = AttemptRecord(
        task=launch.task_name,
        state="failed",
        reason=detail,
        attempt=launch.attempt,
        outcome=outcome.value,
        exit_code=facts.exit_code,
        signal=facts.signal,
        oom_kills=facts.oom_kills if runtime is Runtime.CGROUP else None,
        container_oom_killed=facts.oom_killed if runtime is Runtime.DOCKER else None,
        peak_memory=facts.peak_memory,
        memory_limit=launch.memory,
        timeout=timeout,
        missing_outputs=facts.missing_outputs,
        stderr_tail=shown_tail(launch.stderr_path, mask),
        run=launch.run_id,
    )
    found = diagnose(record)
    return mask(f"{found.cause.label}: {found.title}")
