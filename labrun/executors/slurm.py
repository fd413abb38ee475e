"""Attempts as Slurm jobs: one `sbatch` per attempt, states from batched queries.

`start` writes the attempt's env file and batch script (slurm_submit.py) and submits
them; the job's name (state directory id, run, attempt) is how this executor, a
restarted runner (`adopt`) and `labrun cancel` find it again. One `squeue` per poll
covers every job of this state directory; one `sacct` covers the jobs that poll saw end
(for their exit code, MaxRSS and CPU time). The poll interval starts at POLL_FLOOR after
anything changed and doubles while nothing does, up to the node's `poll`. The batch
script touches a marker in `<state_dir>/slurm-ends/` when its command ends: the runner
looks at that directory every MARKER_CHECK seconds (one stat) and polls Slurm early.

Signals: a running job's batch script gets them (`scancel --batch --signal`) and passes
them to the task's process group; SIGKILL ends the batch script itself, and Slurm then
kills everything left in the job. Any signal to a job not yet running is `scancel` of
the whole job. A job that ends LOST
(node failure, cancelled by someone else...) puts its node on this executor's exclude
list, while the partition keeps another node.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from labrun import attempt_facts, private
from labrun.executors.base import Executor, Waker
from labrun.executors.slurm_query import (
    Job,
    SlurmError,
    final_record,
    job_facts,
    record_facts,
    run,
    sacct,
    squeue,
    why_pending,
)
from labrun.executors.slurm_submit import (
    ENV_FILE,
    RECORD,
    SlurmOptions,
    attempt_file,
    is_config_error,
    job_name,
    name_prefix,
    sbatch_args,
    sbatch_env,
    write_attempt_files,
)
from labrun.model import Facts, Launch, LaunchError, Runtime, Started

POLL_FLOOR = 1.0  # seconds between queries right after a change
MARKER_CHECK = 0.25  # how often the ends directory is looked at (one stat)
ACCT_WAIT = 15.0  # how long an ended job's accounting may lag behind squeue
ADOPT_LOOKBACK = 14 * 86400.0  # how far back sacct looks for a restarted runner's jobs
MARKERS = "slurm-ends"


@dataclass
class _Job:
    launch: Launch
    name: str
    job_id: str | None
    submitted: float
    sent: list[int] = field(default_factory=list)
    state: str = "PENDING"
    reason: str = ""
    ended_seen: float | None = None  # when squeue first showed it ended (accounting may lag)
    error: str = ""  # sbatch's answer when the submission was not confirmed


class SlurmExecutor(Executor):
    """The attempts of one Slurm node (a partition) of one runner."""

    runtime = Runtime.PROCESS

    def __init__(
        self,
        node: str,
        options: SlurmOptions,
        state_dir: str,
        state: str,
        waker: Waker | None = None,
        poll: float = 30.0,
        partition_nodes: tuple[str, ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node, self.options, self.state, self.poll = node, options, state, poll
        self.waker, self.clock = waker, clock
        self.prefix = name_prefix(state)
        self.markers = os.path.join(state_dir, MARKERS)
        private.makedirs(self.markers)
        self.partition_nodes = partition_nodes
        self.attempts: dict[int, _Job] = {}
        self.done: list[tuple[int, Facts]] = []
        self.ended_markers: dict[int, str] = {}  # removed once the runner committed the end
        self.excluded: list[str] = []  # Slurm nodes where a job of this run was lost
        self.interval, self.next_poll, self.last_poll = POLL_FLOOR, 0.0, 0.0
        self.next_marker, self.marker_mtime = 0.0, 0
        self._new_markers()  # what is there now is no news
        self.error = ""
        self.online = True
        self._listing: tuple[float, dict[str, Job], dict[str, Job] | None] | None = None

    # -- start ---------------------------------------------------------------------------

    def start(self, launch: Launch) -> Started:
        name = job_name(self.state, launch.run_id, launch.attempt_id)
        private.makedirs(os.path.dirname(launch.stdout_path))
        marker = os.path.join(self.markers, name)
        for path in (launch.stdout_path, launch.stderr_path, attempt_file(launch, RECORD), marker):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        script = write_attempt_files(launch, marker)
        argv = ["sbatch", "--parsable", *sbatch_args(self.options, name, launch, self.excluded), script]
        now = self.clock()
        job = _Job(launch, name, None, now)
        try:
            job.job_id = run(argv, sbatch_env(launch)).strip().split(";")[0] or None
        except SlurmError as exc:
            if is_config_error(str(exc)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(attempt_file(launch, ENV_FILE))
                raise LaunchError(f"on node {self.node}: Slurm refused the job: {exc}") from None
            job.error = f"node {self.node}: the submission was not confirmed: {exc}"
        if not self.attempts:  # the first job after a quiet spell: is it queued as asked?
            self.next_poll, self.interval = now + POLL_FLOOR, POLL_FLOOR
        self.attempts[launch.attempt_id] = job
        return Started(ref=job.job_id, mechanism="slurm")

    # -- waking and polling ----------------------------------------------------------------

    def wake_at(self, now: float) -> float | None:
        if self.done:
            return now
        if not self.attempts:
            return None if self.online else self.next_poll
        return min(self.next_poll, self.next_marker)

    def tick(self, now: float) -> None:
        if now >= self.next_marker:
            self.next_marker = now + MARKER_CHECK
            if self._new_markers():
                self._records(now)
        if now >= self.next_poll:
            self._poll(now)

    def _new_markers(self) -> bool:
        try:
            mtime = os.stat(self.markers).st_mtime_ns
        except OSError:
            return False
        changed, self.marker_mtime = mtime != self.marker_mtime, mtime
        return changed

    def finished(self) -> list[tuple[int, Facts]]:
        done, self.done = self.done, []
        return done

    def _poll(self, now: float) -> None:
        self.last_poll = now
        try:
            queued = squeue(self.prefix)
        except SlurmError as exc:
            self.error, self.online = f"node {self.node}: {exc}", False
            self.interval = min(self.interval * 2, self.poll)
            self.next_poll = now + self.interval
            return
        self.error, self.online = "", True
        candidates = []
        for attempt_id, job in self.attempts.items():
            found = queued.get(job.name)
            if found is not None:
                job.job_id, job.state, job.reason = found.job_id, found.state, found.reason
                if found.active:
                    continue
            candidates.append(attempt_id)
        self.interval = min(self.interval * 2, self.poll)  # unless an end's figures lag (_end)
        accounted = self._accounting([self.attempts[i] for i in candidates]) if candidates else None
        for attempt_id in candidates:
            facts = self._end(self.attempts[attempt_id], queued, accounted, now)
            if facts is not None:
                self._ended(attempt_id, facts)
        self.next_poll = now + self.interval

    def _ended(self, attempt_id: int, facts: Facts) -> None:
        job = self.attempts.pop(attempt_id)
        with contextlib.suppress(FileNotFoundError):  # a job cancelled before it ran never read it
            os.unlink(attempt_file(job.launch, ENV_FILE))
        self.ended_markers[attempt_id] = os.path.join(self.markers, job.name)
        self.done.append((attempt_id, facts))

    def _records(self, now: float) -> None:
        """Attempts whose batch script touched its marker: ended here when the exit record
        alone tells how (`final_record`), else Slurm is asked early."""
        try:
            touched = set(os.listdir(self.markers))
        except OSError:
            return
        for attempt_id, job in list(self.attempts.items()):
            if job.name not in touched:
                continue
            record = _record(job.launch)
            if record is not None and final_record(record, job.sent):
                missing = attempt_facts.missing_outputs(job.launch.outputs) if record["exit"] == 0 else ()
                self._ended(attempt_id, record_facts(record, missing))
            else:
                self.interval = POLL_FLOOR
                self.next_poll = min(self.next_poll, max(now, self.last_poll + POLL_FLOOR))

    def _accounting(self, jobs: list[_Job]) -> dict[str, Job] | None:
        """sacct for the jobs that left the queue; None when accounting does not answer."""
        ids = [j.job_id for j in jobs if j.job_id]
        since = min(j.submitted for j in jobs)
        try:
            return sacct(since, [] if len(ids) < len(jobs) else ids, self.prefix)
        except SlurmError:
            return None  # no slurmdbd: squeue's state and the exit records must do

    def _end(
        self, job: _Job, queued: dict[str, Job], accounted: dict[str, Job] | None, now: float
    ) -> Facts | None:
        """The job's facts once it ended; None while it still runs or its accounting lags."""
        in_queue, in_acct = queued.get(job.name), (accounted or {}).get(job.name)
        if in_acct is not None and in_acct.active and in_queue is None:
            return None  # sacct still sees it running: the next poll
        if accounted is not None and in_queue is not None and (in_acct is None or in_acct.active):
            job.ended_seen = job.ended_seen if job.ended_seen is not None else now
            if now - job.ended_seen < ACCT_WAIT:
                self.interval = POLL_FLOOR  # the figures come soon
                return None
        info = in_acct if in_acct is not None and not in_acct.active else in_queue
        if info is None and job.error and job.job_id is None:
            return Facts(None, None, now, lost=True, detail=job.error)
        facts = job_facts(info, _record(job.launch), job.sent, now, f"node {self.node}")
        if facts.lost and info is not None and info.nodes:
            self._exclude(info.nodes)
        if facts.exit_code == 0 and job.launch.outputs:  # the workdir is shared with the nodes
            facts = replace(facts, missing_outputs=attempt_facts.missing_outputs(job.launch.outputs))
        return facts

    def _exclude(self, nodes: str) -> None:
        """Avoid a node that lost a job, as long as the partition keeps another one."""
        for name in nodes.split(","):
            allowed = [n for n in self.partition_nodes if n not in self.excluded and n != name]
            if name not in self.excluded and allowed:
                self.excluded.append(name)

    # -- signals, adoption -----------------------------------------------------------------

    def signal(self, attempt_id: int, signum: int) -> None:
        job = self.attempts.get(attempt_id)
        if job is None:
            return
        if job.state != "RUNNING" and not self._refresh(job):
            return  # it ended: the signal is ignored, as for any finished attempt
        job.sent.append(int(signum))
        if job.job_id is None:
            argv = ["scancel", f"--name={job.name}"]
        elif job.state != "RUNNING":
            argv = ["scancel", job.job_id]
        else:
            argv = ["scancel", "--batch", f"--signal={int(signum)}", job.job_id]
        try:
            run(argv)
        except SlurmError as exc:
            if "--batch" in argv:  # not running after all (or already ending): cancel the job
                with contextlib.suppress(SlurmError):
                    run(["scancel", job.job_id or ""])
            else:
                self.error = f"node {self.node}: {exc}"
        self.interval = POLL_FLOOR
        self.next_poll = min(self.next_poll, self.clock() + POLL_FLOOR)

    def _refresh(self, job: _Job) -> bool:
        """The job's state asked now (a signal must not cancel a job that started meanwhile,
        nor count as sent to one that ended); False when it ended."""
        try:
            found = squeue(self.prefix).get(job.name)
        except SlurmError:
            return True  # unknown: signalled as it was last seen
        if found is None:
            return job.job_id is None  # an unconfirmed submission may still be looked for
        job.job_id, job.state, job.reason = found.job_id, found.state, found.reason
        return found.active

    def running(self) -> list[int]:
        return list(self.attempts)

    def queued(self) -> dict[int, str]:
        """Attempts still queued in Slurm, with Slurm's reason (Resources, Priority...)."""
        return {i: why_pending(j.reason) for i, j in self.attempts.items() if j.state == "PENDING"}

    def adopt(self, attempt_id: int, launch: Launch, started: Started) -> bool:
        """Follow a job an earlier runner submitted (found by its name: running, queued, or
        ended while no runner watched, whose end the next poll reports); False when Slurm
        knows no such job and it left no exit record."""
        name = job_name(self.state, launch.run_id, attempt_id)
        try:
            queued, accounted = self._known()
        except SlurmError:  # Slurm does not answer: followed, and the polls decide
            queued, accounted = {}, {name: Job(started.ref or "", name, "UNKNOWN")}
        found = queued.get(name) or (accounted or {}).get(name)
        if found is None and _record(launch) is None:
            return False
        job_id = found.job_id if found is not None else started.ref
        job = _Job(launch, name, job_id, self.clock() - ADOPT_LOOKBACK)
        if found is not None and found.active:
            job.state, job.reason = found.state, found.reason
        self.attempts[attempt_id] = job
        self.next_poll, self.interval = self.clock(), POLL_FLOOR
        return True

    def _known(self) -> tuple[dict[str, Job], dict[str, Job] | None]:
        """squeue and sacct listings of this state directory's jobs, shared by the adoptions
        of one resume (taken again after a few seconds)."""
        now = time.monotonic()
        if self._listing is None or now - self._listing[0] > 5.0:
            queued = squeue(self.prefix)
            try:
                accounted: dict[str, Job] | None = sacct(self.clock() - ADOPT_LOOKBACK, (), self.prefix)
            except SlurmError:
                accounted = None
            self._listing = (now, queued, accounted)
        return self._listing[1], self._listing[2]

    def committed(self, attempt_ids: Sequence[int]) -> None:
        """Ends recorded: their markers go (the exit records stay beside the logs)."""
        for attempt_id in attempt_ids:
            marker = self.ended_markers.pop(attempt_id, None)
            if marker is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(marker)


def _record(launch: Launch) -> dict[str, Any] | None:
    """The exit record the batch script left beside the logs, or None."""
    try:
        with open(attempt_file(launch, RECORD), encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
