"""`labrun report RUN` as HTML: one self-contained file whose key facts are plain HTML (read
here with the standard library's parser, as a browser with JavaScript off would show them),
with everything a run wrote escaped, and a bounded size for a 100,000-task run."""

from __future__ import annotations

import stat
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import finished_run, labrun
from synthetic_store import failed_count, make_run

HOSTILE = "<script>alert(1)</script>"

JOB = """
[job]
name = "story"
[defaults]
retry_delay = 0
memory = "64MiB"
[[tasks]]
name = "flaky"
command = "test -f marker || { touch marker; exit 3; }"
retries = 2
[[tasks]]
name = "fan"
command = "echo {item}"
items = ["plain", "<script>alert(1)</script>"]
[[tasks]]
name = "broken"
command = "echo '<script>alert(2)</script> boom' >&2; exit 4"
retries = 0
[[tasks]]
name = "after"
command = "true"
depends_on = ["broken"]
"""


class Page(HTMLParser):
    """What a browser without JavaScript shows: text by element id, tags, the task table."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: list[list[str]] = []
        self.problem_rows = 0
        self._in_tasks = False
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.append((tag, found))
        if tag == "table":
            self._in_tasks = found.get("id") == "tasks"
        if self._in_tasks and tag == "tr":
            self.rows.append([])
            self.problem_rows += "data-p" in found
        if self._in_tasks and tag == "td":
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_tasks = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_tasks and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data

    def ids(self) -> set[str]:
        return {str(a["id"]) for _, a in self.tags if a.get("id")}


@pytest.fixture
def story(tmp_path: Path) -> Path:
    return finished_run(tmp_path, JOB)


def test_the_html_report_is_one_self_contained_escaped_file(story: Path, tmp_path: Path) -> None:
    done = labrun(story, "report", "last", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    path = tmp_path / "labrun-report-1.html"
    assert done.stdout.startswith("wrote labrun-report-1.html ("), done.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    page = Page(text)
    # nothing fetched: no external reference of any kind, one inline script (ours)
    assert [t for t, a in page.tags if t in ("link", "img", "iframe", "object")] == []
    assert [a for _, a in page.tags if a.get("src") or a.get("href")] == []
    assert [t for t, _ in page.tags].count("script") == 1
    assert "default-src 'none'" in text
    # what a run wrote is text, never markup
    assert HOSTILE not in text and "<script>alert(2)" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "&lt;script&gt;alert(2)&lt;/script&gt;" in text
    assert {"facts", "states", "outcomes", "why", "timeline", "suggestions", "tasks"} <= page.ids()


def test_key_facts_read_without_javascript(story: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    assert labrun(story, "report", "last", "-o", str(out)).returncode == 0
    page = Page(out.read_text())
    words = " ".join(page.text)
    assert "labrun report: story, run 1" in words and "failed" in words
    assert "First root cause" in words and "broken" in words and "exit code 4" in words
    assert "application error: 1 task(s)" in words and "dependency failure: 1 task(s)" in words
    assert "next step:" in words
    by_task = {row[0]: row for row in page.rows if row}
    assert by_task["broken"][1:4] == ["failed", "failed", "4"]
    assert by_task["flaky"][1:3] == ["succeeded", "failed → succeeded"]
    assert by_task["after"][1] == "skipped"
    assert by_task[f"fan[1] ({HOSTILE})"][1] == "succeeded"  # the item, shown as text
    assert page.problem_rows == 2  # broken and after, listed first
    assert [row[0] for row in page.rows if row][:2] == ["broken", "after"]


@pytest.mark.slow  # writing and reading 100,000 tasks: about 15 s on 2 shared cores
def test_a_100000_task_report_is_under_10_mb_and_keeps_every_failed_task(tmp_path: Path) -> None:
    n = 100_000
    state = make_run(tmp_path / "state", n)
    out = tmp_path / "big.html"
    done = labrun(state, "report", "last", "-o", str(out), timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size < 10 * 1024 * 1024
    page = Page(out.read_text())
    assert page.problem_rows == failed_count(n)  # every failed task, none summarised away
    failed_names = {row[0] for row in page.rows[1:] if row and row[1] == "failed"}
    assert failed_names == {f"t[{i}] (item-{i})" for i in range(0, n, 50)}
    words = " ".join(page.text)
    assert f"{n - failed_count(n) - 1000} more that succeeded" in words
    assert "1 in 25" in words  # succeeded attempts sampled on the timeline, failed ones all drawn
    assert "memory" in page.ids() and "oom" in words


def test_html_to_the_standard_output_is_the_page_alone(story: Path) -> None:
    done = labrun(story, "report", "last", "-o", "-")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("<!DOCTYPE html>") and done.stdout.endswith("</body></html>\n")
    assert done.stdout.count("<!DOCTYPE") == 1 and "wrote" not in done.stdout
