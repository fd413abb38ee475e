"""The v2 code that needs no controller, on a real cgroup2 mount even on a v1 host.

Hybrid hosts (this one) mount an empty cgroup2 hierarchy at /sys/fs/cgroup/unified: no
memory or cpu controller, but the core files are real: cgroup.procs, cgroup.kill,
cpu.stat. Entry, kill, CPU time and removal of V2Cgroup are checked there against the
kernel; limits and OOM need the controllers and live in test_cgroup_v2.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from labrun.cgroup.v2 import V2Cgroup


def cgroup2_mount() -> str | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype == "cgroup2" and os.access(fields[4], os.W_OK):
                return fields[4]
    return None


MOUNT = cgroup2_mount()
pytestmark = pytest.mark.skipif(MOUNT is None, reason="no writable cgroup2 mount here")


@pytest.fixture
def cg() -> Iterator[V2Cgroup]:
    assert MOUNT is not None
    with open("/proc/self/cgroup") as f:
        own = next(line[3:].strip() for line in f if line.startswith("0::"))
    # Beside our own cgroup, so moving in and back stays within one delegated subtree.
    path = os.path.join(MOUNT, os.path.dirname(own).lstrip("/"), f"labrun-core-{os.getpid()}")
    os.mkdir(path)
    made = V2Cgroup(path, MOUNT)
    yield made
    made.remove()


def test_core_entry_kill_cpu_time_and_removal(cg: V2Cgroup) -> None:
    with open("/proc/self/cgroup") as f:
        before = f.read()
    with cg.entered():
        proc = subprocess.Popen(
            ["sh", "-c", "cat /proc/self/cgroup; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"],
            stdout=subprocess.PIPE,
        )
    with open("/proc/self/cgroup") as f:
        assert f.read() == before
    out, _ = proc.communicate(timeout=30)
    assert f"0::/{os.path.relpath(cg.path, MOUNT)}" in out.decode()
    cpu = cg.usage().cpu_seconds  # cpu.stat usage_usec exists without the cpu controller
    assert cpu is not None and cpu > 0.001

    with cg.entered():
        sleeper = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30"])
    deadline = time.monotonic() + 5
    while len(cg.pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    cg.kill(signal.SIGKILL)  # cgroup.kill where the kernel has it (5.14+)
    assert sleeper.wait(timeout=10) == -signal.SIGKILL
    cg.remove()
    assert not os.path.exists(cg.path)
