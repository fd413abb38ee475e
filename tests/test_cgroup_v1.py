"""cgroup v1 on the real kernel (root): limits, OOM counter, peak, CPU time, entry, removal."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from labrun.cgroup import AttemptCgroup, Limits, create, detect, open_existing
from labrun.cgroup.v1 import V1Cgroup

MiB = 1024 * 1024
SUPPORT = detect()
pytestmark = pytest.mark.skipif(
    SUPPORT.mechanism != "cgroup-v1", reason=f"needs root on cgroup v1 here: {SUPPORT.reason}"
)


Make = Callable[[Limits], AttemptCgroup]


@pytest.fixture
def make() -> Iterator[Make]:
    made: list[AttemptCgroup] = []

    def _make(limits: Limits) -> AttemptCgroup:
        cg = create(SUPPORT, f"test-{os.getpid()}-{len(made)}", limits)
        made.append(cg)
        return cg

    yield _make
    for cg in made:
        cg.remove()


def spawn(cg: AttemptCgroup, argv: Sequence[str]) -> subprocess.Popen[bytes]:
    with cg.entered():
        return subprocess.Popen(
            cg.command(argv), process_group=0, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )


def test_detects_v1_on_this_machine() -> None:
    hierarchies = SUPPORT.hierarchy_map
    assert {"memory", "cpu", "cpuacct", "cpuset"} <= set(hierarchies)
    assert SUPPORT.mechanism == "cgroup-v1"


def test_oom_kill_is_counted_with_peak_near_limit(make: Make) -> None:
    cg = make(Limits(memory=100 * MiB))
    proc = spawn(cg, ["dd", "if=/dev/zero", "of=/dev/null", "bs=300M", "count=1"])
    assert proc.wait(timeout=30) == -signal.SIGKILL
    usage = cg.usage()
    assert usage.oom_kills is not None and usage.oom_kills >= 1
    assert usage.peak_memory is not None and 90 * MiB <= usage.peak_memory <= 101 * MiB
    assert isinstance(cg, V1Cgroup)
    memsw = os.path.join(cg.dirs["memory"], "memory.memsw.limit_in_bytes")
    if os.path.exists(memsw):  # swap disallowed: memory+swap capped at the same size
        with open(memsw) as f:
            assert int(f.read()) == 100 * MiB


def test_child_oom_while_parent_exits_zero_is_counted(make: Make) -> None:
    cg = make(Limits(memory=64 * MiB))
    proc = spawn(cg, ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=200M count=1; exit 0"])
    assert proc.wait(timeout=30) == 0
    usage = cg.usage()
    assert usage.oom_kills is not None and usage.oom_kills >= 1


def test_sigkill_from_outside_is_not_oom(make: Make) -> None:
    cg = make(Limits(memory=64 * MiB))
    proc = spawn(cg, ["sleep", "30"])
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert cg.usage().oom_kills == 0


def busy_ratio(cg: AttemptCgroup, seconds: float) -> float:
    start = time.monotonic()
    proc = spawn(cg, ["timeout", str(seconds), "sh", "-c", "while :; do :; done"])
    proc.wait(timeout=seconds + 10)
    wall = time.monotonic() - start
    cpu = cg.usage().cpu_seconds
    assert cpu is not None
    return cpu / wall


def test_half_a_core_gets_about_half_a_core(make: Make) -> None:
    ratio = busy_ratio(make(Limits(memory=64 * MiB, cpus=0.5)), 1.5)
    assert 0.3 <= ratio <= 0.7, f"cpus=0.5 got {ratio:.2f} of a core"


def test_cpuset_pins_the_task(make: Make) -> None:
    cg = make(Limits(memory=64 * MiB, cpuset="0"))
    proc = spawn(cg, ["grep", "Cpus_allowed_list", "/proc/self/status"])
    out, _ = proc.communicate(timeout=10)
    assert out.split()[-1] == b"0"


def test_child_is_inside_before_it_runs_and_runner_goes_home(make: Make) -> None:
    with open("/proc/self/cgroup") as f:
        before = f.read()
    cg = make(Limits(memory=64 * MiB, cpus=1.0))
    out, _ = spawn(cg, ["cat", "/proc/self/cgroup"]).communicate(timeout=10)
    inside = out.decode()
    for controller in ("memory", "cpu", "cpuacct"):
        assert any(
            controller in line.split(":")[1].split(",") and line.endswith(f"/labrun/{cg.name}")
            for line in inside.splitlines()
        ), inside
    with open("/proc/self/cgroup") as f:
        assert f.read() == before


def test_sh_prefix_entry_also_lands_inside(make: Make) -> None:
    cg = make(Limits(memory=64 * MiB))
    proc = subprocess.Popen(cg.wrap_argv(["cat", "/proc/self/cgroup"]), stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=10)
    assert f"memory:/labrun/{cg.name}" in out.decode()


def test_remove_kills_stragglers_and_leaves_nothing(make: Make) -> None:
    cg = make(Limits(memory=64 * MiB, cpus=0.5))
    proc = spawn(cg, ["sh", "-c", "sleep 30 & exit 0"])
    assert proc.wait(timeout=10) == 0
    assert len(cg.pids()) == 1  # the orphaned sleep
    assert isinstance(cg, V1Cgroup)
    dirs = set(cg.dirs.values())
    assert all(os.path.isdir(d) for d in dirs)
    cg.remove()
    assert not any(os.path.exists(d) for d in dirs)
    assert open_existing(SUPPORT, cg.name) is None


def test_kill_signals_every_process(make: Make) -> None:
    cg = make(Limits(memory=64 * MiB))
    proc = spawn(cg, ["sh", "-c", "sleep 30 & sleep 30 & wait"])
    deadline = time.monotonic() + 5
    while len(cg.pids()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(cg.pids()) == 3
    cg.kill(signal.SIGTERM)
    assert proc.wait(timeout=10) != 0
    deadline = time.monotonic() + 5
    while cg.pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cg.pids() == []


def test_adoption_finds_the_same_cgroup(make: Make) -> None:
    cg = make(Limits(memory=64 * MiB))
    again = open_existing(SUPPORT, cg.name)
    assert again is not None and again.procs_files == cg.procs_files


def test_entering_from_another_thread_moves_only_that_thread(make: Make) -> None:
    with open("/proc/self/cgroup") as f:
        before = f.read()
    cg = make(Limits(memory=64 * MiB))
    seen: dict[str, str] = {}

    def in_thread() -> None:
        with open("/proc/thread-self/cgroup") as f:
            seen["thread before"] = f.read()
        with cg.entered():
            with open("/proc/self/cgroup") as f:  # the main thread's
                seen["main meanwhile"] = f.read()
            proc = subprocess.Popen(["cat", "/proc/self/cgroup"], stdout=subprocess.PIPE)
        seen["child"] = proc.communicate(timeout=10)[0].decode()
        with open("/proc/thread-self/cgroup") as f:
            seen["thread after"] = f.read()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(timeout=20)
    assert f"memory:/labrun/{cg.name}" in seen["child"]
    assert seen["main meanwhile"] == before  # only the calling thread went in
    assert seen["thread after"] == seen["thread before"]


def test_current_memory_is_what_the_cgroup_is_charged_now(make: Make, tmp_path: Path) -> None:
    """The memory series samples memory.usage_in_bytes while the attempt runs: 30 MB written
    to a file stays charged as page cache, and the next read holds it."""
    cg = make(Limits(memory=256 * MiB))
    quiet = cg.current_memory()
    assert quiet is not None
    done = spawn(cg, ["dd", "if=/dev/zero", f"of={tmp_path / 'cached'}", "bs=1M", "count=30"])
    assert done.wait(timeout=60) == 0
    held = cg.current_memory()
    assert held is not None and held >= quiet + 25 * MiB
