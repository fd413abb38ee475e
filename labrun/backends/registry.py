"""The one list of backends, and everything that goes through all of them.

`BACKENDS` is the only place that names a backend: labrun.toml's `[nodes.NAME]` tables
are parsed by the backend that owns them, and `connect`, `checks`, `node_rows` and
`stop_attempts` ask each backend about its own nodes. Adding a backend is one
`register(...)` (or one entry below); the runner, app and CLI do not change.

Which backend owns a table: its `backend = "NAME"` key if it has one, else the first
backend that `claims` it (local: the table named `local`; ssh: a table with `ssh`; slurm:
a table with `slurm`).
Nodes come in backend order, so the local node is first (task 0 runs there).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from labrun.backends.base import Backend, Connection, NodeControl, NodeRow, stop_attempts
from labrun.backends.local import LocalBackend
from labrun.backends.slurm import SlurmBackend
from labrun.backends.ssh import SshBackend
from labrun.config.job import JobSpec
from labrun.config.lab import LabConfig, NodeConfig
from labrun.config.labschema import NODE_COMMON, lab_json_schema, unknown_hint, validate_table
from labrun.config.schema import NAME_RE
from labrun.executors.base import Waker
from labrun.preflight.core import Check
from labrun.rows import AttemptRow

BACKENDS: list[Backend] = [LocalBackend(), SshBackend(), SlurmBackend()]

Problem = Callable[..., None]


def register(backend: Backend) -> None:
    """Add a backend after the built-in ones (a plugin; a test's own backend)."""
    if any(b.name == backend.name for b in BACKENDS):
        raise ValueError(f"a backend named {backend.name!r} is already registered")
    BACKENDS.append(backend)


def unregister(name: str) -> None:
    BACKENDS[:] = [b for b in BACKENDS if b.name != name]


def backend_named(name: str) -> Backend | None:
    return next((b for b in BACKENDS if b.name == name), None)


def _owner(name: str, table: Mapping[str, Any], problem: Problem) -> Backend | None:
    where = ("nodes", name)
    names = [b.name for b in BACKENDS]
    chosen = table.get("backend")
    if chosen is not None:
        found = backend_named(chosen) if isinstance(chosen, str) else None
        if found is None:
            close = difflib.get_close_matches(str(chosen), names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the backends are: {', '.join(names)}"
            problem((*where, "backend"), f"unknown backend {chosen!r}", hint)
        return found
    found = next((b for b in BACKENDS if b.claims(name, table)), None)
    if found is None:
        every = sorted({k.name for b in BACKENDS for k in b.keys})
        close = [unknown_hint(key, every) for key in table if key not in every]
        hint = "; ".join(h for h in close if h.startswith("did you mean")) or (
            f'add ssh = "user@host" for a machine reached over SSH, or backend = "NAME" ({", ".join(names)})'
        )
        problem(where, f"[nodes.{name}] does not say which backend runs it", hint)
    return found


def _parse_one(name: str, table: object, base: str, problem: Problem) -> NodeConfig | None:
    where = ("nodes", name)
    if not isinstance(table, dict):
        problem(where, f"expected a table [nodes.{name}]")
        return None
    if not NAME_RE.match(name):
        problem(where, f"node name {name!r} must use only letters, digits, '-' and '_'")
    backend = _owner(name, table, problem)
    if backend is None:
        return None
    if backend.names is not None and name not in backend.names:
        allowed = ", ".join(f"[nodes.{n}]" for n in backend.names)
        problem(where, f"the {backend.name} backend has only {allowed}", f"rename [nodes.{name}]")
        return None
    missing = [key for key in backend.required if key not in table]
    for key in missing:
        wanted = next(k for k in backend.keys if k.name == key)
        problem(where, f"[nodes.{name}] needs {key}: {wanted.help}")
    values = validate_table(
        backend.keys, table, where, problem, base, backend.name, ignore=(NODE_COMMON.name,)
    )
    if missing:
        return None
    node = backend.node(name, values)
    for key, message, hint in backend.problems(node):
        problem((*where, key), message, hint)
    return node


def parse_nodes(raw: object, base: str, problem: Problem) -> tuple[NodeConfig, ...]:
    """Every node of labrun.toml's `nodes` table (and those that need no table), in backend order."""
    if not isinstance(raw, dict):
        problem(("nodes",), "expected tables [nodes.NAME]")
        raw = {}
    tables: dict[str, Any] = {name: {} for b in BACKENDS for name in b.implicit}
    tables.update(raw)
    found = [node for name, table in tables.items() if (node := _parse_one(name, table, base, problem))]
    order = {b.name: i for i, b in enumerate(BACKENDS)}
    return tuple(sorted(found, key=lambda n: order[n.backend]))


def _by_backend(nodes: Sequence[NodeConfig]) -> Iterator[tuple[Backend, list[NodeConfig]]]:
    for backend in BACKENDS:
        mine = [n for n in nodes if n.backend == backend.name]
        if mine:
            yield backend, mine


def connect(lab: LabConfig, waker: Waker) -> Connection:
    """Executors and node specs of every node that answers; a message for each that does not."""
    connection = Connection()
    for backend, nodes in _by_backend(lab.nodes):
        connection.merge(backend.connect(lab, nodes, waker))
    return connection


def checks(lab: LabConfig, job: JobSpec) -> list[Check]:
    """Every backend's preflight checks for `job` on its nodes."""
    return [check for backend, nodes in _by_backend(lab.nodes) for check in backend.checks(lab, nodes, job)]


def node_rows(lab: LabConfig) -> list[NodeRow]:
    return [row for backend, nodes in _by_backend(lab.nodes) for row in backend.rows(lab, nodes)]


def _each_node(
    lab: LabConfig, attempts: Sequence[AttemptRow], act: Callable[[NodeControl, list[AttemptRow]], None]
) -> list[str]:
    """`act` on each node's attempts through its backend's control; a message per node that failed."""
    messages: list[str] = []
    for name in dict.fromkeys(a.node for a in attempts):
        mine = [a for a in attempts if a.node == name]
        node = lab.node(name)
        backend = backend_named(node.backend) if node is not None else None
        if node is None or backend is None:
            ids = ", ".join(str(a.id) for a in mine)
            messages.append(f"node {name} is no longer in labrun.toml: stop attempt(s) {ids} there by hand")
            continue
        try:
            control = backend.control(lab, node)
        except Exception as exc:  # one unreachable node must not keep the others running
            messages.append(f"node {name}: {exc}")
            continue
        try:
            act(control, mine)
        except Exception as exc:
            messages.append(f"node {name}: {exc}")
        finally:
            control.close()
    return messages


def stop_run_attempts(
    lab: LabConfig, attempts: Sequence[AttemptRow], grace: float
) -> tuple[list[int], list[str]]:
    """Stop attempts where they run, without a runner (TERM, KILL after `grace`, sweep).

    Returns the ids that were running and one message per node that could not be reached."""
    stopped: list[int] = []
    messages = _each_node(
        lab, attempts, lambda control, mine: stopped.extend(stop_attempts(control, mine, grace))
    )
    return stopped, messages


def sweep_attempts(lab: LabConfig, attempts: Sequence[AttemptRow]) -> tuple[list[str], list[str]]:
    """Leave nothing of these attempts on any node (KILL; containers and cgroups removed).

    Returns what was found and one message per node that could not be reached."""
    found: list[str] = []
    messages = _each_node(lab, attempts, lambda control, mine: found.extend(control.sweep(mine)))
    return found, messages


def waiting(lab: LabConfig, attempts: Sequence[AttemptRow]) -> dict[int, str]:
    """Why each open attempt that waits in a node's queue has not started, by attempt id. A
    backend that cannot be asked says nothing (this is for `status` and `why`, read-only)."""
    found: dict[int, str] = {}
    for name in dict.fromkeys(a.node for a in attempts):
        node = lab.node(name)
        backend = backend_named(node.backend) if node is not None else None
        if node is None or backend is None:
            continue
        try:
            found.update(backend.waiting(lab, node, [a for a in attempts if a.node == name]))
        except Exception:  # a node that does not answer has nothing to say here
            continue
    return found


def sweep_orphans(lab: LabConfig, live: Callable[[], Collection[int]]) -> tuple[list[str], list[str]]:
    """Remove, on every node, what this state directory's attempts left and no open attempt
    owns (`Backend.sweep_orphans`). Returns what was removed and one message per backend
    that could not look."""
    found: list[str] = []
    messages: list[str] = []
    for backend, nodes in _by_backend(lab.nodes):
        try:
            found += backend.sweep_orphans(lab, nodes, live)
        except Exception as exc:  # one unreachable daemon must not stop a resume
            messages.append(f"{backend.name} nodes: leftovers were not looked for: {exc}")
    return found, messages


def lab_schema() -> dict[str, Any]:
    """The JSON Schema of labrun.toml, from the lab's and every backend's key declarations."""
    fixed = {name: b.name for b in BACKENDS for name in (b.names or ())}
    return lab_json_schema(BACKENDS, fixed)
