"""Relative time limits: `timeout = "300%"` of the median of the task's succeeded attempts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import labrun, write_job
from labrun_proc import query

from labrun.config.job import parse_job
from labrun.config.jsonschema import json_schema
from labrun.durations import Durations
from labrun.errors import ConfigError
from labrun.limits import Limit, median, relative_limit


def test_median_of_odd_and_even_counts() -> None:
    assert median([1.0, 2.0, 9.0]) == 2.0
    assert median([1.0, 2.0, 4.0, 9.0]) == 3.0
    with pytest.raises(ValueError):
        median([])


def test_no_limit_until_relative_min_succeeded() -> None:
    assert relative_limit(3.0, [1.0] * 4, 5, None, "t") is None
    limit = relative_limit(3.0, [1.0] * 5, 5, None, "t")
    assert limit is not None and limit.seconds == 3.0
    assert limit.why == "300% of the median 1.0s of 5 succeeded attempts of task t = 3.0s"


def test_the_floor_holds_before_the_median_and_under_it() -> None:
    early = relative_limit(3.0, [1.0, 1.0], 5, 60.0, "t")
    assert early is not None and early.seconds == 60.0
    assert "timeout_floor 1m00s: 2 of the 5 succeeded attempts" in early.why
    raised = relative_limit(3.0, [1.0] * 5, 5, 10.0, "t")
    assert raised is not None and raised.seconds == 10.0 and "raised to timeout_floor" in raised.why
    above = relative_limit(3.0, [5.0] * 5, 5, 10.0, "t")
    assert above is not None and above.seconds == 15.0


def test_one_outlier_does_not_move_the_median() -> None:
    limit = relative_limit(2.0, [1.0, 1.0, 1.0, 1.0, 500.0], 5, None, "t")
    assert limit is not None and limit.seconds == 2.0


def test_durations_keep_each_task_name_apart_and_sorted() -> None:
    spec = parse_job(JOB.replace("{sleep}", "1"), "/x/job.toml").tasks[0]
    durations = Durations([("sleepy", 3.0), ("other", 100.0)])
    for seconds in (1.0, 2.0, 5.0, 4.0):
        durations.add("sleepy", seconds)
    assert list(durations.of("sleepy")) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert durations.limit(spec) == Limit(9.0, durations.limit(spec).why)  # type: ignore[union-attr]
    absolute = parse_job(JOB.replace('"300%"', '"2m"').replace("{sleep}", "1"), "/x/job.toml").tasks[0]
    assert durations.limit(absolute) == Limit(120.0)


JOB = """
[job]
name = "rel"
[defaults]
retry_delay = "0s"
grace = "2s"
cpus = 0.1
[[tasks]]
name = "sleepy"
items = [0, 1, 2, 3, 4, 5, 6, 7, 8]
timeout = "300%"
relative_min = 5
command = 'if [ {item} = 8 ] && [ "$LABRUN_ATTEMPT" = 1 ]; then sleep {sleep}; else sleep 0.3; fi'
"""


def test_the_job_file_takes_a_percentage(tmp_path: Path) -> None:
    spec = parse_job(JOB, str(tmp_path / "job.toml")).tasks[0]
    assert (spec.timeout, spec.timeout_factor, spec.relative_min, spec.timeout_floor) == (None, 3.0, 5, None)
    body = JOB.replace("relative_min = 5", 'timeout_floor = "1m"\nrelative_min = 3')
    floor = parse_job(body, str(tmp_path / "job.toml")).tasks[0]
    assert (floor.timeout_floor, floor.relative_min) == (60.0, 3)
    keys = json_schema()["properties"]["tasks"]["items"]["properties"]
    assert {"relative_min", "timeout_floor"} <= set(keys)
    assert any("%" in alt.get("pattern", "") for alt in keys["timeout"]["oneOf"])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"50%"', "a relative timeout is more than 100%"),
        ('"100%"', "a relative timeout is more than 100%"),
        ('"3x%"', 'expected a percentage such as "300%"'),
        ('"fast"', "expected a duration"),
    ],
)
def test_a_bad_percentage_names_file_line_and_key(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_job(JOB.replace('"300%"', value), str(tmp_path / "job.toml"))
    text = str(err.value)
    assert f"{tmp_path / 'job.toml'}:11" in text and "tasks[0].timeout" in text and message in text, text


def test_the_outlier_is_stopped_at_three_times_the_median_and_its_retry_succeeds(tmp_path: Path) -> None:
    write_job(tmp_path, JOB.replace("{sleep}", "60"))
    state = tmp_path / "state"
    run = labrun(state, "run", "job.toml", cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = query(
        state,
        "SELECT t.name, a.n, a.outcome, a.detail, a.started, a.ended FROM attempts a"
        " JOIN tasks t ON t.id = a.task_id ORDER BY t.name, a.n",
    )
    stopped = [r for r in rows if r[2] != "succeeded"]
    assert [(r[0], r[1], r[2]) for r in stopped] == [("sleepy[8]", 1, "timeout")], rows
    detail = str(stopped[0][3])
    assert "300% of the median" in detail and "succeeded attempts of task sleepy" in detail, detail
    figures = re.search(r"median ([\d.]+)s of (\d+) succeeded .* = ([\d.]+)s", detail)
    assert figures is not None, detail
    assert int(figures.group(2)) >= 5
    ran = float(stopped[0][5]) - float(stopped[0][4])  # type: ignore[arg-type]
    assert ran >= float(figures.group(3)) - 0.1  # not before its limit
    succeeded = {r[0] for r in rows if r[2] == "succeeded"}
    assert succeeded == {f"sleepy[{i}]" for i in range(9)}
    assert [r[1] for r in rows if r[0] == "sleepy[8]"] == [1, 2]
    why = labrun(state, "why", "last", "sleepy[8]", "--attempt", "1", cwd=tmp_path)
    assert "300% of the median" in why.stdout, why.stdout + why.stderr
    events = json.loads(labrun(state, "status", "--json", cwd=tmp_path).stdout)
    assert events  # the status of the run reads
