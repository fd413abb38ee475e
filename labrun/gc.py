"""`labrun gc --older-than 30d`: forget finished runs, their rows and their logs; and the
orphan sweep, which `gc` and every resume run.

Only runs that ended (succeeded, failed, cancelled) before the cut are removed; a
running or interrupted run is never touched, whatever its age, since it may be resumed.
The sweep removes what this state directory's attempts left on the nodes (containers)
whose attempt is not open in a run that may go on: a runner killed after recording an
end but before removing its container, a run cancelled while its daemon was away.
Cgroups that dead runners of this state directory left are removed too (`orphans`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from labrun.backends.registry import sweep_orphans
from labrun.config.lab import LabConfig
from labrun.orphans import sweep_cgroups
from labrun.paths import StatePaths
from labrun.reads import Reads
from labrun.store import Store


@dataclass(frozen=True)
class Collected:
    runs: int
    bytes: int
    cgroups: int = 0  # left by dead runners (labrun/orphans.py)


def _size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def collect(store: Store, paths: StatePaths, older_than: float, now: float) -> Collected:
    """Remove finished runs that ended more than `older_than` seconds before `now`."""
    runs, freed = 0, 0
    for run in store.old_finished_runs(now - older_than):
        with store.tx():
            store.delete_run(run.id)  # rows first: a crash leaves a log directory, not a dangling row
        directory = paths.run_dir(run.id)
        freed += _size(directory)
        shutil.rmtree(directory, ignore_errors=True)
        runs += 1
    return Collected(runs, freed, len(sweep_cgroups(store)))


def sweep_leftovers(store: Reads, lab: LabConfig) -> tuple[list[str], list[str]]:
    """Remove what attempts of this state directory left on its nodes and no open attempt
    owns; returns (what was removed, one line each; why some backend could not look)."""
    return sweep_orphans(lab, store.live_attempt_ids)
