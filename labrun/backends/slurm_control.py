"""A Slurm node's jobs as squeue lists them, found by their names: why this state
directory's jobs wait (`labrun status`, `why`, `nodes`), the orphans a dead runner left
(cancelled at the next run's start), and a run's jobs without their runner (`labrun
cancel`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from labrun.backends.base import NodeControl
from labrun.executors.slurm_query import Job, SlurmError, run, squeue
from labrun.executors.slurm_submit import attempt_of, job_name, name_prefix
from labrun.rows import AttemptRow


def _listed(state: str, attempts: Sequence[AttemptRow]) -> dict[int, Job]:
    """The attempts' jobs that squeue still lists, by attempt id."""
    if not state or not attempts:
        return {}
    listing = squeue(name_prefix(state))
    found = {}
    for attempt in attempts:
        job = listing.get(job_name(state, attempt.run_id, attempt.id))
        if job is not None:
            found[attempt.id] = job
    return found


def pending(state: str, attempts: Sequence[AttemptRow]) -> dict[int, Job]:
    """The attempts whose job is still queued."""
    return {i: job for i, job in _listed(state, attempts).items() if job.state == "PENDING"}


def queued_note(state: str | None) -> str:
    """This state directory's queued jobs and why they wait, for `labrun nodes`."""
    if state is None:
        return ""
    try:
        jobs = squeue(name_prefix(state)).values()
    except SlurmError:
        return ""
    reasons: dict[str, int] = {}
    for job in jobs:
        if job.state == "PENDING":
            reasons[job.why_pending] = reasons.get(job.why_pending, 0) + 1
    if not reasons:
        return ""
    return "; queued: " + ", ".join(f"{n} ({why})" for why, n in sorted(reasons.items()))


def cancel_orphans(state: str, live: Callable[[], Collection[int]]) -> list[str]:
    """Cancel this state directory's active jobs whose attempt is not open; what was cancelled."""
    jobs = [j for j in squeue(name_prefix(state)).values() if j.active]
    open_ids = set(live())  # after listing: a job submitted meanwhile has its attempt open
    gone = [(j, ids) for j in jobs if (ids := attempt_of(j.name, state)) and ids[1] not in open_ids]
    if gone:
        run(["scancel", *(j.job_id for j, _ in gone)])
    return [f"Slurm job {j.job_id} ({j.name}) of attempt {ids[1]}" for j, ids in gone]


class SlurmControl(NodeControl):
    """A run's jobs without its runner, found by name."""

    def __init__(self, state: str) -> None:
        self.state = state

    def _jobs(self, attempts: Sequence[AttemptRow]) -> dict[int, Job]:
        return {i: job for i, job in _listed(self.state, attempts).items() if job.active}

    def running(self, attempts: Sequence[AttemptRow]) -> list[int]:
        return list(self._jobs(attempts))

    def signal(self, attempts: Sequence[AttemptRow], signum: int) -> None:
        for job in self._jobs(attempts).values():
            if job.state == "RUNNING":
                run(["scancel", "--batch", f"--signal={int(signum)}", job.job_id])
            else:
                run(["scancel", job.job_id])

    def sweep(self, attempts: Sequence[AttemptRow]) -> list[str]:
        jobs = self._jobs(attempts)
        if jobs:
            run(["scancel", *(j.job_id for j in jobs.values())])
        return [f"Slurm job {j.job_id} of attempt {i}" for i, j in jobs.items()]
