"""The loop that drives a run: one `tick(now)` collects ended attempts, decides, launches.

Decisions are the pure functions of `outcome`, `retry` and `scheduler`; this module does
the I/O around them. Each tick writes at most two transactions: one for what ended and
what is claimed, one for what actually started (pids), so a crash between the two
leaves attempts with no pid, which a resume treats as lost.
"""

from __future__ import annotations

import dataclasses
import math
import random
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from labrun.config.job import JobSpec, TaskSpec
from labrun.config.lab import NodeSpec
from labrun.executors.base import Executor, Waker
from labrun.expand import launch_for
from labrun.gpus import assign, gpu_env
from labrun.memory import OomAttempt, OomPolicy
from labrun.model import Facts, Launch, LaunchError, Runtime, Started
from labrun.outcome import Stop, classify
from labrun.paths import StatePaths
from labrun.progress import AttemptEnd, Reporter
from labrun.retry import Decision, Policy, decide
from labrun.rows import RunRow, TaskRow
from labrun.scheduler import Demand, NodeCapacity, Plan, place
from labrun.states import Outcome, RunState, TaskState
from labrun.store import Store
from labrun.unblock import Unblocker
from labrun.units import format_size

LOOKAHEAD = 64  # ready tasks read beyond the free slots, so small tasks can backfill
FALLBACK_POLL = 0.05  # only where the kernel has no pidfd


@dataclass
class Active:
    """A running attempt; kept in memory only while it runs."""

    attempt_id: int
    task: TaskRow  # as it is in the store now (state running)
    spec: TaskSpec
    executor: Executor
    launch: Launch
    node: str
    deadline: float | None
    stop: Stop | None = None
    kill_at: float | None = None
    gpus: tuple[int, ...] = ()  # device indices this attempt holds alone


def policy_of(spec: TaskSpec) -> Policy:
    return Policy(spec.retries, spec.retry_delay, spec.retry_delay_max, spec.attempt_cap)


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
        self.counts = {state: 0 for state in TaskState}
        self.counts.update(store.counts(run.id))
        self.stop: Stop | None = None
        self.kill_now = False
        self.deps = Unblocker(self)  # waiting → ready or skipped as upstream tasks finish
        self.node_max_failures = node_max_failures
        self.node_failures: dict[str, int] = {}  # counted failures of this run per node

    # -- the loop -----------------------------------------------------------------------

    def request_stop(self, stop: Stop) -> None:
        """From a signal handler: stop launching and stop what runs; a second request kills."""
        self.kill_now = self.stop is not None
        self.stop = self.stop or stop
        self.waker.wake()

    def done(self) -> bool:
        if self.active:
            return False
        if self.stop is not None:
            return True
        return not any(self.counts[s] for s in (TaskState.WAITING, TaskState.READY, TaskState.RUNNING))

    def tick(self, now: float) -> float | None:
        """Advance the run to `now`; returns when the next tick is due (None: on an event)."""
        for ex in self.executors.values():
            if ex.next_sample_at <= now:
                ex.sample(now)
        ended = [item for ex in self.executors.values() for item in ex.finished()]
        claimed: list[Active] = []
        may_launch = self.stop is None and self.counts[TaskState.READY] > 0
        if ended or self.deps.dirty or (may_launch and self._slots() > 0):
            with self.store.tx():
                for attempt_id, facts in ended:
                    self._record_end(self.active.pop(attempt_id), facts, now)
                self.deps.settle(now)
                # read after recording ends: the slots they held are free now
                claimed = self._claim(self._ready(now) if self.stop is None else [], now)
                self.deps.settle(now)  # tasks that can never be placed fail their dependents
        self._enforce_stops(now)
        unblocked = self._start(claimed, now)
        self.reporter.progress(self.counts, now)
        return now if unblocked else self._next_wake(now)

    def drive(self, clock: Callable[[], float]) -> RunState:
        while True:
            wake_at = self.tick(clock())
            if self.done():
                break
            timeout = None if wake_at is None else max(0.0, wake_at - clock())
            self.waker.wait(timeout)
        return self._finish(clock())

    # -- what ended ---------------------------------------------------------------------

    def _record_end(self, act: Active, facts: Facts, now: float) -> None:
        outcome, detail = classify(facts, act.stop, act.spec.timeout)
        self.store.finish_attempt(act.attempt_id, facts, outcome, detail)
        task, n = act.task, act.task.attempts
        failures = task.failures + int(outcome.counts)
        if outcome.counts:
            self.node_failures[act.node] = self.node_failures.get(act.node, 0) + 1
        decision: Decision | None = None
        if outcome is Outcome.SUCCEEDED:
            self._move(task, TaskState.SUCCEEDED, now, detail, n, reason=None)
        elif outcome is Outcome.KILLED and act.stop is Stop.SHUTDOWN:
            self._move(task, TaskState.READY, now, "runner stopped; runs again on resume", n, not_before=0)
        elif outcome is Outcome.KILLED:
            self._move(task, TaskState.CANCELLED, now, detail, n, reason="cancelled")
        else:
            oom = self._oom_attempt(act, facts) if outcome is Outcome.OOM else None
            decision = decide(policy_of(act.spec), outcome, n, failures, task.memory, now, self.rng(), oom)
            if decision.retry:
                self._move(
                    task,
                    TaskState.READY,
                    now,
                    f"{detail}; {decision.reason}",
                    n,
                    not_before=decision.not_before,
                    failures=failures,
                    memory=decision.memory,
                    reason=detail,
                )
            else:
                self._move(
                    task,
                    TaskState.FAILED,
                    now,
                    f"{detail}; {decision.reason}",
                    n,
                    failures=failures,
                    reason=f"{detail}; {decision.reason}",
                )
        self.reporter.attempt_ended(AttemptEnd(task.name, n, act.node, outcome, detail, decision))

    def _oom_attempt(self, act: Active, facts: Facts) -> OomAttempt:
        """The OOM-killed attempt's limit and peak, with the largest node it could run on."""
        spec = act.spec
        hosts = [n for n in self.nodes if (n.name, spec.runtime) in self.executors] or list(self.nodes)
        big = max(hosts, key=lambda n: n.memory)
        policy = OomPolicy(spec.on_oom, spec.memory_growth, spec.memory_max, big.memory, big.name)
        return OomAttempt(policy, act.launch.memory, facts.peak_memory)

    def _move(
        self,
        task: TaskRow,
        new: TaskState,
        now: float,
        cause: str,
        attempt: int | None,
        **fields: object,
    ) -> TaskRow:
        self.store.transition(task, new, now, cause, attempt, **fields)
        self.counts[task.state] -= 1
        self.counts[new] += 1
        self.deps.note(task, new)
        changes = {
            k: v for k, v in fields.items() if k in ("attempts", "failures", "memory", "not_before", "reason")
        }
        return dataclasses.replace(task, state=new, **changes)  # type: ignore[arg-type]

    # -- what starts --------------------------------------------------------------------

    def _slots(self) -> int:
        cap = self.job.max_parallel if self.job.max_parallel is not None else math.inf
        return int(min(cap - len(self.active), 1_000_000))

    def _ready(self, now: float) -> list[TaskRow]:
        slots = self._slots()
        if slots <= 0 or not self.counts[TaskState.READY]:
            return []
        # Read only as many rows as could start; the lookahead only when one of them must
        # wait (a backfill may then fit). Reading 1,088 rows to start one task cost 5x.
        want = int(min(slots, self._could_start(), 1024))
        if want <= 0:
            return []
        head = self.store.ready_tasks(self.run.id, now, want)
        if len(head) < want or len(self._plan(head).placements) == len(head):
            return head
        return self.store.ready_tasks(self.run.id, now, want + LOOKAHEAD)

    def _could_start(self) -> float:
        """An upper bound on how many more attempts fit now, from free CPUs alone."""
        least = min((spec.cpus for spec in self.specs.values()), default=0.0)
        most = max((spec.cpus for spec in self.specs.values()), default=0.0)
        if least <= 0 or most > max(node.cpus for node in self.nodes):
            return math.inf  # read as before, so a task no node can hold fails at once
        free = sum(max(0.0, node.cpus - node.cpus_used) for node in self._capacity())
        return math.floor((free + 1e-9) / least)

    def _plan(self, ready: list[TaskRow]) -> Plan:
        return place([self._demand(t) for t in ready], self._capacity(), self._slots(), self._avoid())

    def _capacity(self) -> list[NodeCapacity]:
        used: dict[str, list[float]] = {node.name: [0.0, 0.0, 0.0] for node in self.nodes}
        for act in self.active.values():
            used[act.node][0] += act.spec.cpus
            used[act.node][1] += act.launch.memory
            used[act.node][2] += len(act.gpus)
        for node in self.nodes:
            if not self._online(node.name):  # offline: nothing fits now, tasks wait for it
                used[node.name] = [node.cpus, node.memory, len(node.gpus)]
        return [
            NodeCapacity(
                node.name,
                node.cpus,
                node.memory,
                used[node.name][0],
                int(used[node.name][1]),
                frozenset(rt for (name, rt) in self.executors if name == node.name),
                len(node.gpus),
                int(used[node.name][2]),
            )
            for node in self.nodes
        ]

    def _online(self, node: str) -> bool:
        return all(ex.online for (name, _), ex in self.executors.items() if name == node)

    def _avoid(self) -> frozenset[str]:
        return frozenset(n for n, count in self.node_failures.items() if count >= self.node_max_failures)

    def _gpus_for(self, node: str, count: int) -> tuple[int, ...]:
        if not count:
            return ()
        devices = next(n.gpus for n in self.nodes if n.name == node)
        busy = [gpu for act in self.active.values() if act.node == node for gpu in act.gpus]
        return assign(count, devices, busy)

    def _demand(self, task: TaskRow) -> Demand:
        spec = self.specs[task.spec]
        nodes = (self.nodes[0].name,) if task.seq == 0 else spec.nodes  # task 0: the head node
        return Demand(task.id, spec.cpus, task.memory, spec.runtime, nodes, spec.gpus)

    def _claim(self, ready: list[TaskRow], now: float) -> list[Active]:
        if not ready:
            return []
        by_id = {task.id: task for task in ready}
        plan = self._plan(ready)
        for task_id in plan.never_fits:
            task = by_id[task_id]
            why = self._never_fits(task)
            self._move(task, TaskState.FAILED, now, why, None, reason=why)
            self.reporter.message(f"{task.name}: cannot run anywhere: {why}")
        claimed = []
        for placement in plan.placements:
            task = by_id[placement.task_id]
            spec = self.specs[task.spec]
            n = task.attempts + 1
            running = self._move(
                task, TaskState.RUNNING, now, f"attempt {n} on {placement.node}", n, attempts=n
            )
            attempt_id = self.store.add_attempt(running, n, placement.node, spec.runtime, now, task.memory)
            launch = launch_for(
                self.paths, self.run, spec, running, n, attempt_id, self.job.workdir, task.memory
            )
            gpus = self._gpus_for(placement.node, spec.gpus)
            if gpus:
                env = {**launch.env, **gpu_env(gpus)}
                launch = dataclasses.replace(launch, env=env, gpus=gpus)
            deadline = now + spec.timeout if spec.timeout else None
            act = Active(
                attempt_id,
                running,
                spec,
                self.executors[(placement.node, spec.runtime)],
                launch,
                placement.node,
                deadline,
                gpus=gpus,
            )
            self.active[attempt_id] = act
            claimed.append(act)
        return claimed

    def _never_fits(self, task: TaskRow) -> str:
        spec = self.specs[task.spec]
        hosts = [n for n in self.nodes if (n.name, spec.runtime) in self.executors]
        if not hosts:
            return f"needs runtime {spec.runtime!r}, which no node offers"
        if spec.nodes and not any(n.name in spec.nodes for n in hosts):
            known = ", ".join(n.name for n in hosts)
            return (
                f"may only run on {', '.join(spec.nodes)}, not among this run's nodes ({known}): "
                "a node that did not answer when the run started is left out"
            )
        if spec.gpus > max(len(n.gpus) for n in hosts):
            return f"needs {spec.gpus} GPUs; no node has that many"
        big = max(hosts, key=lambda n: (n.memory, n.cpus))
        return (
            f"needs {spec.cpus:g} cpus and {format_size(task.memory)} memory; the largest node "
            f"({big.name}) has {big.cpus:g} cpus and {format_size(big.memory)}"
        )

    def _start(self, claimed: list[Active], now: float) -> bool:
        """Starts claimed attempts; True when one that could not start unblocked others."""
        started: list[tuple[Active, Started | str]] = []
        for act in claimed:
            try:
                started.append((act, act.executor.start(act.launch)))
            except LaunchError as exc:
                started.append((act, str(exc)))
        if not started:
            return False
        with self.store.tx():
            for act, result in started:
                if isinstance(result, Started):
                    self.store.attempt_started(act.attempt_id, result)
                    self.reporter.attempt_started(act.task.name, act.task.attempts, act.node)
                else:
                    del self.active[act.attempt_id]
                    self._record_end(act, Facts(None, None, now, start_error=result), now)
            return self.deps.settle(now)

    # -- stopping -----------------------------------------------------------------------

    def _enforce_stops(self, now: float) -> None:
        for act in self.active.values():
            if act.stop is None and (self.stop or (act.deadline is not None and now >= act.deadline)):
                act.stop = self.stop or Stop.TIMEOUT
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
        if self.stop is None and self._slots() > 0 and self.counts[TaskState.READY]:
            ready_at = self.store.next_ready_time(self.run.id)
            if ready_at is not None and ready_at > now:
                times.append(ready_at)
        times += [ex.next_sample_at for ex in self.executors.values() if ex.next_sample_at != math.inf]
        if self.active and any(ex.needs_poll for ex in self.executors.values()):
            times.append(now + FALLBACK_POLL)
        times.extend(t for ex in self.executors.values() if (t := ex.wake_at()) is not None)
        if not self.active and self.counts[TaskState.READY] and not times:
            times.append(now + 1.0)  # never sleep for good while work is queued
        return min(times) if times else None

    def _finish(self, now: float) -> RunState:
        if self.stop is Stop.SHUTDOWN:
            state = RunState.INTERRUPTED
        elif self.stop is Stop.CANCEL:
            state = RunState.CANCELLED
        elif self.counts[TaskState.SUCCEEDED] == sum(self.counts.values()):
            state = RunState.SUCCEEDED
        else:
            state = RunState.FAILED
        with self.store.tx():
            if self.stop is Stop.CANCEL:
                for task in self.store.tasks(self.run.id, [TaskState.READY, TaskState.WAITING]):
                    self._move(
                        task,
                        TaskState.CANCELLED,
                        now,
                        "run cancelled",
                        None,
                        reason="run cancelled",
                    )
            self.store.set_run_state(self.run.id, state, now, f"run {state.value}")
        return state
