"""The one place that changes a run's state: store rows, in-memory counts and events, together.

Every task and attempt transition goes through a typed operation here: a guarded
`UPDATE … WHERE state = ?` whose row count the store checks, the counts the runner and
the progress line read, and an event row with its cause (`status --events` shows them).
Events are buffered and written in one statement when the ledger's transaction ends, so
a tick still costs at most two commits.

The ledger also holds the current row of every task with an attempt in flight and the
attempts of its current try (`Live`): decisions read those, never a copy taken when the
attempt was claimed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from labrun.decisions import (
    AttemptView,
    Cancel,
    Fail,
    Instruction,
    Record,
    Requeue,
    Retry,
    Succeed,
    Supersede,
    Wait,
)
from labrun.model import Facts, Runtime, Started
from labrun.rows import AttemptRow, TaskRow
from labrun.states import AttemptState, Outcome, Subject, TaskState
from labrun.store import NewEvent, Store
from labrun.unblock import UnblockPlan


@dataclass
class Live:
    """A task with at least one attempt in flight, as it is now."""

    task: TaskRow
    attempts: dict[int, AttemptView] = field(default_factory=dict)  # of its current try

    def live_attempts(self) -> list[AttemptView]:
        return [a for a in self.attempts.values() if a.state.live]


class Ledger:
    def __init__(self, store: Store, run_id: int) -> None:
        self.store, self.run_id = store, run_id
        self._counts = {state: 0 for state in TaskState}
        self._counts.update(store.counts(run_id))
        self.counts: Mapping[TaskState, int] = types.MappingProxyType(self._counts)
        self.live: dict[int, Live] = {}  # task id -> its row and attempts in flight
        self._events: list[NewEvent] = []
        self._finished: list[TaskRow] = []  # reached a terminal state; for the unblocker

    @contextlib.contextmanager
    def tx(self) -> Iterator[None]:
        """The store's transaction; the buffered events are written just before it commits."""
        with self.store.tx():
            try:
                yield
                if self._events:
                    self.store.add_events(self._events)
            finally:
                self._events.clear()

    def take_finished(self) -> list[TaskRow]:
        """Tasks that reached a terminal state since the last call, as they are now."""
        done, self._finished = self._finished, []
        return done

    # -- tasks ----------------------------------------------------------------------------

    def _task(self, old: TaskRow, new: TaskRow, now: float, cause: str, attempt: int | None) -> TaskRow:
        self.store.update_task(old, new)
        self._counts[old.state] -= 1
        self._counts[new.state] += 1
        self._event(Subject.TASK, old.id, attempt, now, old.state.value, new.state.value, cause)
        if new.state.terminal:
            self._finished.append(new)
        live = self.live.get(old.id)
        if live is not None:
            live.task = new
        return new

    def _event(
        self,
        subject: Subject,
        task_id: int,
        attempt: int | None,
        now: float,
        old: str | None,
        new: str,
        cause: str,
    ) -> None:
        self._events.append((self.run_id, task_id, attempt, now, old, new, cause, subject.value))

    def promote(self, task: TaskRow, now: float) -> None:
        self._task(task, dataclasses.replace(task, state=TaskState.READY), now, "dependencies met", None)

    def skip(self, task: TaskRow, reason: str, now: float) -> None:
        self._task(task, dataclasses.replace(task, state=TaskState.SKIPPED, reason=reason), now, reason, None)

    def cancel(self, task: TaskRow, reason: str, now: float) -> None:
        new = dataclasses.replace(task, state=TaskState.CANCELLED, reason=reason)
        self._task(task, new, now, reason, None)

    def never_fits(self, task: TaskRow, why: str, now: float) -> None:
        self._task(task, dataclasses.replace(task, state=TaskState.FAILED, reason=why), now, why, None)

    def requeue(self, task: TaskRow, cause: str, now: float) -> None:
        """A running task with nothing in flight any more runs again at once, uncounted."""
        new = dataclasses.replace(task, state=TaskState.READY, not_before=0.0)
        self._task(task, new, now, cause, None)
        self.live.pop(task.id, None)

    def apply_unblock(self, plan: UnblockPlan, now: float) -> None:
        """What finished tasks unblock: fan-out rows first, then promotions and skips."""
        if plan.add:
            self.store.add_tasks(self.run_id, plan.add)
            self.store.note_tasks(self.run_id, plan.notes, now)
            self._counts[TaskState.WAITING] += len(plan.add)
        if plan.unmade:
            self.store.add_tasks(self.run_id, [row for row, _ in plan.unmade])
            self.store.set_reasons(self.run_id, [(row[1], why) for row, why in plan.unmade])
            self.store.note_tasks(self.run_id, [(row[1], why) for row, why in plan.unmade], now)
            self._counts[TaskState.SKIPPED] += len(plan.unmade)
        for task in plan.promote:
            self.promote(task, now)
        for task, reason in plan.skip:
            self.skip(task, reason, now)

    # -- attempts -------------------------------------------------------------------------

    def claim(self, task: TaskRow, node: str, runtime: Runtime, now: float) -> tuple[TaskRow, int]:
        """ready -> running with a new attempt, launching; its memory is the task's now."""
        n = task.attempts + 1
        running = dataclasses.replace(task, state=TaskState.RUNNING, attempts=n)
        self._task(task, running, now, f"attempt {n} on {node}", n)
        attempt_id = self.store.add_attempt(running, n, node, runtime, now, task.memory)
        self.live[task.id] = Live(
            running, {attempt_id: AttemptView(attempt_id, n, node, AttemptState.LAUNCHING)}
        )
        return running, attempt_id

    def claim_extra(
        self, task_id: int, node: str, runtime: Runtime, now: float, why: str
    ) -> tuple[TaskRow, int]:
        """Another attempt of a task that is running, beside the ones in flight."""
        live = self.live[task_id]
        old = live.task
        n = old.attempts + 1
        new = dataclasses.replace(old, attempts=n)
        self.store.update_running(old, new)
        live.task = new
        attempt_id = self.store.add_attempt(new, n, node, runtime, now, new.memory)
        live.attempts[attempt_id] = AttemptView(attempt_id, n, node, AttemptState.LAUNCHING)
        self._event(Subject.ATTEMPT, task_id, n, now, None, AttemptState.LAUNCHING.value, f"on {node}: {why}")
        return new, attempt_id

    def started(self, started: Sequence[tuple[int, int, Started]], now: float) -> None:
        """launching -> running for (task id, attempt id, how to find it again) each."""
        if not started:
            return
        self.store.attempts_started([(attempt_id, s) for _, attempt_id, s in started])
        for task_id, attempt_id, s in started:
            view = self._set_attempt(task_id, attempt_id, AttemptState.RUNNING)
            how = f"pid {s.pid}" if s.pid is not None else (s.ref or s.mechanism)
            self._event(Subject.ATTEMPT, task_id, view.n, now, "launching", "running", f"started ({how})")

    def adopt(self, task: TaskRow, attempt: AttemptRow, now: float) -> None:
        """An attempt an earlier runner started and that still runs is ours now."""
        self.store.adopt_attempt(attempt.id, attempt.state)
        live = self.live.setdefault(task.id, Live(task))
        live.attempts[attempt.id] = AttemptView(attempt.id, attempt.n, attempt.node, AttemptState.RUNNING)
        cause = f"adopted on {attempt.node}: still running after the runner restarted"
        self._event(Subject.ATTEMPT, task.id, attempt.n, now, attempt.state.value, "running", cause)

    def abandon(self, attempt: AttemptRow, outcome: Outcome, detail: str, now: float) -> None:
        """Give up an attempt whose end nobody saw (gone after a restart, cancelled unseen)."""
        facts = Facts(None, None, now, lost=outcome is Outcome.LOST, detail=detail)
        self.store.finish_attempt(attempt.id, facts, outcome, detail, attempt.state, AttemptState.ABANDONED)
        cause = f"{outcome.value}: {detail}"
        self._event(Subject.ATTEMPT, attempt.task_id, attempt.n, now, attempt.state.value, "abandoned", cause)

    def _set_attempt(
        self, task_id: int, attempt_id: int, state: AttemptState, outcome: Outcome | None = None
    ) -> AttemptView:
        live = self.live[task_id]
        view = dataclasses.replace(live.attempts[attempt_id], state=state, outcome=outcome)
        live.attempts[attempt_id] = view
        return view

    # -- an attempt ended -----------------------------------------------------------------

    def apply_end(
        self, task_id: int, attempt_id: int, facts: Facts, instructions: Sequence[Instruction], now: float
    ) -> None:
        """Apply what `decisions.on_end` said about an attempt that ended."""
        live = self.live[task_id]
        n = live.attempts[attempt_id].n
        for ins in instructions:
            if isinstance(ins, Record):
                self._record(live, ins, facts, now)
            elif isinstance(ins, Wait):
                if ins.failures != live.task.failures:  # a counted failure beside a live sibling
                    new = dataclasses.replace(live.task, failures=ins.failures)
                    self.store.update_running(live.task, new)
                    live.task = new
            elif not isinstance(ins, Supersede):  # those the runner stops; each ends on its own
                new, cause = _task_after(live.task, ins)
                self._task(live.task, new, now, cause, n)
        if not live.live_attempts():
            del self.live[task_id]

    def _record(self, live: Live, ins: Record, facts: Facts, now: float) -> None:
        view = live.attempts[ins.attempt_id]
        self.store.finish_attempt(ins.attempt_id, facts, ins.outcome, ins.detail, view.state, ins.state)
        task_id = live.task.id
        self._event(
            Subject.ATTEMPT,
            task_id,
            view.n,
            now,
            view.state.value,
            "ended",
            f"{ins.outcome.value}: {ins.detail}",
        )
        self._event(Subject.ATTEMPT, task_id, view.n, now, "ended", ins.state.value, ins.cause)
        self._set_attempt(task_id, ins.attempt_id, ins.state, ins.outcome)


def _task_after(task: TaskRow, ins: Succeed | Retry | Fail | Cancel | Requeue) -> tuple[TaskRow, str]:
    """The task's row after an instruction that moves it, and the event's cause."""
    if isinstance(ins, Succeed):
        return dataclasses.replace(task, state=TaskState.SUCCEEDED, reason=None), ins.cause
    if isinstance(ins, Retry):
        d = ins.decision
        new = dataclasses.replace(
            task,
            state=TaskState.READY,
            not_before=d.not_before,
            failures=ins.failures,
            memory=d.memory,
            reason=ins.reason,
        )
        return new, ins.cause
    if isinstance(ins, Fail):
        return dataclasses.replace(
            task, state=TaskState.FAILED, failures=ins.failures, reason=ins.reason
        ), ins.cause
    if isinstance(ins, Cancel):
        return dataclasses.replace(task, state=TaskState.CANCELLED, reason=ins.reason), ins.reason
    return dataclasses.replace(task, state=TaskState.READY, not_before=0.0), ins.cause
