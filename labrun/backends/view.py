"""`labrun nodes`: every node's row from its backend, with the attempts running there now."""

from __future__ import annotations

import dataclasses
from typing import Any

from labrun.backends.registry import node_rows, waiting
from labrun.config.lab import LabConfig
from labrun.reads import Reads
from labrun.rows import AttemptRow, TaskRow
from labrun.states import RunState, TaskState
from labrun.store import Store
from labrun.units import format_size


def node_states(lab: LabConfig, store: Store | None) -> list[dict[str, Any]]:
    """Every node: backend, state, resources (total and in use), GPUs, runtimes, running attempts."""
    running = _running_attempts(store)
    rows = []
    for node in node_rows(lab):
        row = dataclasses.asdict(node)
        row["gpus"], row["runtimes"] = list(node.gpus), [str(r) for r in node.runtimes]
        mine = running.get(node.name, [])
        row["running"] = [f"run {a['run']} {a['task']} #{a['attempt']}" for a in mine]
        row["cpus_used"] = sum(a["cpus"] for a in mine)
        row["memory_used"] = sum(a["memory"] for a in mine)
        rows.append(row)
    return rows


def _running_attempts(store: Store | None) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    if store is None:
        return out
    for run in store.runs(limit=50):
        if run.state is not RunState.RUNNING:
            continue
        for attempt in store.open_attempts(run.id):
            task = store.task(attempt.task_id)
            out.setdefault(attempt.node, []).append(
                {
                    "run": run.id,
                    "task": task.name,
                    "attempt": attempt.n,
                    "cpus": 0.0,
                    "memory": attempt.memory_limit or 0,
                }
            )
    return out


def queued(
    lab: LabConfig, snap: Reads, run_id: int, task: TaskRow | None = None
) -> list[tuple[TaskRow, AttemptRow, str]]:
    """The run's (or one task's) open attempts that wait in a node's queue, with the reason
    the node gives (Slurm's Resources, Priority, QOSMaxJobsPerUserLimit...)."""
    tasks = [task] if task is not None else list(snap.tasks_in_state(run_id, TaskState.RUNNING))
    open_ = [(t, a) for t in tasks for a in snap.attempts(t.id) if a.live]
    reasons = waiting(lab, [a for _, a in open_]) if open_ else {}
    return [(t, a, reasons[a.id]) for t, a in open_ if a.id in reasons]


def render_nodes(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        total = f"{row['cpus'] or 'auto'} cpus, {format_size(row['memory']) if row['memory'] else 'auto'}"
        used = f"{len(row['running'])} running, {format_size(row['memory_used'])} reserved"
        gpus = ",".join(map(str, row["gpus"])) or "none"
        lines.append(
            f"{row['name']:<12} {row['state']:<8} {row['backend']:<6} {total}; {used}; gpus {gpus}; "
            f"runtimes {', '.join(row['runtimes'])}"
        )
        if row["error"]:
            lines.append(f"{'':<12} {row['error']}")
        lines += [f"{'':<12} {item}" for item in row["running"]]
    return "\n".join(lines)
