"""`labrun gc --older-than 30d`: forget finished runs, their rows and their logs.

Only runs that ended (succeeded, failed, cancelled) before the cut are removed; a
running or interrupted run is never touched, whatever its age, since it may be resumed.
Cgroups that dead runners of this state directory left are removed too (`orphans`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from labrun.orphans import sweep_cgroups
from labrun.paths import StatePaths
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
