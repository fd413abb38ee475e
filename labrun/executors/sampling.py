"""Resident memory of process trees, for runtimes without a kernel high-water mark.

One pass over the process table per sampling round finds every attempt's descendants,
so the cost does not grow with the number of attempts sampled (psutil reads /proc).
A tree's size is the sum of its processes' RSS: shared pages count more than once, so
it overstates a little, which errs on the safe side for the next attempt's memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

SAMPLE_AFTER = 1.0  # seconds an attempt runs before it is first sampled
SAMPLE_EVERY = 1.0  # seconds between samples of one executor's attempts


def _psutil() -> Any:
    import psutil  # here, not at the top: only attempts that run over a second need it

    return psutil


def _children_map() -> dict[int, list[int]]:
    # /proc/N/stat read raw, not psutil.process_iter: 3.7 ms -> about 1 ms a round for
    # 123 processes, which is most of what a runner costs while its attempts run
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
            try:
                stat = os.read(fd, 1024)
            finally:
                os.close(fd)
        except OSError:
            continue  # gone since the listing
        # the command name (field 2) may hold spaces and ')': the ppid is after the last ')'
        ppid = int(stat[stat.rfind(b")") + 2 :].split(None, 2)[1])
        children.setdefault(ppid, []).append(int(name))
    return children


def _rss(pid: int) -> int:
    psutil = _psutil()
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0


def tree_rss(roots: Iterable[int]) -> dict[int, int]:
    """{root pid: RSS of the root and all its descendants}; roots already gone are left out."""
    roots = list(roots)
    if not roots:
        return {}
    children = _children_map()
    psutil = _psutil()
    sizes: dict[int, int] = {}
    for root in roots:
        if not psutil.pid_exists(root):
            continue
        total, stack, seen = 0, [root], {root}
        while stack:
            pid = stack.pop()
            total += _rss(pid)
            for child in children.get(pid, ()):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        sizes[root] = total
    return sizes
