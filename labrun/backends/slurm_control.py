"""A Slurm node's jobs without their runner (`labrun cancel`, the orphan sweep), found by
their names."""

from __future__ import annotations

from collections.abc import Sequence

from labrun.backends.base import NodeControl
from labrun.executors.slurm_query import Job, run, squeue
from labrun.executors.slurm_submit import job_name, name_prefix
from labrun.rows import AttemptRow


class SlurmControl(NodeControl):
    """A run's jobs without its runner, found by name."""

    def __init__(self, state: str) -> None:
        self.state = state

    def _jobs(self, attempts: Sequence[AttemptRow]) -> dict[int, Job]:
        if not self.state or not attempts:
            return {}
        listing = squeue(name_prefix(self.state))
        found = {}
        for attempt in attempts:
            job = listing.get(job_name(self.state, attempt.run_id, attempt.id))
            if job is not None and job.active:
                found[attempt.id] = job
        return found

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
