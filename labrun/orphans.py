"""What dead runners left on this machine: the cgroups of this state directory's attempts.

A cgroup serves several attempts in turn and is named after the runner that made it
(`p{pid}-{token}-{serial}`, labrun/executors/cgroup.py). When that runner died (SIGKILL,
power loss) nobody removes its idle pool nor the cgroups of attempts that ended while no
runner lived. On `--resume` (after adoption, which reads the counters of what it adopts)
and in `labrun gc`, every cgroup this state directory's attempts used is removed when its
runner is dead, no attempt that has not ended uses it, and no process is in it (an
attempt spawned into a reused cgroup just before its runner died is adopted, not killed).
Cgroups of other state directories, and of live runners, are never touched.
"""

from __future__ import annotations

import re

from labrun.cgroup import CgroupError, detect, open_existing
from labrun.liveness import labrun_alive
from labrun.store import Store

_RUNNER = re.compile(r"^p(\d+)-")


def sweep_cgroups(store: Store) -> list[str]:
    """Remove the cgroups dead runners of this state directory left; their names."""
    candidates = [name for name, in_use in store.local_cgroups() if not in_use and _runner_dead(name)]
    if not candidates:
        return []
    support = detect()
    if not support.ok:
        return []
    removed = []
    for name in candidates:
        try:
            cg = open_existing(support, name)
            # a process in it is an attempt's that the store may not know yet (spawned
            # just before its runner died, adopted by its command line): never touched
            if cg is not None and not cg.pids():
                cg.remove()
                removed.append(name)
        except CgroupError:
            continue  # busy or gone meanwhile: the next resume or gc tries again
    return removed


def _runner_dead(name: str) -> bool:
    match = _RUNNER.match(name)
    return match is not None and not labrun_alive(int(match.group(1)))
