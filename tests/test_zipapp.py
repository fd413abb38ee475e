"""`make zipapp` builds one file that runs a job on every CPython from 3.10 on, and says
which Python it needs on an older one (tools/zipapp.py)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPO

SUPPORTED = ["3.10", "3.11", "3.12", "3.13"]
REFUSED = ["3.8", "3.9"]


def find_python(version: str) -> str | None:
    """A CPython of that minor version: pyenv's, the system's, or one on PATH (no shims)."""
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = sorted(glob.glob(f"{pyenv}/versions/{version}.*/bin/python{version}"), reverse=True)
    candidates += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    found = shutil.which(f"python{version}")
    if found and "shims" not in found:
        candidates.append(found)
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zipapp") / "labrun.pyz"
    build = subprocess.run(
        [sys.executable, str(REPO / "tools" / "zipapp.py"), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    return out


def bare_env(tmp_path: Path) -> dict[str, str]:
    """No virtualenv, no PYTHONPATH, a fresh home: only what a plain machine has."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LABRUN_STATE_DIR": str(tmp_path / "state")}
    env["SHIV_ROOT"] = str(tmp_path / "shiv")
    return env


@pytest.mark.slow
def test_the_bundle_holds_only_code_every_python_can_load(pyz: Path) -> None:
    with zipfile.ZipFile(pyz) as archive:
        names = archive.namelist()
    binaries = [n for n in names if n.endswith(".so")]
    assert binaries, "psutil's binary is expected in the bundle"
    assert all(n.endswith(".abi3.so") for n in binaries), binaries
    assert not [n for n in names if "pydantic" in n]
    assert [n for n in names if n.startswith("site-packages/tomli/")], "Python 3.10 needs tomli"


@pytest.mark.slow
@pytest.mark.parametrize("version", SUPPORTED)
def test_zipapp_runs_an_example_on_every_supported_python(version: str, pyz: Path, tmp_path: Path) -> None:
    python = find_python(version)
    if python is None:
        pytest.skip(f"no CPython {version} on this machine (looked in pyenv, /usr/bin and PATH)")
    run = subprocess.run(
        [python, str(pyz), "run", "examples/hello.toml"],
        cwd=REPO,
        env=bare_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "succeeded" in run.stdout.splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("version", REFUSED)
def test_zipapp_on_an_older_python_says_which_it_needs(version: str, pyz: Path, tmp_path: Path) -> None:
    python = find_python(version)
    if python is None:
        pytest.skip(f"no CPython {version} on this machine (looked in pyenv, /usr/bin and PATH)")
    run = subprocess.run(
        [python, str(pyz), "run", "examples/hello.toml"],
        cwd=REPO,
        env=bare_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert f"needs Python 3.10 or newer, and {python} is Python {version}" in lines[0]
    assert not (tmp_path / "shiv").exists(), "nothing is unpacked for a Python that cannot run it"
