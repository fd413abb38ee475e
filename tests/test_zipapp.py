"""`make zipapp` builds one file that runs a job on a machine with only Python."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO


@pytest.mark.slow
def test_zipapp_builds_and_runs_an_example(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    build = subprocess.run(["make", "zipapp"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    pyz = REPO / "dist" / "labrun.pyz"
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    # a bare environment: no virtualenv, no PYTHONPATH, a fresh home
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LABRUN_STATE_DIR": str(tmp_path / "state")}
    env["SHIV_ROOT"] = str(tmp_path / "shiv")
    run = subprocess.run(
        [python, str(pyz), "run", "examples/hello.toml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "succeeded" in run.stdout.splitlines()[-1]
