"""Build dist/labrun.pyz (`make zipapp`): one file that runs on every CPython from 3.10 on.

What goes in is chosen on purpose, not whatever the building Python would install:

- pip picks wheels as CPython 3.10 on manylinux x86_64 sees them, and only pure-Python
  (`none`) or stable-ABI (`abi3`) ones: a wheel built for one minor version (`cp311`) is
  refused at build time instead of failing at import time on the user's Python.
  psutil and charset-normalizer are the abi3 ones; everything else is pure Python.
- pip evaluates dependency markers against the Python that runs it, so `tomli`
  (`python_version < '3.11'`) would be left out when building on 3.11+; every marker that
  names the Python version is dropped here, and the check at the end fails the build if
  any dependency some supported Python needs is missing.
- shiv makes the archive; its `__main__.py` then gets a first line that any Python (even
  2.7) can run, so an older Python says which version it needs instead of a traceback.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
OLDEST = (3, 10)
NEWEST_TESTED = (3, 13)

GUARD = """\
# -*- coding: utf-8 -*-
import os, sys
if sys.version_info < ({major}, {minor}):
    def _newer():
        for minor in range(20, {minor} - 1, -1):
            for folder in os.environ.get("PATH", "").split(os.pathsep):
                if os.access(os.path.join(folder, "python3.%d" % minor), os.X_OK):
                    return "python3.%d" % minor
    _fix = _newer()
    _fix = ("run it with %s: %s %s" % (_fix, _fix, " ".join(sys.argv))) if _fix else "install one"
    sys.stderr.write(
        "labrun: labrun.pyz needs Python {major}.{minor} or newer, and %s is Python %d.%d; %s\\n"
        % (sys.executable, sys.version_info[0], sys.version_info[1], _fix)
    )
    sys.exit(2)
"""


def requirements() -> list[str]:
    """The runtime dependencies of pyproject.toml, with Python-version markers dropped."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [re.split(r"\s*;", dep, maxsplit=1)[0] for dep in project["dependencies"]]


def pip_install(target: Path, args: list[str]) -> None:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), *args]
    subprocess.run(command, check=True)


def install(site: Path) -> None:
    pip_install(site, ["--no-deps", "--no-compile", str(REPO)])  # labrun itself: pure Python
    shutil.rmtree(site / "bin")  # console scripts for the building Python: not wanted
    version = f"{OLDEST[0]}.{OLDEST[1]}"
    portable = ["--only-binary=:all:", "--python-version", version, "--implementation", "cp"]
    portable += ["--abi", "abi3", "--abi", "none", "--platform", "manylinux2014_x86_64"]
    pip_install(site, [*portable, "--no-compile", *requirements()])
    shutil.rmtree(site / "bin", ignore_errors=True)


def check_complete(site: Path) -> None:
    """Fail if a dependency that some supported Python needs is not in the bundle."""
    present: dict[str, list[str]] = {}
    for meta in site.glob("*.dist-info/METADATA"):
        lines = meta.read_text(encoding="utf-8", errors="replace").splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Name:"))
        deps = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
        present[canonicalize_name(name)] = deps
    missing = []
    for name, deps in present.items():
        for dep in deps:
            req = Requirement(dep)
            if canonicalize_name(req.name) in present or not _needed(req.marker):
                continue
            missing.append(f"{name} needs {dep}")
    if missing:
        sys.exit("zipapp: missing from the bundle: " + "; ".join(missing))


def _needed(marker: Marker | None) -> bool:
    if marker is None:
        return True
    for minor in range(OLDEST[1], NEWEST_TESTED[1] + 1):
        env = {"python_version": f"3.{minor}", "python_full_version": f"3.{minor}.0", "extra": ""}
        env |= {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"}
        if marker.evaluate(env):
            return True
    return False


def add_guard(pyz: Path) -> None:
    """Put the version check before shiv's bootstrap (which needs a newer Python)."""
    data = pyz.read_bytes()
    shebang, _, _ = data.partition(b"\n")
    rebuilt = pyz.with_suffix(".tmp")
    guard = GUARD.format(major=OLDEST[0], minor=OLDEST[1])
    with zipfile.ZipFile(pyz) as src, rebuilt.open("wb") as out:
        out.write(shebang + b"\n")
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                body = src.read(info)
                if info.filename == "__main__.py":
                    body = guard.encode() + body.split(b"\n", 1)[1]
                dst.writestr(info, body)
    rebuilt.chmod(0o755)
    rebuilt.replace(pyz)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(REPO / "dist" / "labrun.pyz"))
    out = Path(parser.parse_args().output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="labrun-zipapp-") as tmp:
        site = Path(tmp) / "site-packages"
        install(site)
        check_complete(site)
        shiv = Path(sys.executable).parent / "shiv"
        cmd = [str(shiv), "--site-packages", str(site), "-c", "labrun", "-o", str(out)]
        subprocess.run([*cmd, "-p", "/usr/bin/env python3", "--reproducible"], check=True)
    add_guard(out)
    print(f"built {out}: CPython {OLDEST[0]}.{OLDEST[1]} or newer (tested up to 3.{NEWEST_TESTED[1]})")


if __name__ == "__main__":
    main()
