"""cgroup v2 on a real kernel. Marked `cgroup_v2`: the VM lane (make test-vm) boots a v2
kernel and runs `pytest -m cgroup_v2` in it; elsewhere these skip unless this machine has a
writable cgroup2 hierarchy with the memory controller. Lean on purpose: the guest is
software-emulated, so no Python child processes, only dd/sh/sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from labrun.cgroup import AttemptCgroup, Limits, create, detect, open_existing
from labrun.cgroup.common import read_text
from labrun.cgroup.v2 import V2Cgroup

MiB = 1024 * 1024
SUPPORT = detect()
pytestmark = [
    pytest.mark.cgroup_v2,
    pytest.mark.skipif(
        SUPPORT.mechanism != "cgroup-v2",
        reason=f"needs a writable cgroup2 hierarchy with memory+cpu; detected {SUPPORT.mechanism}"
        f" ({SUPPORT.reason})",
    ),
]
Make = Callable[[Limits], V2Cgroup]


@pytest.fixture
def make() -> Iterator[Make]:
    made: list[AttemptCgroup] = []

    def _make(limits: Limits) -> V2Cgroup:
        cg = create(SUPPORT, f"test-{os.getpid()}-{len(made)}", limits)
        made.append(cg)
        assert isinstance(cg, V2Cgroup)
        return cg

    yield _make
    for cg in made:
        cg.remove()


def spawn(cg: AttemptCgroup, argv: Sequence[str]) -> subprocess.Popen[bytes]:
    with cg.entered():
        return subprocess.Popen(cg.command(argv), stdout=subprocess.PIPE)


def text(cg: V2Cgroup, name: str) -> str:
    return (read_text(os.path.join(cg.path, name)) or "").strip()


def test_v2_creation_writes_memory_swap_and_cpu_limits(make: Make) -> None:
    cg = make(Limits(memory=32 * MiB, cpus=0.5))
    assert text(cg, "memory.max") == str(32 * MiB)
    if os.path.exists(os.path.join(cg.path, "memory.swap.max")):
        assert text(cg, "memory.swap.max") == "0"
    assert text(cg, "cpu.max") == "50000 100000"
    parent = os.path.dirname(cg.path)
    assert {"memory", "cpu"} <= set(text(V2Cgroup(parent), "cgroup.subtree_control").split())


def test_v2_oom_kill_is_read_from_memory_events(make: Make) -> None:
    cg = make(Limits(memory=32 * MiB))
    proc = spawn(cg, ["dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"])
    assert proc.wait(timeout=60) == -signal.SIGKILL
    usage = cg.usage()
    assert usage.oom_kills is not None and usage.oom_kills >= 1
    if os.path.exists(os.path.join(cg.path, "memory.peak")):
        assert usage.peak_memory is not None and 28 * MiB <= usage.peak_memory <= 32 * MiB
    else:
        assert usage.peak_memory is None  # before Linux 5.19


def test_v2_child_oom_while_parent_exits_zero(make: Make) -> None:
    cg = make(Limits(memory=32 * MiB))
    proc = spawn(cg, ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=100M count=1; exit 0"])
    assert proc.wait(timeout=60) == 0
    oom_kills = cg.usage().oom_kills
    assert oom_kills is not None and oom_kills >= 1


def test_v2_sigkill_from_outside_is_not_oom(make: Make) -> None:
    cg = make(Limits(memory=32 * MiB))
    proc = spawn(cg, ["sleep", "30"])
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert cg.usage().oom_kills == 0


def test_v2_child_is_born_inside_and_runner_goes_home(make: Make) -> None:
    with open("/proc/self/cgroup") as f:
        before = f.read()
    cg = make(Limits(memory=32 * MiB))
    out, _ = spawn(cg, ["cat", "/proc/self/cgroup"]).communicate(timeout=30)
    assert out.decode().strip().endswith(f"/labrun/{cg.name}")
    with open("/proc/self/cgroup") as f:
        assert f.read() == before


def test_v2_cpu_quota_holds_a_busy_loop(make: Make) -> None:
    cg = make(Limits(cpus=0.5))
    start = time.monotonic()
    proc = spawn(cg, ["timeout", "1", "sh", "-c", "while :; do :; done"])
    proc.wait(timeout=30)
    cpu = cg.usage().cpu_seconds
    assert cpu is not None
    ratio = cpu / (time.monotonic() - start)
    assert 0.2 <= ratio <= 0.7, f"cpus=0.5 got {ratio:.2f} of a core"


def test_v2_remove_kills_stragglers_and_removes_the_directory(make: Make) -> None:
    cg = make(Limits(memory=32 * MiB))
    proc = spawn(cg, ["sh", "-c", "sleep 30 & exit 0"])
    assert proc.wait(timeout=10) == 0
    assert len(cg.pids()) == 1
    cg.remove()
    assert not os.path.exists(cg.path)
    assert open_existing(SUPPORT, cg.name) is None


def test_v2_current_memory_is_what_the_cgroup_is_charged_now(make: Make) -> None:
    """The memory series samples memory.current while the attempt runs."""
    cg = make(Limits(memory=64 * MiB))
    proc = spawn(cg, ["sleep", "30"])
    try:
        now = cg.current_memory()
        assert now is not None and 0 < now <= 64 * MiB  # the charge moves: no exact compare
    finally:
        proc.kill()
        proc.wait()
