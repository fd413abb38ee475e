"""`labrun report --format tsv|json`: one row per attempt of a real run, written to a 0600
file when asked, and streamed from the read-only store (a 100,000-task run is never held)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, cli_env, finished_run, labrun
from synthetic_store import FAIL_EVERY, failed_count, make_run

from labrun.views.trace import FIELDS

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
items = ["tab\\there", "<script>alert(1)</script>"]
[[tasks]]
name = "broken"
command = "echo boom >&2; exit 4"
retries = 0
"""


@pytest.fixture
def story(tmp_path: Path) -> Path:
    return finished_run(tmp_path, JOB)


def test_tsv_has_one_row_per_attempt_with_trace_fields(story: Path) -> None:
    done = labrun(story, "report", "last", "--format", "tsv")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split("\t") == list(FIELDS)
    rows = [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in lines[1:]]
    assert all(len(line.split("\t")) == len(FIELDS) for line in lines)
    got = [(r["task"], r["attempt"], r["outcome"], r["exit"]) for r in rows]
    assert got == [
        ("flaky", "1", "failed", "3"),
        ("flaky", "2", "succeeded", "0"),
        ("fan[0]", "1", "succeeded", "0"),
        ("fan[1]", "1", "succeeded", "0"),
        ("broken", "1", "failed", "4"),
    ]
    assert rows[2]["item"] == "tab\\there"  # escaped: one row stays one line
    assert all(r["node"] == "local" and r["runtime"] == "process" for r in rows)
    assert all(r["limit"] == str(64 * 1024 * 1024) for r in rows)
    assert all(float(r["duration"]) >= 0 and r["start"] <= r["end"] for r in rows)


def test_json_holds_the_run_and_its_attempts(story: Path) -> None:
    done = labrun(story, "report", "last", "--format", "json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["job"] == "story" and document["state"] == "failed"
    assert document["counts"]["succeeded"] == 3 and document["counts"]["failed"] == 1
    attempts = document["attempts"]
    assert [a["task"] for a in attempts] == ["flaky", "flaky", "fan[0]", "fan[1]", "broken"]
    assert attempts[1]["item"] is None and attempts[2]["item"] == "tab\there"
    assert attempts[3]["item"] == "<script>alert(1)</script>"
    assert set(attempts[0]) == set(FIELDS)
    assert attempts[4]["exit"] == 4 and attempts[4]["outcome"] == "failed"


def test_output_file_is_0600_and_replaces_a_looser_one(story: Path, tmp_path: Path) -> None:
    target = tmp_path / "trace.tsv"
    target.write_text("old\n")
    target.chmod(0o644)
    done = labrun(story, "report", "last", "--format", "tsv", "-o", str(target))
    assert done.returncode == 0 and done.stdout.startswith(f"wrote {target} ("), done.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text().splitlines()[0].split("\t") == list(FIELDS)
    assert len(target.read_text().splitlines()) == 6
    assert [p.name for p in tmp_path.iterdir() if ".tmp." in p.name] == []


def test_a_wrong_run_or_directory_or_format_is_said_and_writes_nothing(story: Path, tmp_path: Path) -> None:
    target = tmp_path / "x.tsv"
    done = labrun(story, "report", "99", "-o", str(target))
    assert done.returncode == 2 and "there is no run 99" in done.stderr
    assert not target.exists()
    done = labrun(story, "report", "last", "-o", str(tmp_path / "no" / "x.tsv"))
    assert done.returncode == 2 and "does not exist; create it (mkdir -p" in done.stderr
    done = labrun(story, "report", "last", "--format", "xml")
    assert done.returncode == 2 and "choose one of" in done.stderr and "Traceback" not in done.stderr


def _report_rss(state: Path, out: Path, fmt: str) -> int:
    """Peak RSS (KiB) of one `labrun report` process writing `out`."""
    with out.open("w") as handle:
        cmd = [sys.executable, "-m", "labrun", "report", "last", "--format", fmt]
        proc = subprocess.Popen(cmd, stdout=handle, env=cli_env(state), cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return int(usage.ru_maxrss)


@pytest.mark.slow  # writing and reading 100,000 tasks: about 20 s on 2 shared cores
def test_a_100000_task_run_streams_in_bounded_memory(tmp_path: Path) -> None:
    n = 100_000
    small = make_run(tmp_path / "small", 100)
    big = make_run(tmp_path / "big", n)
    baseline = _report_rss(small, tmp_path / "small.json", "json")
    for fmt in ("tsv", "json"):
        out = tmp_path / f"big.{fmt}"
        grown = _report_rss(big, out, fmt) - baseline
        # Holding the rows would cost hundreds of MiB; streamed, the growth is SQLite's cache.
        assert grown < 48 * 1024, f"{fmt}: peak RSS grew {grown} KiB over a 100-task report"
    lines = (tmp_path / "big.tsv").read_text().splitlines()
    assert len(lines) == 1 + n + failed_count(n)
    document = json.loads((tmp_path / "big.json").read_text())
    assert len(document["attempts"]) == n + failed_count(n)
    assert document["attempts"][0]["outcome"] == "oom" and document["counts"]["failed"] == n // FAIL_EVERY
