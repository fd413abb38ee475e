"""Dependencies between task specs: the graph, cycle detection, and what a finished task unblocks.

Pure: no I/O. Dependencies are between specs (a `depends_on = ["resize"]` waits for every
`resize[i]`); task 0 (`setup`), when the job has one, is an implicit upstream of every
other spec. A dependency with `allow_failed` waits for every task of its upstream to end,
whatever the outcome, instead of skipping at the first failure. The runner keeps one
`Tracker` per run and feeds it every task that reaches a terminal state; the tracker
answers which specs may start now and which must be skipped (transitively), so nothing
is ever left waiting.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

SETUP = "setup"
UNMADE = "so none were made"  # ends the reason of a fan-out whose task 0 never made its manifest


def upstream_map(specs: Iterable[tuple[str, Sequence[str]]], has_setup: bool) -> dict[str, tuple[str, ...]]:
    """spec name -> the specs it waits for, with the implicit dependency on task 0."""
    graph: dict[str, tuple[str, ...]] = {}
    for name, depends_on in specs:
        implicit = (SETUP,) if has_setup and name != SETUP and SETUP not in depends_on else ()
        graph[name] = (*implicit, *dict.fromkeys(depends_on))
    return graph


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as a path that returns to its start (`[a, b, a]`), or None. Iterative DFS."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in graph:
        if state.get(root):
            continue
        path: list[str] = [root]
        stack: list[Iterator[str]] = [iter(graph.get(root, ()))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt) and nxt in graph:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(graph[nxt]))
    return None


def describe_cycle(cycle: Sequence[str]) -> str:
    return " → ".join(cycle)


# A skipped task's reason names its upstream task first, so `why` can read it back.
_SKIP_RE = re.compile(r"^upstream task (\S+) ")


def skip_reason(upstream_task: str, how: str) -> str:
    return f"upstream task {upstream_task} {how}"


def upstream_of(reason: str | None) -> list[str]:
    match = _SKIP_RE.match(reason or "")
    return [match.group(1)] if match else []


@dataclass
class _SpecProgress:
    remaining: int | None  # tasks not terminal yet; None: not created yet (a fan-out over task 0)
    failed: str | None = None  # the first task that did not succeed, and how
    decided: bool = False  # promoted or skipped already


@dataclass(frozen=True)
class Plan:
    """What the runner does now: `promote` waiting tasks of these specs to ready; skip
    the waiting tasks of `skip` (spec -> reason). Both are already transitive."""

    promote: tuple[str, ...] = ()
    skip: Mapping[str, str] = field(default_factory=dict)


class Tracker:
    """Per-spec progress of one run. `created`/`finished` return what that unblocks."""

    def __init__(
        self, graph: Mapping[str, Sequence[str]], lenient: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        self.graph = graph
        # spec -> the upstream specs it waits for whatever their outcome (allow_failed)
        self.lenient = {name: frozenset(ups) for name, ups in (lenient or {}).items()}
        self.downstream: dict[str, list[str]] = {name: [] for name in graph}
        for name, ups in graph.items():
            for up in ups:
                self.downstream.setdefault(up, []).append(name)
        self.progress: dict[str, _SpecProgress] = {name: _SpecProgress(None) for name in graph}

    def load(self, spec: str, remaining: int, failed: str | None, started: bool) -> None:
        """The state found in the store (a new run, or a resumed one). `started`: some of
        its tasks left `waiting` already, so it was decided before."""
        prog = self.progress[spec]
        prog.remaining, prog.failed, prog.decided = remaining, failed, started

    def initial(self) -> Plan:
        """What can be decided from the loaded state alone (specs with no upstream, resumes)."""
        return self._settle(list(self.graph))

    def created(self, spec: str, count: int) -> Plan:
        self.progress[spec].remaining = count
        return self._settle([spec, *self.downstream.get(spec, ())])

    def finished(self, spec: str, task: str, ok: bool, how: str) -> Plan:
        prog = self.progress[spec]
        if prog.remaining is not None:
            prog.remaining -= 1
        if not ok and prog.failed is None:
            prog.failed = skip_reason(task, how)
        return self._settle(self.downstream.get(spec, []))

    def failed_spec(self, spec: str, why: str) -> Plan:
        """A spec that can never get its tasks (e.g. task 0's manifest is unreadable)."""
        prog = self.progress[spec]
        prog.remaining, prog.failed, prog.decided = 0, why, True
        return self._settle(self.downstream.get(spec, []))

    def _settle(self, candidates: list[str]) -> Plan:
        promote: list[str] = []
        skip: dict[str, str] = {}
        queue = list(candidates)
        while queue:
            name = queue.pop(0)
            prog = self.progress[name]
            if prog.decided:
                continue
            ups = [self.progress[u] for u in self.graph[name]]
            tolerated = self.lenient.get(name, frozenset())
            failure = next(
                (
                    self.progress[u].failed
                    for u in self.graph[name]
                    if u not in tolerated and self.progress[u].failed
                ),
                None,
            )
            if failure is not None:
                prog.decided, prog.failed = True, failure
                prog.remaining = 0
                skip[name] = failure
                queue.extend(self.downstream.get(name, ()))
            elif all(u.remaining == 0 for u in ups):
                prog.decided = True
                promote.append(name)
                if prog.remaining == 0:  # nothing to run (an empty manifest): done already
                    queue.extend(self.downstream.get(name, ()))
        return Plan(tuple(promote), skip)

    def complete(self, spec: str) -> bool:
        return self.progress[spec].remaining == 0
