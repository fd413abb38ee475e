"""Reports of real runs of examples/ in headless Chromium (tests/browser.py): the DOM after
the page's script ran, and the DOM with JavaScript disabled, hold the task names, the
outcomes, the OOM evidence with its memory series, and the timeline. Screenshots stay
beside each test's files (tmp_path/*.png). Skipped, with the reason, without Chromium."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import CHROMIUM, SKIP_REASON, Browser
from helpers import labrun

from labrun.cgroup import detect

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SUPPORT = detect()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with Browser(tmp_path_factory.mktemp("chromium")) as b:
        yield b


def report_of(tmp_path: Path, example: str, code: int) -> Path:
    """Run examples/EXAMPLE in a copy of examples/, and write its HTML report."""
    work = tmp_path / "examples"
    shutil.copytree(EXAMPLES, work)
    state = tmp_path / "state"
    done = labrun(state, "run", example, "--plain", cwd=work, timeout=240)
    assert done.returncode == code, done.stdout + done.stderr
    out = tmp_path / "report.html"
    assert labrun(state, "report", "last", "-o", str(out)).returncode == 0
    return out


def both_doms(browser: Browser, report: Path, tmp_path: Path) -> tuple[str, str]:
    """(DOM with scripts, DOM without), a screenshot of each kept."""
    doms = []
    for javascript in (True, False):
        page = browser.page(report.as_uri(), javascript=javascript)
        page.screenshot(tmp_path / f"{report.stem}-{'js' if javascript else 'nojs'}.png")
        doms.append(page.dom())
    assert '<p id="filter">' in doms[0] and '<p id="filter" hidden="">' in doms[1]  # the script ran, or not
    # the DOM closes the cells the report leaves open: drop those to compare rows as written
    flat = [re.sub(r"</t[dhr]>", "", dom) for dom in doms]
    return flat[0], flat[1]


@pytest.mark.skipif(not SUPPORT.ok, reason=f"no cgroup here: {SUPPORT.reason}")
def test_the_leak_example_shows_the_oom_its_climb_and_the_grown_retry(
    browser: Browser, tmp_path: Path
) -> None:
    report = report_of(tmp_path, "leak.toml", 0)
    for dom in both_doms(browser, report, tmp_path):
        assert "<td>leaky<td>succeeded<td>oom → succeeded" in dom
        assert '<td>oom<td class="num">1' in dom
        series = dom.split('id="series"')[1].split("</div>")[0]
        caption = re.search(
            r"<figcaption>leaky attempt 1: oom after [^<]*limit 100.0MiB; (\d+) samples", series
        )
        assert caption and int(caption.group(1)) >= 3, series[:500]
        (points,) = re.findall(r'<polyline points="([^"]+)"', series)
        heights = [float(p.split(",")[1]) for p in points.split()]
        assert heights == sorted(heights, reverse=True)  # climbing (SVG y grows downwards)
        timeline = dom.split('id="timeline"')[1].split("</svg>")[0]
        assert timeline.count("<rect") == 2 and "leaky attempt 1: oom" in timeline
    assert (tmp_path / "report-js.png").stat().st_size > 10_000


def test_the_flaky_example_shows_its_retries(browser: Browser, tmp_path: Path) -> None:
    report = report_of(tmp_path, "flaky.toml", 0)
    for dom in both_doms(browser, report, tmp_path):
        assert "<td>flaky<td>succeeded<td>failed → failed → succeeded" in dom
        assert dom.split('id="timeline"')[1].split("</svg>")[0].count("<rect") == 3
        assert "flaky attempt 1: failed" in dom.split('id="series"')[1]  # its memory, or why none


def test_the_pipeline_example_shows_the_fan_out_and_its_graph(browser: Browser, tmp_path: Path) -> None:
    report = report_of(tmp_path, "pipeline.toml", 0)
    for dom in both_doms(browser, report, tmp_path):
        names = set(re.findall(r"<td>(count\[\d+\])", dom))
        assert len(names) >= 2 and "<td>0 setup<td>succeeded" in dom
        assert "<td>total<td>succeeded" in dom
        graph = dom.split('id="graph"')[1].split("</svg>")[0]
        assert graph.count('class="spec"') == 3


def test_a_failed_run_shows_its_root_cause(browser: Browser, tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text(
        '[job]\nname = "broken"\n[defaults]\nretry_delay = 0\nretries = 1\n[[tasks]]\nname = "parse"\n'
        "command = \"echo 'config.yaml: line 3: bad indent' >&2; exit 2\"\n"
    )
    state = tmp_path / "state"
    assert labrun(state, "run", "broken.toml", "--plain", cwd=tmp_path).returncode == 1
    report = tmp_path / "report.html"
    assert labrun(state, "report", "last", "-o", str(report)).returncode == 0
    for dom in both_doms(browser, report, tmp_path):
        assert "First root cause" in dom and "config.yaml: line 3: bad indent" in dom
        assert "<td>parse<td>failed<td>failed → failed" in dom
