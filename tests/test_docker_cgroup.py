"""Reading a container's cgroup parent. v1 runs on the real kernel in test_docker_executor.py;
v2 here only against files shaped like the kernel's (this machine has cgroup v1)."""

from __future__ import annotations

from pathlib import Path

from labrun.executors import docker_cgroup


def test_v2_peak_and_cpu_then_removed(tmp_path: Path) -> None:
    parent = docker_cgroup.parent_for(3, 14, "abcd1234")
    group = tmp_path / parent.lstrip("/")
    group.mkdir(parents=True)
    (group / "memory.peak").write_text("123456789\n")
    (group / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    usage = docker_cgroup.read_usage(parent, "2", root=str(tmp_path))
    assert usage == docker_cgroup.Usage(123456789, 2.5)
    for name in ("memory.peak", "cpu.stat"):
        (group / name).unlink()  # the kernel's files vanish with the directory; plain files do not
    assert docker_cgroup.remove(parent, "2", root=str(tmp_path)) is True
    assert not group.exists()


def test_v1_missing_files_mean_unknown(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    usage = docker_cgroup.read_usage("/labrun/x", "1", root=str(tmp_path))
    assert usage == docker_cgroup.Usage(None, None)


def test_busy_parent_is_reported_for_a_retry(tmp_path: Path) -> None:
    busy = tmp_path / "memory" / "labrun" / "x" / "container"
    busy.mkdir(parents=True)
    assert docker_cgroup.remove("/labrun/x", "1", root=str(tmp_path)) is False


def test_only_local_cgroupfs_daemons_with_a_writable_root(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    assert docker_cgroup.usable("cgroupfs", "1", "unix:///s", root=str(tmp_path))
    assert not docker_cgroup.usable("systemd", "1", "unix:///s", root=str(tmp_path))
    assert not docker_cgroup.usable("cgroupfs", "1", "tcp://h:2375", root=str(tmp_path))
