"""Memory over time of one attempt: a bounded series, and the process-tree size it samples.

Standard library only, Python >= 3.8, no internal imports: the agent on an SSH node
samples with the same code and sends the same encoding back.

A `Series` is a row of equal time buckets from the attempt's start, each the largest
size sampled in it. When a sample falls past the last of `MAX_POINTS` buckets, neighbouring
pairs are merged keeping the larger, and buckets become twice as wide: the series never
holds more than `MAX_POINTS` values however long the attempt runs, and a peak survives every
merge. A bucket no sample fell in (the runner was busy) is None.

Encoded (what the store keeps, one text per attempt):

    {"every": 2.0, "kib": [null, 51200, 102400, ...]}

bucket i covers [i * every, (i + 1) * every) seconds after the attempt started; sizes in
KiB, rounded up, so the text stays near 1.5 KB when full.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

MAX_POINTS = 200
FIRST_EVERY = 1.0  # seconds per bucket until the series first fills
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Series:
    """The sampled sizes of one attempt, in at most MAX_POINTS buckets."""

    def __init__(self, started: float, every: float = FIRST_EVERY) -> None:
        self.started = started
        self.every = every
        self.values: list[int | None] = []  # bytes, the largest sampled in each bucket

    def add(self, now: float, size: int) -> None:
        index = max(0, int((now - self.started) // self.every))
        while index >= MAX_POINTS:
            self._halve()
            index = max(0, int((now - self.started) // self.every))
        if index >= len(self.values):
            self.values.extend([None] * (index + 1 - len(self.values)))
        held = self.values[index]
        self.values[index] = size if held is None else max(held, size)

    def _halve(self) -> None:
        merged: list[int | None] = []
        for i in range(0, len(self.values), 2):
            pair = [v for v in self.values[i : i + 2] if v is not None]
            merged.append(max(pair) if pair else None)
        self.values = merged
        self.every *= 2

    def __len__(self) -> int:
        return len(self.values)

    def encode(self) -> str | None:
        """The compact text the store keeps; None when nothing was sampled."""
        if not any(v is not None for v in self.values):
            return None
        kib = [None if v is None else -(-v // 1024) for v in self.values]
        return json.dumps({"every": self.every, "kib": kib}, separators=(",", ":"))


def decode(text: str | None) -> list[tuple[float, int]]:
    """(seconds after the start, bytes) per sampled bucket, at the bucket's middle; [] for
    none or for a text this labrun cannot read (a chart is left out, nothing fails)."""
    if not text:
        return []
    try:
        data = json.loads(text)
        every = float(data["every"])
        values: Sequence[int | None] = data["kib"]
        return [((i + 0.5) * every, int(v) * 1024) for i, v in enumerate(values) if v is not None]
    except (ValueError, KeyError, TypeError):
        return []


def _children_map() -> dict[int, list[int]]:
    # /proc/N/stat read raw: about 1 ms a round for 120 processes, psutil's walk took 3.7 ms
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = _read(f"/proc/{name}/stat")
        if stat is None:
            continue  # gone since the listing
        # the command name (field 2) may hold spaces and ')': the ppid is after the last ')'
        ppid = int(stat[stat.rfind(b")") + 2 :].split(None, 2)[1])
        children.setdefault(ppid, []).append(int(name))
    return children


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 1024)
    except OSError:
        return None
    finally:
        os.close(fd)


def rss(pid: int) -> int | None:
    """Resident bytes of one process (/proc/PID/statm), None when it is gone."""
    statm = _read(f"/proc/{pid}/statm")
    if not statm:
        return None
    return int(statm.split()[1]) * _PAGE


def tree_rss(roots: Iterable[int]) -> dict[int, int]:
    """{root pid: RSS of the root and all its descendants}; roots already gone are left out.

    One pass over the process table for all roots, so a round costs the same however many
    attempts are sampled. Shared pages count once per process: it overstates a little,
    which errs on the safe side for the next attempt's memory."""
    roots = list(roots)
    if not roots:
        return {}
    children = _children_map()
    sizes: dict[int, int] = {}
    for root in roots:
        first = rss(root)
        if first is None:
            continue
        total, stack, seen = 0, [root], {root}
        while stack:
            pid = stack.pop()
            total += (first if pid == root else rss(pid)) or 0
            for child in children.get(pid, ()):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        sizes[root] = total
    return sizes
