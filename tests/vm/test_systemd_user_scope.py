"""`systemd-run --user --scope` as a non-root user, on a real systemd and v2 kernel.

This is the path labrun takes for a non-root user on a systemd machine: the user's
own systemd puts the command in a transient scope with the memory limit, and the
kernel enforces it there. The test lane's systemd guest (`make test-vm`, booting
systemd) names such a user in LABRUN_VM_USER; elsewhere the test skips.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.cgroup_v2

LIMIT = 32 * 1024 * 1024
# Prints the scope's cgroup and its files after a 100 MB allocation under the limit.
INSIDE = """
group=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)
dd if=/dev/zero of=/dev/null bs=100M count=1 2>/dev/null
echo "uid $(id -u)"
echo "group $group"
echo "limit $(cat "$group/memory.max")"
cat "$group/memory.events"
"""


def _user() -> pwd.struct_passwd:
    name = os.environ.get("LABRUN_VM_USER")
    if not name or os.geteuid() != 0 or shutil.which("systemd-run") is None:
        pytest.skip("needs root, systemd-run and LABRUN_VM_USER (make test-vm's systemd guest)")
    user = pwd.getpwnam(name)
    # The lane promised this user a running systemd --user: its absence is a failure.
    bus = Path(f"/run/user/{user.pw_uid}/bus")
    assert bus.exists(), f"the systemd --user of {name} has no bus at {bus} (user@.service failed?)"
    return user


def _as_user(user: pwd.struct_passwd, argv: list[str]) -> subprocess.CompletedProcess[str]:
    runtime = f"/run/user/{user.pw_uid}"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "XDG_RUNTIME_DIR": runtime,
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/bus",
    }
    return subprocess.run(
        argv,
        env=env,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _facts(stdout: str) -> dict[str, str]:
    pairs = (line.split(maxsplit=1) for line in stdout.splitlines() if " " in line)
    return dict(pairs)


def test_user_scope_gets_the_memory_limit_and_counts_the_oom_kill() -> None:
    user = _user()
    unit = f"labrun-vmtest-{uuid.uuid4().hex[:8]}"
    argv = ["systemd-run", "--user", "--scope", "--quiet", f"--unit={unit}"]
    argv += ["-p", f"MemoryMax={LIMIT}", "-p", "MemorySwapMax=0"]
    # Without this, systemd stops (SIGTERMs) the whole scope at the first OOM kill
    # in it (DefaultOOMPolicy=stop), so the parent never gets to report.
    argv += ["-p", "OOMPolicy=continue", "sh", "-c", INSIDE]

    done = _as_user(user, argv)

    assert done.returncode == 0, done.stderr
    facts = _facts(done.stdout)
    assert facts["uid"] == str(user.pw_uid)
    assert facts["group"].endswith(f"/user@{user.pw_uid}.service/app.slice/{unit}.scope")
    assert facts["limit"] == str(LIMIT)
    assert int(facts["oom_kill"]) >= 1
    # systemd removes the scope's cgroup once its last process is gone.
    deadline = time.monotonic() + 10
    while Path(facts["group"]).exists():
        assert time.monotonic() < deadline, f"{facts['group']} was not removed"
        time.sleep(0.1)
