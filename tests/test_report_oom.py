"""The report of examples/oom.toml on a real cgroup: the kernel OOM-kills attempt 1 at its
100 MiB limit and attempt 2 succeeds with grown memory. The trace carries both attempts'
peaks and limits, and the HTML shows the OOM as evidence, on the memory chart, and in the
suggested request."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import labrun
from test_report_html import Page

from labrun.cgroup import detect
from labrun.views.svg import COLOURS

SUPPORT = detect()
pytestmark = pytest.mark.skipif(not SUPPORT.ok, reason=f"no cgroup here: {SUPPORT.reason}")
MIB = 1024 * 1024
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_the_oom_example_report_shows_the_kill_and_the_grown_retry(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "oom.toml", tmp_path / "oom.toml")
    state = tmp_path / "state"
    done = labrun(state, "run", "oom.toml", "--plain", cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr

    tsv = labrun(state, "report", "last", "--format", "tsv").stdout.splitlines()
    header = tsv[0].split("\t")
    first, second = (dict(zip(header, line.split("\t"), strict=True)) for line in tsv[1:])
    assert (first["outcome"], first["runtime"], first["limit"]) == ("oom", "cgroup", str(100 * MIB))
    assert 90 * MIB <= int(first["peak"]) <= 101 * MIB
    assert (second["outcome"], second["limit"]) == ("succeeded", str(400 * MIB))
    assert int(second["peak"]) >= 280 * 10**6

    out = tmp_path / "oom.html"
    assert labrun(state, "report", "last", "-o", str(out)).returncode == 0
    text = out.read_text()
    page = Page(text)
    assert "memory" in page.ids()
    assert f'fill="{COLOURS["oom"]}"' in text.split('id="memory"')[1]  # the killed attempt's point
    (hog,) = [row for row in page.rows if row and row[0] == "hog"]
    assert hog[1:3] == ["succeeded", "oom → succeeded"]
    suggestions = text.split('id="suggestions"')[1].split("</table>")[0]
    assert "<td>hog<td>2<td>400.0MiB" in suggestions and "<td>1<td>0" in suggestions  # one OOM
