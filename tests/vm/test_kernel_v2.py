"""The cgroup v2 kernel interface itself, driven with plain file writes.

These tests pin down the kernel behaviour labrun's v2 layer relies on (memory.max
with swap off kills, memory.events counts the kill, memory.peak stops at the limit,
cpu.max takes a quota, an empty cgroup can be removed and a busy one cannot). They
need a writable cgroup2 hierarchy whose root offers the memory and cpu controllers:
`make test-vm` boots a real kernel for them; elsewhere they skip and say why.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.cgroup_v2

LIMIT = 32 * 1024 * 1024
# dd allocates one 100 MB block and fills it from /dev/zero: three times the limit.
ALLOCATE = ["dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"]


def _v2_parent() -> tuple[Path | None, str]:
    """The first cgroup2 mount we may create children in, or why there is none."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    points = [Path(f.split()[1]) for f in mounts if f.split()[2] == "cgroup2"]
    if not points:
        return None, "no cgroup2 file system is mounted"
    reasons = []
    for point in points:
        offered = (point / "cgroup.controllers").read_text().split()
        if not {"memory", "cpu"} <= set(offered):
            reasons.append(f"{point} offers controllers {offered or 'none'}, not memory+cpu")
        elif not os.access(point, os.W_OK):
            reasons.append(f"{point} is not writable by uid {os.getuid()}")
        else:
            return point, ""
    return None, "; ".join(reasons) + " (run `make test-vm` for a real v2 kernel)"


def _kv(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file such as memory.events, as a dict."""
    pairs = (line.split() for line in path.read_text().splitlines())
    return {key: int(value) for key, value in pairs}


def _run_inside(group: Path, shell: str) -> subprocess.CompletedProcess[bytes]:
    """Run `shell` with its shell already moved into `group` (writing 0 moves the writer)."""
    script = f'echo 0 > "$1/cgroup.procs" || exit 99\n{shell}'
    return subprocess.run(["sh", "-c", script, "sh", str(group)], capture_output=True, timeout=60)


@pytest.fixture
def group() -> Iterator[Path]:
    parent, why = _v2_parent()
    if parent is None:
        pytest.skip(why)
    (parent / "cgroup.subtree_control").write_text("+memory +cpu")
    path = parent / f"labrun-vmtest-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    if path.exists():
        for pid in (path / "cgroup.procs").read_text().split():
            os.kill(int(pid), 9)
        path.rmdir()


def _limit_memory(group: Path) -> None:
    (group / "memory.max").write_text(str(LIMIT))
    (group / "memory.swap.max").write_text("0")


def test_controllers_are_enabled_for_the_child(group: Path) -> None:
    assert {"memory", "cpu"} <= set((group / "cgroup.controllers").read_text().split())
    assert (group / "memory.max").read_text().strip() == "max"


def test_allocation_over_memory_max_is_oom_killed(group: Path) -> None:
    _limit_memory(group)
    assert int((group / "memory.max").read_text()) == LIMIT

    done = _run_inside(group, "exec " + " ".join(ALLOCATE))

    assert done.returncode == -9, done.stderr
    assert _kv(group / "memory.events")["oom_kill"] >= 1
    peak = int((group / "memory.peak").read_text())
    assert 0.75 * LIMIT <= peak <= LIMIT, f"memory.peak {peak} against a limit of {LIMIT}"


def test_child_oom_is_counted_while_the_parent_exits_zero(group: Path) -> None:
    _limit_memory(group)

    done = _run_inside(group, " ".join(ALLOCATE) + "\nexit 0")

    assert done.returncode == 0, done.stderr
    assert _kv(group / "memory.events")["oom_kill"] >= 1


def test_no_oom_under_the_limit(group: Path) -> None:
    _limit_memory(group)

    done = _run_inside(group, "exec dd if=/dev/zero of=/dev/null bs=4M count=4")

    assert done.returncode == 0, done.stderr
    assert _kv(group / "memory.events")["oom_kill"] == 0


def test_cpu_max_takes_a_quota(group: Path) -> None:
    assert (group / "cpu.max").read_text().split() == ["max", "100000"]

    (group / "cpu.max").write_text("50000 100000")

    assert (group / "cpu.max").read_text().split() == ["50000", "100000"]
    assert "usage_usec" in _kv(group / "cpu.stat")


def test_rmdir_refuses_a_busy_cgroup_and_removes_an_empty_one(group: Path) -> None:
    sleeper = subprocess.Popen(["sh", "-c", 'echo 0 > "$1/cgroup.procs" && exec sleep 60', "sh", str(group)])
    try:
        deadline = time.monotonic() + 10
        while not (group / "cgroup.procs").read_text().split():
            assert sleeper.poll() is None, "the sleeper could not join the cgroup"
            assert time.monotonic() < deadline, "the sleeper never showed up in cgroup.procs"
            time.sleep(0.05)
        with pytest.raises(OSError) as busy:
            group.rmdir()
        assert busy.value.errno == errno.EBUSY
    finally:
        sleeper.kill()
        sleeper.wait()

    group.rmdir()

    assert not group.exists()
