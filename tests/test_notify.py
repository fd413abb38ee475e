"""[notify]: a command with the run's summary JSON on stdin, or a mail through sendmail."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from helpers import labrun, write_job

from labrun.notify import event_of
from labrun.states import RunState

JOB = """
[job]
name = "nightly"
[notify]
command = 'cat > "note-$LABRUN_RUN.json"'
{extra}
[[tasks]]
name = "ok"
items = ["a", "b"]
command = "true"
[[tasks]]
name = "fragile"
command = "test -f fixed"
retries = 0
"""


@pytest.mark.parametrize(
    ("state", "previous", "event"),
    [
        (RunState.FAILED, None, "failure"),
        (RunState.FAILED, RunState.SUCCEEDED, "failure"),
        (RunState.SUCCEEDED, RunState.FAILED, "recovery"),
        (RunState.SUCCEEDED, RunState.CANCELLED, "recovery"),
        (RunState.SUCCEEDED, RunState.SUCCEEDED, "success"),
        (RunState.SUCCEEDED, None, "success"),
        (RunState.INTERRUPTED, RunState.FAILED, None),
        (RunState.CANCELLED, None, None),
    ],
)
def test_event_of(state: RunState, previous: RunState | None, event: str | None) -> None:
    assert event_of(state, previous) == event


def test_failure_then_recovery_and_silence_on_plain_success(tmp_path: Path) -> None:
    write_job(tmp_path, JOB.format(extra=""))
    state = tmp_path / "state"
    first = labrun(state, "run", "job.toml", cwd=tmp_path)
    assert first.returncode == 1
    note = json.loads((tmp_path / "note-1.json").read_text())
    assert (note["event"], note["state"], note["run"], note["tasks"]) == ("failure", "failed", 1, 3)
    assert [t["task"] for t in note["not_succeeded"]] == ["fragile"]
    assert "exited 1" in note["not_succeeded"][0]["reason"]
    assert note["summary"].startswith("labrun: job nightly run 1 failed")
    (tmp_path / "fixed").touch()
    second = labrun(state, "run", "job.toml", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert json.loads((tmp_path / "note-2.json").read_text())["event"] == "recovery"
    third = labrun(state, "run", "job.toml", cwd=tmp_path)
    assert third.returncode == 0 and not (tmp_path / "note-3.json").exists()


def test_a_failing_notifier_is_reported_and_never_changes_the_exit_code(tmp_path: Path) -> None:
    write_job(tmp_path, JOB.format(extra='on = ["success"]').replace("cat >", "echo boom >&2; exit 3; cat >"))
    (tmp_path / "fixed").touch()
    done = labrun(tmp_path / "state", "run", "job.toml", cwd=tmp_path)
    assert done.returncode == 0
    assert "labrun: [notify] command exited 3 (boom)" in done.stderr


def test_mail_goes_through_sendmail_with_the_recipient_in_the_header(tmp_path: Path) -> None:
    # A stand-in for the local mail transfer agent: it keeps its arguments and the message.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sendmail = bin_dir / "sendmail"
    sendmail.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncat > {tmp_path}/mail\n')
    sendmail.chmod(sendmail.stat().st_mode | stat.S_IEXEC)
    write_job(tmp_path, JOB.format(extra="").replace("command = 'cat", 'email = "night@lab.org"\n#'))
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    done = labrun(tmp_path / "state", "run", "job.toml", cwd=tmp_path, env={"PATH": path})
    assert done.returncode == 1 and "[notify]" not in done.stderr, done.stderr
    assert (tmp_path / "args").read_text().split() == ["-t", "-oi"]
    mail = (tmp_path / "mail").read_text()
    assert mail.startswith("To: night@lab.org\nSubject: labrun: job nightly run 1 failed (failure)\n")
    assert "  fragile: failed: " in mail and "labrun why 1 TASK" in mail


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('on = ["failure"]', "[notify] says neither how nor whom to tell"),
        ('command = "true"\non = ["sometimes"]', "'sometimes' is not one of failure, recovery, success"),
        ('email = "a@b, c@d"', "is not one mail address"),
        ('command = "true"\nwhen = 1', "unknown key 'when' in [notify]"),
    ],
)
def test_notify_mistakes_are_configuration_errors(tmp_path: Path, table: str, message: str) -> None:
    write_job(tmp_path, f'[job]\nname = "j"\n[notify]\n{table}\n[[tasks]]\nname = "t"\ncommand = "true"\n')
    done = labrun(tmp_path / "state", "check", "job.toml", cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "job.toml:" in done.stderr and "Traceback" not in done.stderr
