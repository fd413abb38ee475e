"""labrun run --rerun-failed: only what did not succeed runs again, in a run that keeps {shared}."""

from __future__ import annotations

import os
from pathlib import Path

from helpers import labrun, write_job
from labrun_proc import query

JOB = """
[job]
name = "sweep"
[defaults]
retries = 0
[setup]
command = "echo setup >> {shared}/starts.log && printf 'a\\\\nb\\\\nc\\\\n' > {shared}/manifest.txt"
outputs = ["{shared}/manifest.txt"]
[[tasks]]
name = "count"
items = "setup"
command = "echo {item} >> {shared}/starts.log && test -f fixed-{item} -o {item} != b"
[[tasks]]
name = "total"
depends_on = ["count"]
command = "echo total >> {shared}/starts.log"
"""


def test_a_rerun_runs_only_what_failed_and_keeps_shared(tmp_path: Path) -> None:
    write_job(tmp_path, JOB)
    state = tmp_path / "state"
    first = labrun(state, "run", "job.toml", cwd=tmp_path)
    assert first.returncode == 1
    assert dict(query(state, "SELECT name, state FROM tasks WHERE run_id = 1")) == {
        "setup": "succeeded",
        "count[0]": "succeeded",
        "count[1]": "failed",
        "count[2]": "succeeded",
        "total": "skipped",
    }
    (tmp_path / "fixed-b").touch()
    second = labrun(state, "run", "--rerun-failed", "job.toml", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    said = "run 2 reruns run 1 of job sweep: 2 task(s) to run, 3 succeeded before and are kept"
    assert said in second.stdout
    shared = state / "runs" / "2" / "shared"
    # setup, a and c ran once (run 1, a to c in any order); b twice; total once, in run 2
    log = (shared / "starts.log").read_text().split()
    assert (log[0], sorted(log[1:4]), log[4:]) == ("setup", ["a", "b", "c"], ["b", "total"])
    assert os.path.islink(state / "runs" / "1" / "shared")  # the old path still leads there
    assert (state / "runs" / "1" / "shared" / "manifest.txt").read_text() == "a\nb\nc\n"
    assert query(state, "SELECT rerun_of, state FROM runs WHERE id = 2") == [(1, "succeeded")]
    assert "(rerun of 1)" in labrun(state, "runs", cwd=tmp_path).stdout
    assert "reruns what did not succeed in run 1" in labrun(state, "status", "2", cwd=tmp_path).stdout
    carried = query(state, "SELECT name, attempts, reason FROM tasks WHERE run_id = 2 AND attempts = 0")
    assert sorted(str(r[0]) for r in carried) == ["count[0]", "count[2]", "setup"]
    assert all(r[2] == "succeeded in run 1; carried over" for r in carried)
    again = labrun(state, "run", "--rerun-failed", "job.toml", cwd=tmp_path)
    assert again.returncode == 0 and "run 2 of job sweep succeeded: there is nothing to rerun" in again.stderr
    assert query(state, "SELECT COUNT(*) FROM runs") == [(2,)]


def test_an_edited_item_runs_again_even_under_the_same_name(tmp_path: Path) -> None:
    job = JOB.replace("[setup]", "[x]").split("[x]")[0] + (
        '[[tasks]]\nname = "t"\nitems = ["1", "2"]\ncommand = "test {item} = 1"\n'
    )
    write_job(tmp_path, job)
    state = tmp_path / "state"
    assert labrun(state, "run", "job.toml", cwd=tmp_path).returncode == 1
    write_job(tmp_path, job.replace('["1", "2"]', '["3", "1"]'))  # t[0] is now item 3
    done = labrun(state, "run", "--rerun-failed", "job.toml", cwd=tmp_path)
    assert done.returncode == 1  # item 3 failed: it ran, though t[0] (item 1) succeeded before
    rows = query(state, "SELECT name, item, attempts, state FROM tasks WHERE run_id = 2 ORDER BY seq")
    assert rows == [("t[0]", "3", 1, "failed"), ("t[1]", "1", 1, "succeeded")]


def test_resume_of_a_finished_run_says_what_it_does_instead(tmp_path: Path) -> None:
    write_job(tmp_path, JOB)
    state = tmp_path / "state"
    assert labrun(state, "run", "job.toml", cwd=tmp_path).returncode == 1
    resumed = labrun(state, "run", "--resume", "job.toml", cwd=tmp_path)
    assert "run 1 of job sweep already ended (failed), so there is nothing to resume" in resumed.stderr
    assert "--rerun-failed" in resumed.stderr
    assert query(state, "SELECT COUNT(*) FROM runs") == [(2,)]
    quiet = labrun(state, "run", "--resume", "--quiet", "job.toml", cwd=tmp_path)
    assert "nothing to resume" not in quiet.stderr  # cron mails only what matters


def test_rerun_refuses_an_unfinished_run_and_a_job_never_run(tmp_path: Path) -> None:
    write_job(tmp_path, JOB)
    state = tmp_path / "state"
    never = labrun(state, "run", "--rerun-failed", "job.toml", cwd=tmp_path)
    assert never.returncode == 2 and "has no finished run to rerun" in never.stderr
    assert labrun(state, "run", "job.toml", cwd=tmp_path).returncode == 1
    import sqlite3

    conn = sqlite3.connect(state / "labrun.db")
    with conn:
        conn.execute("UPDATE runs SET state = 'interrupted'")
    conn.close()
    unfinished = labrun(state, "run", "--rerun-failed", "job.toml", cwd=tmp_path)
    assert unfinished.returncode == 2 and "continue it with `labrun run --resume" in unfinished.stderr


def test_an_aggregate_over_partial_results_runs_again_when_its_upstream_does(tmp_path: Path) -> None:
    write_job(
        tmp_path,
        """
        [job]
        name = "partial"
        [[tasks]]
        name = "train"
        items = ["1", "2", "3"]
        command = "test {item} != 2 -o -f fixed"
        retries = 0
        [[tasks]]
        name = "aggregate"
        depends_on = [{ task = "train", allow_failed = true }]
        command = "grep -c succeeded {shared}/upstream/train.jsonl > agg.txt"
        """,
    )
    state = tmp_path / "state"
    assert labrun(state, "run", "job.toml", cwd=tmp_path).returncode == 1
    assert (tmp_path / "agg.txt").read_text() == "2\n"
    (tmp_path / "fixed").touch()
    done = labrun(state, "run", "--rerun-failed", "job.toml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "agg.txt").read_text() == "3\n"  # not the stale partial aggregate
    assert "2 task(s) to run, 2 succeeded before" in done.stdout
