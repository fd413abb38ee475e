"""`labrun serve` in headless Chromium (tests/browser.py): the runs list and a live run
while its runner writes, with scripts and without, then the same page once the run ended
(the page's own refresh brings it). Screenshots stay in tmp_path. Skipped without Chromium."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from browser import CHROMIUM, SKIP_REASON, Browser, Page
from helpers import start_labrun, write_job
from serving import serving, wait_for_page
from test_serve import LIVE_JOB

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)


def flat(dom: str) -> str:
    return re.sub(r"</t[dhr]>", "", dom)


def wait_for_dom(page: Page, needle: str, timeout: float = 90.0) -> str:
    """The page's DOM once a reload shows `needle`."""
    deadline = time.monotonic() + timeout
    dom = page.dom()
    while needle not in flat(dom):
        assert time.monotonic() < deadline, f"never showed {needle!r}: {dom[-1500:]}"
        time.sleep(0.5)
        dom = page.reload_dom()
    return flat(dom)


def test_the_dashboard_shows_a_live_run_in_a_browser(tmp_path: Path) -> None:
    go = tmp_path / "go"
    job = write_job(tmp_path, LIVE_JOB.format(go=go))
    state = tmp_path / "state"
    runner = start_labrun(state, "run", str(job), "--plain", cwd=tmp_path)
    try:
        with serving(state) as base, Browser(tmp_path) as browser:
            wait_for_page(base, "/runs/1", "warming-b")  # both attempts run and have written
            for javascript in (True, False):
                runs = browser.page(base + "/", javascript=javascript)
                dom = flat(runs.dom())
                assert '<a href="/runs/1">1</a><td>live<td>running' in dom
                live = browser.page(base + "/runs/1", javascript=javascript)
                dom = flat(live.dom())
                assert "Running now" in dom and "warming-a" in dom and "started b" in dom
                assert "<td>work[0] <small>(a)</small><td>running" in dom
                assert '<meta http-equiv="refresh" content="5">' in dom
                live.screenshot(tmp_path / f"live-{'js' if javascript else 'nojs'}.png")
            go.touch()
            assert runner.wait(timeout=120) == 0
            dom = wait_for_dom(live, "<tr><th>state<td>succeeded")  # JavaScript off: a reload is all
            assert "Running now" not in dom and "<td>after<td>succeeded" in dom
            live.screenshot(tmp_path / "ended.png")
        assert (tmp_path / "live-js.png").stat().st_size > 10_000
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
