"""The loop that drives a run: one `tick(now)` collects ended attempts, decides, launches.

Decisions are the pure functions of `outcome`, `decisions` (with `retry` and `memory`)
and `scheduler`; every state change they call for is applied by the `Ledger`; this
module does the I/O around them (executors, signals, the reporter); where attempts may
go is `room.Room`'s. A tick writes one transaction: what ended, what started in an
earlier tick (pids, committed with the next transaction, at the latest after
START_COMMIT_DELAY) and what is claimed now. A crash before a start is committed leaves
its attempt `launching` with no pid: a resume or a cancel finds it by identity (the
wrapper's command line, its container's labels, its Slurm job's name), and a resume
abandons it as lost only when it is nowhere and left no exit record.
"""

from __future__ import annotations

import dataclasses
import math
import random
import signal
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from labrun import failpoint
from labrun.config.job import JobSpec, TaskSpec
from labrun.config.lab import NodeSpec
from labrun.decisions import Ended, Fail, Record, Retry, Supersede, on_end
from labrun.durations import Durations
from labrun.executors.base import Executor, Waker
from labrun.expand import launch_for
from labrun.gpus import gpu_env
from labrun.headline import failure_headline
from labrun.learned import Learner, node_max
from labrun.ledger import Ledger
from labrun.limits import Limit
from labrun.masking import keep_excerpt, masked_facts, masker
from labrun.memory import OomAttempt, OomPolicy
from labrun.model import Facts, Launch, LaunchError, Runtime, Started
from labrun.outcome import Stop, classify
from labrun.paths import StatePaths
from labrun.progress import AttemptEnd, Reporter
from labrun.retry import Policy
from labrun.room import Room
from labrun.rows import AttemptRow, RunRow, TaskRow
from labrun.scheduler import Plan, place
from labrun.speculation import choose_node
from labrun.speculator import InFlight, Speculator
from labrun.states import Outcome, RunState, TaskState
from labrun.store import Store
from labrun.unblock import Unblocker

LOOKAHEAD = 64  # ready tasks read beyond the free slots, so small tasks can backfill
START_COMMIT_DELAY = 0.1  # the longest a start's pid waits for a transaction to go with


@dataclass
class Active:
    """An attempt in flight; kept in memory only while it runs. Its task's current row is
    the ledger's (`Ledger.live`), never a copy taken here."""

    attempt_id: int
    task_id: int
    name: str  # the task's, for messages
    n: int  # the attempt's number within its task
    spec: TaskSpec
    executor: Executor
    launch: Launch
    node: str
    deadline: float | None
    stop: Stop | None = None
    kill_at: float | None = None
    gpus: tuple[int, ...] = ()  # device indices this attempt holds alone
    started: float = 0.0  # when it was claimed: its time limit and duration run from then
    limit: Limit | None = None  # its time limit as it stands (a relative one moves)


def policy_of(spec: TaskSpec) -> Policy:
    return Policy(spec.retries, spec.retry_delay, spec.retry_delay_max, spec.attempt_cap, spec.no_retry_exit)


@dataclass(frozen=True)
class ResumePlan:
    """What a resume found (`labrun.resume`): attempts to adopt, to abandon, tasks to requeue."""

    adopted: list[tuple[TaskRow, AttemptRow, Active]]
    lost: list[tuple[AttemptRow, str]]  # with why
    requeue: list[tuple[TaskRow, str]]  # running tasks with nothing in flight any more


class Runner:
    def __init__(
        self,
        store: Store,
        paths: StatePaths,
        job: JobSpec,
        run: RunRow,
        nodes: Sequence[NodeSpec],
        executors: Mapping[tuple[str, Runtime], Executor],
        waker: Waker,
        reporter: Reporter,
        rng: Callable[[], float] = random.random,
        node_max_failures: int = 5,
    ) -> None:
        self.store, self.paths, self.job, self.run = store, paths, job, run
        self.nodes, self.executors, self.waker, self.reporter = nodes, executors, waker, reporter
        self.rng = rng
        self.specs = {spec.name: spec for spec in job.all_tasks}
        self.active: dict[int, Active] = {}
        self.room = Room(nodes, self.specs, executors, self.active, job.max_parallel, node_max_failures)
        self.ledger = Ledger(store, run.id)
        self.stop: Stop | None = None
        self.kill_now = False
        learner = Learner(store, job, run.id, node_max([n.memory for n in nodes]))
        self.deps = Unblocker(store, paths, job, run, learner)  # waiting → ready or skipped
        self.extra: list[tuple[int, str, str | None]] = []  # (task id, why, node): one more attempt
        self.excused = 0  # tasks removed from the job file (job_edits): they do not fail the run
        self.mask = masker(job.secret_names)  # secret values, never recorded nor shown
        self.durations = Durations(store.succeeded_durations(run.id))  # for relative limits
        self.speculator = Speculator(self.specs.values(), self.durations)
        # starts not committed yet: with the next transaction, at the latest START_COMMIT_DELAY later
        self.unsaid: list[tuple[int, int, Started]] = []
        self.unsaid_since = math.inf

    @property
    def counts(self) -> Mapping[TaskState, int]:
        return self.ledger.counts

    # -- the loop -----------------------------------------------------------------------

    def request_stop(self, stop: Stop) -> None:
        """From a signal handler: stop launching and stop what runs; a second request kills."""
        self.kill_now = self.stop is not None
        self.stop = self.stop or stop
        self.waker.wake()

    def launch_extra(
        self, task_id: int, why: str = "another attempt while the first runs", node: str | None = None
    ) -> bool:
        """Ask for one more attempt of a running task, beside those in flight (on `node`, if
        given); the next tick places and starts it when there is room. The first attempt to
        succeed wins and the others are stopped and recorded superseded. False if the task
        is not running."""
        live = self.ledger.live.get(task_id)
        if live is None or live.task.state is not TaskState.RUNNING:
            return False
        self.extra.append((task_id, why, node))
        self.waker.wake()
        return True

    def done(self) -> bool:
        if self.active:
            return False
        if self.stop is not None:
            return True
        return not any(self.counts[s] for s in (TaskState.WAITING, TaskState.READY, TaskState.RUNNING))

    def tick(self, now: float) -> float | None:
        """Advance the run to `now`; returns when the next tick is due (None: on an event)."""
        for ex in self.executors.values():
            due = ex.wake_at(now)
            if due is not None and due <= now:
                ex.tick(now)
        ended = [item for ex in self.executors.values() for item in ex.finished()]
        if ended:
            failpoint.reached("ended")  # ends seen, not committed: a resume must read them again
        claimed: list[Active] = []
        may_launch = self.stop is None and (self.counts[TaskState.READY] > 0 or bool(self.extra))
        starts_due = now >= self.unsaid_since + START_COMMIT_DELAY
        if ended or starts_due or self.deps.dirty(False) or (may_launch and self.room.slots() > 0):
            with self.ledger.tx():
                self._say_started()
                for attempt_id, facts in ended:
                    self._record_end(self.active.pop(attempt_id), facts, now)
                self._settle(now)
                if self.stop is None:
                    # after recording ends: the slots they held are free now
                    claimed = self._claim_extra(now)
                    claimed += self._claim(*self._ready(now), now)
                self._settle(now)  # tasks that can never be placed fail their dependents
        if ended:
            self._committed([attempt_id for attempt_id, _ in ended])
        self._enforce_stops(now)
        unblocked = self._start(claimed, now)
        if self.stop is None and self._speculate(now):
            unblocked = True  # a copy was asked for: claimed at once, in the next tick
        self.reporter.queued(self._queued())
        self.reporter.progress(dict(self.counts), now)
        return now if unblocked else self._next_wake(now)

    def drive(self, clock: Callable[[], float]) -> RunState:
        while True:
            wake_at = self.tick(clock())
            if self.done():
                break
            timeout = None if wake_at is None else max(0.0, wake_at - clock())
            self.waker.wait(timeout)
        return self._finish(clock())

    def resume(self, plan: ResumePlan, now: float) -> None:
        """Apply what a resume found: adopted attempts are awaited like any other (one whose
        task already succeeded is stopped as superseded); lost ones are abandoned; a task
        runs again only when none of its attempts was adopted."""
        with self.ledger.tx():
            for task, attempt, act in plan.adopted:
                self.ledger.adopt(task, attempt, now)
                if task.state.terminal:
                    act.stop = Stop.SUPERSEDE if task.state is TaskState.SUCCEEDED else Stop.CANCEL
                self.active[attempt.id] = act
            for attempt, why in plan.lost:
                self.ledger.abandon(attempt, Outcome.LOST, why, now)
            for task, cause in plan.requeue:
                self.ledger.requeue(task, cause, now)
        # A task with two attempts open when its runner died had its speculative copy: it
        # gets no other, whichever of the two was adopted (one copy per task).
        open_of = Counter([task.id for task, _, _ in plan.adopted] + [a.task_id for a, _ in plan.lost])
        self.speculator.copied.update(task_id for task_id, n in open_of.items() if n > 1)

    def _committed(self, attempt_ids: list[int]) -> None:
        """After the transaction that recorded these ends: executors may drop their records."""
        failpoint.reached("recorded")  # committed, not yet removed: the orphan sweep's case
        for ex in dict.fromkeys(self.executors.values()):
            ex.committed(attempt_ids)

    def _settle(self, now: float) -> bool:
        """Apply what finished tasks unblock, until nothing more does; True when some task
        became ready."""
        ready_before = self.counts[TaskState.READY]
        finished = self.ledger.take_finished()
        while self.deps.dirty(bool(finished)):
            plan = self.deps.plan(finished)
            self.ledger.apply_unblock(plan, now)
            for text in plan.messages:
                self.reporter.message(text)
            finished = self.ledger.take_finished()
        return self.counts[TaskState.READY] > ready_before

    # -- what ended ---------------------------------------------------------------------

    def _record_end(self, act: Active, facts: Facts, now: float) -> None:
        facts = masked_facts(facts, self.mask)
        if act.gpus:  # kept with the end, for the report's GPU lanes
            facts = dataclasses.replace(facts, gpus=act.gpus)
        timeout = act.limit.seconds if act.limit is not None else None
        outcome, detail = classify(facts, act.stop, timeout)
        if outcome is Outcome.TIMEOUT and act.limit is not None and act.limit.why:
            detail = f"{detail} (limit: {act.limit.why})"
        if outcome is Outcome.SUCCEEDED:
            self._succeeded(act.spec, facts.ended - act.started)
        live = self.ledger.live[act.task_id]
        oom = self._oom_attempt(act, facts) if outcome is Outcome.OOM else None
        ended = Ended(live.attempts[act.attempt_id], outcome, detail, act.stop, oom, facts.exit_code)
        attempts = list(live.attempts.values())
        instructions = on_end(live.task, attempts, ended, policy_of(act.spec), now, self.rng())
        self.ledger.apply_end(act.task_id, act.attempt_id, facts, instructions, now)
        record = next(ins for ins in instructions if isinstance(ins, Record))
        keep_excerpt(act.launch.stderr_path, self.mask)  # what `why` shows of it, masked
        if record.counted:
            self.room.node_failures[act.node] = self.room.node_failures.get(act.node, 0) + 1
        decision = None
        for ins in instructions:
            if isinstance(ins, (Retry, Fail)):
                decision = ins.decision
            elif isinstance(ins, Supersede):
                self._supersede(ins.attempt_ids)
        headline = ""
        if record.counted:  # the error itself in the line cron mails, not only "exited 1"
            launch, runtime = act.launch, act.spec.runtime
            headline = failure_headline(
                launch, runtime, record.outcome, record.detail, facts, timeout, self.mask
            )
        item = live.task.item
        end = AttemptEnd(act.name, act.n, act.node, record.outcome, record.detail, decision, item, headline)
        self.reporter.attempt_ended(end)

    def _succeeded(self, spec: TaskSpec, seconds: float) -> None:
        """A success moves the relative limit of the attempts of its task name still running."""
        self.durations.add(spec.name, seconds)
        if spec.timeout_factor is None:
            return
        limit = self.durations.limit(spec)
        for act in self.active.values():
            if act.spec.name == spec.name and limit is not None:
                act.limit, act.deadline = limit, act.started + limit.seconds

    def _supersede(self, attempt_ids: Sequence[int]) -> None:
        """Stop attempts that lost the race; `_enforce_stops` sends TERM, then KILL."""
        for attempt_id in attempt_ids:
            act = self.active.get(attempt_id)
            if act is not None and act.stop is None:
                act.stop = Stop.SUPERSEDE

    def _oom_attempt(self, act: Active, facts: Facts) -> OomAttempt:
        """The OOM-killed attempt's limit and peak, with the largest node it could run on."""
        spec = act.spec
        hosts = [n for n in self.nodes if (n.name, spec.runtime) in self.executors] or list(self.nodes)
        big = max(hosts, key=lambda n: n.memory)
        policy = OomPolicy(spec.on_oom, spec.memory_growth, spec.memory_max, big.memory, big.name)
        return OomAttempt(policy, act.launch.memory, facts.peak_memory)

    # -- what starts --------------------------------------------------------------------

    def _ready(self, now: float) -> tuple[list[TaskRow], Plan | None]:
        """The ready rows worth reading now, and where they go (the plan is made once: the
        claim applies the one that decided how many rows to read)."""
        slots = self.room.slots()
        if slots <= 0 or not self.counts[TaskState.READY]:
            return [], None
        # Read only as many rows as could start; the lookahead only when one of them must
        # wait (a backfill may then fit). Reading 1,088 rows to start one task cost 5x.
        want = int(min(slots, self.room.could_start(), 1024))
        if want <= 0:
            return [], None
        head = self.store.ready_tasks(self.run.id, now, want)
        plan = self.room.plan(head)
        if len(head) < want or len(plan.placements) == len(head):
            return head, plan
        ready = self.store.ready_tasks(self.run.id, now, want + LOOKAHEAD)
        return ready, self.room.plan(ready)

    def _claim(self, ready: list[TaskRow], plan: Plan | None, now: float) -> list[Active]:
        if not ready or plan is None:
            return []
        by_id = {task.id: task for task in ready}
        for task_id in plan.never_fits:
            task = by_id[task_id]
            why = self.room.never_fits(task)
            self.ledger.never_fits(task, why, now)
            self.reporter.message(f"{task.name}: cannot run anywhere: {why}")
        claimed = []
        for placement in plan.placements:
            task = by_id[placement.task_id]
            runtime = self.specs[task.spec].runtime
            running, attempt_id = self.ledger.claim(task, placement.node, runtime, now)
            claimed.append(self._activate(running, attempt_id, placement.node, now))
        return claimed

    def _claim_extra(self, now: float) -> list[Active]:
        """Another attempt for each task it was asked for (`launch_extra`) that fits now;
        the others wait for room while their task still runs."""
        requests, self.extra = self.extra, []
        claimed = []
        for task_id, why, on in requests:
            live = self.ledger.live.get(task_id)
            if live is None or live.task.state is not TaskState.RUNNING:
                continue  # it finished meanwhile: nothing to race
            demand = self.room.demand(live.task)
            if on is not None:
                demand = dataclasses.replace(demand, nodes=(on,))
            plan = place([demand], self.room.capacity(), self.room.slots(), self.room.avoid())
            if not plan.placements or self.room.slots() <= 0:
                self.extra.append((task_id, why, on))
                continue
            node = plan.placements[0].node
            runtime = self.specs[live.task.spec].runtime
            running, attempt_id = self.ledger.claim_extra(task_id, node, runtime, now, why)
            claimed.append(self._activate(running, attempt_id, node, now))
        return claimed

    def _activate(self, task: TaskRow, attempt_id: int, node: str, now: float) -> Active:
        """The launch of a claimed attempt, and the slot it holds from now on."""
        spec = self.specs[task.spec]
        n = task.attempts
        launch = launch_for(
            self.paths,
            self.run,
            spec,
            task,
            n,
            attempt_id,
            self.job.workdir,
            task.memory,
            self.job.secret_names,
        )
        gpus = self.room.gpus_for(node, spec.gpus)
        if gpus:
            env = {**launch.env, **gpu_env(gpus)}
            launch = dataclasses.replace(launch, env=env, gpus=gpus)
        limit = self.durations.limit(spec)
        deadline = now + limit.seconds if limit is not None else None
        executor = self.executors[(node, spec.runtime)]
        act = Active(attempt_id, task.id, task.name, n, spec, executor, launch, node, deadline, gpus=gpus)
        act.started, act.limit = now, limit
        self.active[attempt_id] = act
        return act

    def _start(self, claimed: list[Active], now: float) -> bool:
        """Starts claimed attempts; True when one that could not start unblocked others."""
        started: list[tuple[int, int, Started]] = []
        failed: list[tuple[Active, str]] = []
        if claimed:
            failpoint.reached("claimed")
        for act in claimed:
            try:
                started.append((act.task_id, act.attempt_id, act.executor.start(act.launch)))
            except LaunchError as exc:
                failed.append((act, str(exc)))
            failpoint.reached("spawned")
        if not claimed:
            return False
        # Committed with the next transaction (most often the one that records their ends):
        # until then a resume or a cancel finds such an attempt by its wrapper's command line.
        self.unsaid += started
        self.unsaid_since = min(self.unsaid_since, now)
        unblocked = False
        if failed:
            with self.ledger.tx():
                self._say_started()
                for act, error in failed:
                    del self.active[act.attempt_id]
                    self._record_end(act, Facts(None, None, now, start_error=error), now)
                unblocked = self._settle(now)
        for _, attempt_id, _ in started:
            act = self.active[attempt_id]
            self.reporter.attempt_started(act.name, act.n, act.node)
        return unblocked

    def _queued(self) -> dict[str, int]:
        """Attempts waiting in another scheduler's queue, counted by its reason."""
        reasons: dict[str, int] = {}
        for ex in dict.fromkeys(self.executors.values()):
            for reason in ex.queued().values():
                reasons[reason] = reasons.get(reason, 0) + 1
        return reasons

    def _say_started(self) -> None:
        """Commit, in the transaction open now, the starts not committed yet."""
        if self.unsaid:
            said = []
            for task_id, attempt_id, started in self.unsaid:
                act = self.active.get(attempt_id)
                if act is not None:
                    started = act.executor.identified(attempt_id, started)
                said.append((task_id, attempt_id, started))
            self.ledger.started(said, self.unsaid_since)
            self.unsaid, self.unsaid_since = [], math.inf

    # -- stragglers (labrun/speculation.py) ------------------------------------------------

    def _flights(self) -> list[InFlight]:
        out = []
        for act in self.active.values():
            live = self.ledger.live.get(act.task_id)
            if live is not None:
                running = live.task.state is TaskState.RUNNING
                attempts = len(live.live_attempts())
                out.append(InFlight(act.task_id, act.spec.name, act.node, act.started, attempts, running))
        return out

    def _speculate(self, now: float) -> bool:
        """Ask for a copy of each straggler the decision names, on a node it picks; True
        when one was asked for."""
        if not self.speculator.rules or not self.active:
            return False
        asked = False
        ready_waiting = self.counts[TaskState.READY] > 0
        for found in self.speculator.due(self._flights(), now, ready_waiting, self._progress):
            task = self.ledger.live[found.task_id].task
            free, able = self.room.nodes_for(self.room.demand(task))
            node = choose_node(found.node, free, able)
            if node is None:  # asked again when room frees up
                self.speculator.copied.discard(found.task_id)
                continue
            asked = self.launch_extra(found.task_id, found.why, node) or asked
        return asked

    def _progress(self) -> dict[str, tuple[int, int]]:
        """(done, total) tasks per task name, read once when a straggler is in sight."""
        out: dict[str, list[int]] = {}
        for spec, state, n, _ in self.store.spec_counts(self.run.id):
            figures = out.setdefault(spec, [0, 0])
            figures[0] += n if state.terminal else 0
            figures[1] += n
        return {spec: (done, total) for spec, (done, total) in out.items()}

    # -- stopping -----------------------------------------------------------------------

    def _enforce_stops(self, now: float) -> None:
        for act in self.active.values():
            if act.stop is None and self.stop is not None:
                act.stop = self.stop
            elif act.stop is None and act.deadline is not None and now >= act.deadline:
                act.stop = Stop.TIMEOUT
            if act.stop is not None and act.kill_at is None:
                act.executor.signal(act.attempt_id, signal.SIGTERM)
                act.kill_at = now + act.spec.grace
            if act.kill_at is not None and (now >= act.kill_at or self.kill_now):
                act.executor.signal(act.attempt_id, signal.SIGKILL)
                act.kill_at = math.inf  # sent once; the exit is awaited like any other

    def _next_wake(self, now: float) -> float | None:
        times: list[float] = []
        for act in self.active.values():
            if act.stop is None and act.deadline is not None:
                times.append(act.deadline)
            if act.kill_at is not None and act.kill_at != math.inf:
                times.append(act.kill_at)
        if (
            self.stop is None
            and self.room.slots() > 0
            and self.counts[TaskState.READY]
            and self.room.could_start() >= 1
        ):
            # a task held back by its retry delay, with room to start it (else an end wakes us)
            ready_at = self.store.next_ready_time(self.run.id)
            if ready_at is not None and ready_at > now:
                times.append(ready_at)
        times.extend(t for ex in self.executors.values() if (t := ex.wake_at(now)) is not None)
        if self.unsaid:
            times.append(self.unsaid_since + START_COMMIT_DELAY)
        check = self.speculator.next_check(self._flights()) if self.speculator.rules else None
        if check is not None:
            times.append(max(check, now + 1.0) if check <= now else check)  # past it: waits for room
        if not self.active and self.counts[TaskState.READY] and not times:
            times.append(now + 1.0)  # never sleep for good while work is queued
        return min(times) if times else None

    def _finish(self, now: float) -> RunState:
        if self.stop is Stop.SHUTDOWN:
            state = RunState.INTERRUPTED
        elif self.stop is Stop.CANCEL:
            state = RunState.CANCELLED
        elif self.counts[TaskState.SUCCEEDED] + self.excused == sum(self.counts.values()):
            state = RunState.SUCCEEDED
        else:
            state = RunState.FAILED
        with self.ledger.tx():
            self._say_started()
            if self.stop is Stop.CANCEL:
                for task in list(self.store.tasks(self.run.id, [TaskState.READY, TaskState.WAITING])):
                    self.ledger.cancel(task, "run cancelled", now)
            self.store.set_run_state(self.run.id, state, now, f"run {state.value}")
        return state
