"""`labrun why`: gather what is known about a task into a `diagnose.AttemptRecord`.

The classification itself is `labrun.diagnose`'s (pure); this module takes the task's
view (read from one snapshot of the store), the job's timeout as it was when the run
started, and the tail of the attempt's stderr.
"""

from __future__ import annotations

from labrun.deps import upstream_of
from labrun.diagnose import AttemptRecord
from labrun.errors import UsageError
from labrun.masking import Masker, shown_tail
from labrun.model import Runtime
from labrun.paths import StatePaths
from labrun.rows import RunRow
from labrun.views.model import AttemptView, TaskView


def _choose(task: TaskView, attempt: int | None) -> AttemptView | None:
    if attempt is None:
        return task.last
    found = next((a for a in task.attempts if a.n == attempt), None)
    if found is None:
        have = f"attempts 1 to {task.attempts[-1].n}" if task.attempts else "no attempts"
        raise UsageError(f"task {task.name} has {have}, not attempt {attempt}")
    return found


def record_for(
    paths: StatePaths,
    run: RunRow,
    task: TaskView,
    timeout: float | None,
    attempt: int | None,
    mask: Masker | None = None,
) -> AttemptRecord:
    """Everything `diagnose` needs about `task` and its last attempt (or attempt `attempt`).

    `mask`: the job's secret values this process knows (`masking.masker`); the stderr shown
    is the excerpt the runner kept masked, when there is one."""
    mask = mask or Masker(())
    chosen = _choose(task, attempt)
    upstream = upstream_of(task.reason)
    if chosen is None:
        return AttemptRecord(
            task.name,
            task.state.value,
            task.reason or "",
            upstream_failed=upstream,
            run=run.id,
            job_file=run.job_file,
        )
    last = chosen is task.last
    reason = mask((task.reason if last else chosen.detail) or chosen.detail or "")
    # Only a cgroup keeps the kernel's OOM counter: elsewhere a 0 is "not measured", not "none".
    measured = chosen.runtime is Runtime.CGROUP or bool(chosen.oom_kills)
    container = chosen.runtime is Runtime.DOCKER
    return AttemptRecord(
        task=task.name,
        state=task.state.value,
        reason=reason,
        attempt=chosen.n,
        outcome=chosen.outcome.value if chosen.outcome else None,
        exit_code=chosen.exit_code,
        signal=chosen.signal,
        oom_kills=chosen.oom_kills if measured else None,
        container_oom_killed=bool(chosen.container_oom_killed)
        if container and chosen.ended is not None
        else None,
        note=mask(chosen.note or ""),
        peak_memory=chosen.peak_memory,
        memory_limit=chosen.memory_limit,
        timeout=timeout,
        runtime=chosen.duration,
        missing_outputs=chosen.missing_outputs,
        stderr_tail=shown_tail(paths.log(run.id, task.name, chosen.n, "stderr"), mask),
        upstream_failed=upstream,
        node=chosen.node,
        run=run.id,
        job_file=run.job_file,
        latest=last,
    )
