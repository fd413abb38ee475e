"""CgroupExecutor reuses an ended attempt's cgroup, on the real kernel (here: cgroup v1).

A reused cgroup must look new to the next attempt: no OOM kill, peak or CPU time of the
one before, the new limits, nothing left running in it; and none outlives the executor.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labrun.cgroup import detect, open_existing
from labrun.executors.base import Waker
from labrun.executors.cgroup import CgroupExecutor
from labrun.model import Facts, Launch, Started

SUPPORT = detect()
pytestmark = pytest.mark.skipif(
    SUPPORT.mechanism != "cgroup-v1", reason=f"cgroups are reused on cgroup v1 only; here {SUPPORT.mechanism}"
)
MiB = 1024**2
HOG = "head -c 300000000 /dev/zero | dd of=/dev/null bs=300M count=1 iflag=fullblock 2>/dev/null"


class Attempts:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.waker = Waker()
        self.ex = CgroupExecutor(self.waker, SUPPORT)
        self.next_id = 0
        self.closed = False

    def run(self, command: str, memory: int = 100 * MiB, cpus: float = 0.0) -> tuple[Started, Facts]:
        self.next_id += 1
        out = str(self.tmp_path / f"{self.next_id}.out")
        launch = Launch(
            self.next_id,
            1,
            "t",
            1,
            ("sh", "-c", command),
            {},
            str(self.tmp_path),
            out,
            out + ".err",
            cpus,
            memory,
        )
        started = self.ex.start(launch)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for attempt_id, facts in self.ex.finished():
                assert attempt_id == self.next_id
                return started, facts
            self.waker.wait(0.5)
        raise AssertionError(f"attempt {command!r} did not end")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.ex.close()
            self.waker.close()


@pytest.fixture
def attempts(tmp_path: Path) -> Iterator[Attempts]:
    made = Attempts(tmp_path)
    yield made
    made.close()


def limit_of(ref: str | None) -> int:
    assert ref is not None
    return int(Path(SUPPORT.hierarchy_map["memory"], "labrun", ref, "memory.limit_in_bytes").read_text())


def test_second_attempt_in_a_reused_cgroup_sees_nothing_of_the_first(attempts: Attempts) -> None:
    first, oom = attempts.run(HOG)
    assert oom.oom_kills and oom.oom_kills >= 1
    assert oom.peak_memory is not None and 90 * MiB <= oom.peak_memory <= 101 * MiB
    second, clean = attempts.run("true")
    assert second.ref == first.ref, "the ended attempt's cgroup was not reused"
    assert clean.exit_code == 0 and clean.oom_kills == 0
    assert clean.peak_memory is not None and clean.peak_memory < 8 * MiB
    assert clean.cpu_seconds is not None and clean.cpu_seconds < 0.5


def test_retry_grows_and_a_later_attempt_shrinks_the_limit_of_a_reused_cgroup(attempts: Attempts) -> None:
    first, oom = attempts.run(HOG, memory=100 * MiB)
    assert oom.oom_kills
    grown, fits = attempts.run(HOG, memory=400 * MiB)
    assert grown.ref == first.ref and limit_of(grown.ref) == 400 * MiB
    assert fits.exit_code == 0 and fits.oom_kills == 0
    assert fits.peak_memory is not None and fits.peak_memory >= 280 * 10**6
    shrunk, _ = attempts.run("true", memory=64 * MiB)
    assert shrunk.ref == first.ref and limit_of(shrunk.ref) == 64 * MiB
    _, again = attempts.run(HOG, memory=64 * MiB)
    assert again.oom_kills == 1  # counted from this attempt's start, not since the cgroup's


def _running(pid: int) -> bool:
    """Exists and is no zombie (this test process may be a child subreaper: labrun's process
    runtime makes the runner one, and other tests ran it here)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rpartition(b")")[2].split()[0] != b"Z"
    except OSError:
        return False


def test_what_an_attempt_left_running_dies_before_the_next_attempt(
    attempts: Attempts, tmp_path: Path
) -> None:
    pidfile = tmp_path / "straggler"
    attempts.run(f"setsid sleep 60 & echo $! > {pidfile}")
    straggler = int(pidfile.read_text())
    second, facts = attempts.run("cat /proc/self/cgroup")
    assert facts.exit_code == 0
    deadline = time.monotonic() + 5
    while _running(straggler) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _running(straggler), "a process of the first attempt outlived it"
    own = (tmp_path / "2.out").read_text()
    assert f"/labrun/{second.ref}" in own  # the second attempt ran in its cgroup


def test_other_hierarchies_get_another_cgroup_and_none_outlives_close(attempts: Attempts) -> None:
    plain, _ = attempts.run("true")
    limited, _ = attempts.run("true", cpus=0.5)
    assert limited.ref != plain.ref  # a cpu limit needs the cpu hierarchy, which plain lacks
    again, _ = attempts.run("true", cpus=0.5)
    assert again.ref == limited.ref
    attempts.close()
    for ref in (plain.ref, limited.ref):
        assert ref is not None and open_existing(SUPPORT, ref) is None, f"cgroup {ref} outlived close()"


def test_each_attempt_in_a_reused_cgroup_starts_with_a_full_cpu_quota(attempts: Attempts) -> None:
    # A trivial attempt uses about 1 ms of its 25 ms per 100 ms: with the budget refilled
    # at each reuse none is ever throttled; sharing one budget, back-to-back ones would be.
    refs = {attempts.run("true", cpus=0.25)[0].ref for _ in range(40)}
    assert len(refs) == 1
    (ref,) = refs
    assert ref is not None
    stat = Path(SUPPORT.hierarchy_map["cpu"], "labrun", ref, "cpu.stat").read_text()
    throttled = dict(line.split() for line in stat.splitlines())["nr_throttled"]
    assert int(throttled) == 0, stat
