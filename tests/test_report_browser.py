"""The HTML report in a real browser: headless Chromium (Debian's `chromium`, installed by
`make test`'s tests/setup-system.sh) opens the file from disk, offline, and the DOM it
rendered after scripts ran is checked. With JavaScript off, headless Chromium dumps no DOM
at all (its dump needs scripts), so the page without scripts is checked as markup by
tests/test_report_html.py: the only script unhides the filter and writes no content.
A screenshot is kept beside the test's files. Skipped, with the reason, without Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import labrun, write_job

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium: install Debian's chromium (tests/setup-system.sh does as root)"
)

JOB = """
[job]
name = "browse"
[defaults]
retry_delay = 0
memory = "64MiB"
[[tasks]]
name = "fan"
command = "echo {item}"
items = ["ok", "<img src=x onerror=alert(1)>"]
[[tasks]]
name = "broken"
command = "echo '<script>document.title=\\"owned\\"</script>' >&2; exit 4"
retries = 1
"""


def chromium(*args: str, home: Path) -> str:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", *args]
    env = {**os.environ, "HOME": str(home)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture
def report(tmp_path: Path) -> Path:
    job = write_job(tmp_path, JOB)
    state = tmp_path / "state"
    assert labrun(state, "run", str(job), "--plain", cwd=tmp_path).returncode == 1
    out = tmp_path / "report.html"
    assert labrun(state, "report", "last", "-o", str(out)).returncode == 0
    return out


def test_chromium_renders_the_report_from_disk(report: Path, tmp_path: Path) -> None:
    url = report.as_uri()
    dom = chromium("--dump-dom", "--virtual-time-budget=3000", url, home=tmp_path)
    assert "<title>labrun report: browse, run 1</title>" in dom  # no script of the run retitled it
    assert '<p id="filter">' in dom  # the page's own script ran: the filter is shown
    assert "broken" in dom and "exit code 4" in dom and "application error" in dom
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom and "<img" not in dom
    assert dom.count("<rect") == 4  # the timeline: one bar per attempt (fan 2, broken 2)

    assert "First root cause" in dom and "failed → failed" in dom

    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,1600", url, home=tmp_path)
    assert shot.stat().st_size > 10_000
