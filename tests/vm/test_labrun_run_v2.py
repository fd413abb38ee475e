"""The whole of `labrun run` on a real cgroup v2 kernel: an OOM, then a retry with grown memory.

Runs in `make test-vm`'s guest (pytest -m cgroup_v2); skips elsewhere unless this machine
has a writable cgroup2 hierarchy with memory and cpu.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labrun.cgroup import detect

SUPPORT = detect()
pytestmark = [
    pytest.mark.cgroup_v2,
    pytest.mark.skipif(
        SUPPORT.mechanism != "cgroup-v2",
        reason=f"needs a writable cgroup2 hierarchy with memory+cpu; detected {SUPPORT.mechanism}",
    ),
]

JOB = """
[job]
name = "oom-v2"
[[tasks]]
name = "hog"
runtime = "cgroup"
memory = "32MiB"
memory_growth = 4
retries = 1
command = "head -c 60000000 /dev/zero | dd of=/dev/null bs=60M count=1 iflag=fullblock"
"""


def labrun(state: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LABRUN_STATE_DIR": str(state)}
    env.pop("LABRUN_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "labrun", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


def test_oom_then_grown_memory_succeeds(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(JOB)
    result = labrun(tmp_path / "state", "run", "--plain", "job.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    status = json.loads(labrun(tmp_path / "state", "status", "--json", cwd=tmp_path).stdout)
    first, second = status["tasks"][0]["attempts"]
    assert first["outcome"] == "oom" and first["oom_killed"]
    assert first["mechanism"] == "cgroup-v2" and first["memory_limit"] == 32 * 1024**2
    assert first["peak_memory"] is not None and first["peak_memory"] > 24 * 1024**2
    assert second["outcome"] == "succeeded" and second["memory_limit"] == 128 * 1024**2
    left = [p.name for p in Path("/sys/fs/cgroup/labrun").iterdir() if p.is_dir()]
    assert not left, f"cgroups {left} outlived the run"
