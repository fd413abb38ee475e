"""The cgroup code against temporary directories shaped like the kernel's files.

These cover what this machine's kernel cannot show (cgroup v2 as written by a modern
host, systemd-run scopes): which file gets which value, and how counters are parsed.
The same v2 paths run on a real kernel in test_cgroup_v2.py (marker cgroup_v2).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from labrun.cgroup import CgroupError, Limits, create, detect
from labrun.cgroup.detect import _detect_systemd
from labrun.cgroup.systemd import find_scope, read_usage, scope_argv
from labrun.cgroup.v1 import V1Cgroup
from labrun.cgroup.v2 import V2Cgroup, enable_controllers, usage_from_files

MiB = 1024 * 1024


def files(directory: Path, **content: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in content.items():
        (directory / name.replace("__", ".")).write_text(text)
    return directory


def v2_dir(directory: Path) -> Path:
    """An attempt directory as the kernel shows it with memory and cpu enabled."""
    return files(
        directory,
        cgroup__procs="",
        memory__max="max\n",
        memory__swap__max="max\n",
        cpu__max="max 100000\n",
        cpuset__cpus="",
        memory__events="low 0\nhigh 0\nmax 7\noom 3\noom_kill 2\noom_group_kill 0\n",
        memory__peak="104857600\n",
        cpu__stat="usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n",
    )


def test_detect_picks_v2_when_the_root_is_cgroup2(tmp_path: Path) -> None:
    files(tmp_path, cgroup__controllers="cpuset cpu io memory pids\n", cgroup__subtree_control="")
    support = detect(str(tmp_path), euid=0, proc_self_cgroup="0::/\n")
    assert (support.mechanism, support.base) == ("cgroup-v2", str(tmp_path))


def test_detect_picks_v1_on_a_hybrid_host_with_an_empty_unified_mount(tmp_path: Path) -> None:
    files(tmp_path / "unified", cgroup__controllers="", cgroup__subtree_control="")
    files(tmp_path / "memory", memory__limit_in_bytes="9223372036854771712\n")
    files(tmp_path / "cpu", cpu__cfs_quota_us="-1\n")
    files(tmp_path / "cpuacct", cpuacct__usage="0\n")
    files(tmp_path / "cpuset", cpuset__cpus="0-1\n")
    support = detect(str(tmp_path), euid=0, proc_self_cgroup="0::/\n4:memory:/\n")
    assert support.mechanism == "cgroup-v1"
    assert support.hierarchy_map["memory"] == str(tmp_path / "memory")
    assert any("swap" in n for n in support.notes)  # no memory.memsw.* files here


def test_detect_v1_co_mounted_cpu_cpuacct_is_one_directory(tmp_path: Path) -> None:
    files(tmp_path / "memory", memory__limit_in_bytes="1\n", memory__oom_control="oom_kill 0\n")
    files(tmp_path / "cpu,cpuacct", cpu__cfs_quota_us="-1\n", cpuacct__usage="0\n")
    os.symlink("cpu,cpuacct", tmp_path / "cpu")
    os.symlink("cpu,cpuacct", tmp_path / "cpuacct")
    hierarchies = detect(str(tmp_path), euid=0).hierarchy_map
    assert hierarchies["cpu"] == hierarchies["cpuacct"] == str(tmp_path / "cpu,cpuacct")


def test_detect_none_says_why(tmp_path: Path) -> None:
    support = detect(str(tmp_path), euid=0)
    assert support.mechanism == "none" and str(tmp_path) in support.reason
    assert not support.ok


def test_detect_v2_without_memory_controller_is_none_as_root(tmp_path: Path) -> None:
    files(tmp_path, cgroup__controllers="cpu io pids\n", cgroup__subtree_control="")
    support = detect(str(tmp_path), euid=0, proc_self_cgroup="0::/\n")
    assert support.mechanism == "none" and "memory" in support.reason


def test_systemd_needs_a_user_manager(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    got = _detect_systemd(str(tmp_path), 1000, {"XDG_RUNTIME_DIR": str(runtime)}, "not writable")
    assert got.mechanism == "none" and "systemd/private" in got.reason
    files(runtime / "systemd", private="")
    service = tmp_path / "user.slice/user-1000.slice/user@1000.service"
    files(service, cgroup__controllers="memory pids\n")
    got = _detect_systemd(str(tmp_path), 1000, {"XDG_RUNTIME_DIR": str(runtime)}, "x")
    assert got.mechanism == "systemd-run"
    assert any("cpu" in n for n in got.notes)  # cpu not delegated: said, not hidden


def test_v2_limits_are_written_where_the_kernel_reads_them(tmp_path: Path) -> None:
    cg = V2Cgroup(str(v2_dir(tmp_path / "a")), str(tmp_path))
    cg.apply(Limits(memory=100 * MiB, cpus=0.5, cpuset="0-1"))
    assert (tmp_path / "a/memory.max").read_text() == str(100 * MiB)
    assert (tmp_path / "a/memory.swap.max").read_text() == "0"
    assert (tmp_path / "a/cpu.max").read_text() == "50000 100000"
    assert (tmp_path / "a/cpuset.cpus").read_text() == "0-1"


def test_v2_tiny_cpu_share_is_clamped_to_the_kernel_minimum(tmp_path: Path) -> None:
    cg = V2Cgroup(str(v2_dir(tmp_path / "a")), str(tmp_path))
    cg.apply(Limits(cpus=0.001))
    assert (tmp_path / "a/cpu.max").read_text() == "1000 100000"
    with pytest.raises(CgroupError, match="positive"):
        cg.apply(Limits(cpus=0))


def test_v2_no_swap_file_means_no_swap_write(tmp_path: Path) -> None:
    directory = v2_dir(tmp_path / "a")
    (directory / "memory.swap.max").unlink()
    V2Cgroup(str(directory)).apply(Limits(memory=MiB))
    assert not (directory / "memory.swap.max").exists()


def test_v2_usage_counts_oom_kill_not_oom(tmp_path: Path) -> None:
    usage = V2Cgroup(str(v2_dir(tmp_path / "a"))).usage()
    assert usage.oom_kills == 2  # the "oom 3" line counts OOMs that reclaim resolved
    assert usage.peak_memory == 100 * MiB
    assert usage.cpu_seconds == pytest.approx(1.5)


def test_v2_usage_without_memory_peak_on_older_kernels() -> None:
    usage = usage_from_files("oom_kill 0\n", None, "usage_usec 10\n")
    assert (usage.oom_kills, usage.peak_memory, usage.cpu_seconds) == (0, None, 1e-5)
    assert usage_from_files(None, None, None).oom_kills is None


def test_v2_controllers_enabled_only_when_missing(tmp_path: Path) -> None:
    parent = files(tmp_path, cgroup__controllers="cpu memory pids\n", cgroup__subtree_control="")
    enable_controllers(str(parent), ["memory", "cpu"])
    assert (parent / "cgroup.subtree_control").read_text() == "+memory +cpu"
    (parent / "cgroup.subtree_control").write_text("cpu memory\n")
    os.chmod(parent / "cgroup.subtree_control", 0o444)  # a write now would be a bug (as root: ok)
    enable_controllers(str(parent), ["memory", "cpu"])
    assert (parent / "cgroup.subtree_control").read_text() == "cpu memory\n"
    with pytest.raises(CgroupError, match="cpuset not available"):
        enable_controllers(str(parent), ["cpuset"])


def test_v2_kill_uses_cgroup_kill_for_sigkill(tmp_path: Path) -> None:
    directory = v2_dir(tmp_path / "a")
    (directory / "cgroup.kill").write_text("")
    V2Cgroup(str(directory)).kill(signal.SIGKILL)
    assert (directory / "cgroup.kill").read_text() == "1"


def test_v2_kill_without_cgroup_kill_signals_each_pid(tmp_path: Path) -> None:
    directory = v2_dir(tmp_path / "a")
    proc = subprocess.Popen(["sleep", "30"])
    (directory / "cgroup.procs").write_text(f"{proc.pid}\n")
    cg = V2Cgroup(str(directory))
    assert cg.pids() == [proc.pid]
    cg.kill(signal.SIGTERM)
    assert proc.wait(timeout=5) == -signal.SIGTERM


def test_v2_home_is_read_from_proc_self_cgroup(tmp_path: Path) -> None:
    with open("/proc/self/cgroup") as f:
        own = next(line[3:].strip() for line in f if line.startswith("0::"))
    cg = V2Cgroup(str(tmp_path / "labrun/x"), str(tmp_path))
    assert cg.home_procs_files() == (os.path.join(str(tmp_path), own.lstrip("/"), "cgroup.procs"),)


def test_v1_limits_and_usage_files(tmp_path: Path) -> None:
    mem = files(
        tmp_path / "memory/labrun/a",
        memory__limit_in_bytes="",
        memory__memsw__limit_in_bytes="",
        memory__oom_control="oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        memory__max_usage_in_bytes="104800000\n",
        memory__failcnt="55\n",
        cgroup__procs="",
    )
    cpu = files(tmp_path / "cpu/labrun/a", cpu__cfs_period_us="", cpu__cfs_quota_us="")
    acct = files(tmp_path / "cpuacct/labrun/a", cpuacct__usage="2500000000\n")
    cg = V1Cgroup("a", {"memory": str(mem), "cpu": str(cpu), "cpuacct": str(acct)})
    cg.apply(Limits(memory=100 * MiB, cpus=1.5))
    assert (mem / "memory.limit_in_bytes").read_text() == str(100 * MiB)
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == str(100 * MiB)
    assert (cpu / "cpu.cfs_quota_us").read_text() == "150000"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    usage = cg.usage()
    assert (usage.oom_kills, usage.peak_memory, usage.cpu_seconds) == (1, 104800000, 2.5)
    assert cg.procs_files[0] == str(mem / "cgroup.procs")  # memory first: pids() reads it


def test_v1_kernel_without_oom_kill_counter_says_unknown(tmp_path: Path) -> None:
    mem = files(tmp_path / "m", memory__oom_control="oom_kill_disable 0\nunder_oom 0\n")
    assert V1Cgroup("a", {"memory": str(mem)}).usage().oom_kills is None


def test_create_refuses_a_bad_name_and_a_missing_mechanism(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match="no cgroup mechanism"):
        create(detect(str(tmp_path), euid=0), "a", Limits())
    files(tmp_path, cgroup__controllers="cpu memory\n", cgroup__subtree_control="cpu memory")
    with pytest.raises(CgroupError, match="invalid cgroup name"):
        create(detect(str(tmp_path), euid=0, proc_self_cgroup="0::/"), "../x", Limits())


def test_systemd_argv_carries_the_limits() -> None:
    argv = scope_argv("r1-t-1", Limits(memory=100 * MiB, cpus=0.5, cpuset="2"), ["x", "y z"], "/u")
    assert argv[:6] == [
        "systemd-run",
        "--user",
        "--scope",
        "--quiet",
        "--collect",
        "--unit=labrun-r1-t-1",
    ]
    props = argv[argv.index("--unit=labrun-r1-t-1") + 1 : argv.index("--")]
    assert props == [
        "-p", "OOMPolicy=continue",
        "-p", f"MemoryMax={100 * MiB}", "-p", "MemorySwapMax=0",
        "-p", "CPUQuota=50%", "-p", "AllowedCPUs=2",
    ]  # fmt: skip
    assert argv[-4:] == ["/u", "/sys/fs/cgroup", "x", "y z"]
    assert "CPUQuota=1%" in scope_argv("a", Limits(cpus=0.001), ["x"], "/u")


def test_systemd_scope_is_found_where_systemd_puts_it(tmp_path: Path) -> None:
    service = tmp_path / "user.slice/user-1000.slice/user@1000.service"
    assert find_scope("a", 1000, str(tmp_path)) is None
    (service / "app.slice/labrun-a.scope").mkdir(parents=True)
    assert find_scope("a", 1000, str(tmp_path)) == str(service / "app.slice/labrun-a.scope")
    (service / "session.slice/deeper.slice/labrun-b.scope").mkdir(parents=True)
    assert find_scope("b", 1000, str(tmp_path)) == str(service / "session.slice/deeper.slice/labrun-b.scope")


def run_snapshot_shell(tmp_path: Path, script: str) -> tuple[int, Path]:
    """Run the scope's snapshot shell for real, outside systemd, against a fake cgroup root.

    Our own /proc/self/cgroup names the v2 path; a directory shaped like the kernel's is
    made there under tmp_path, so the shell copies those files.
    """
    with open("/proc/self/cgroup") as f:
        own = next(line[3:].strip() for line in f if line.startswith("0::"))
    v2_dir(tmp_path / "root" / own.lstrip("/"))
    usage = tmp_path / "usage"
    argv = scope_argv("a", Limits(), ["sh", "-c", script], str(usage), str(tmp_path / "root"))
    proc = subprocess.run(argv[argv.index("--") + 1 :], timeout=10, check=False)
    return proc.returncode, usage


def test_systemd_snapshot_shell_keeps_counters_and_exit_status(tmp_path: Path) -> None:
    rc, usage_file = run_snapshot_shell(tmp_path, "exit 3")
    assert rc == 3
    usage = read_usage(str(usage_file))
    assert usage is not None
    assert (usage.oom_kills, usage.peak_memory, usage.cpu_seconds) == (2, 100 * MiB, 1.5)


def test_systemd_snapshot_shell_passes_a_signal_death_on(tmp_path: Path) -> None:
    rc, usage_file = run_snapshot_shell(tmp_path, "kill -KILL $$")
    assert rc == -signal.SIGKILL
    assert usage_file.exists()
    assert read_usage(str(tmp_path / "absent")) is None
