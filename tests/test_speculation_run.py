"""Speculation end to end: real processes on two SSH nodes on loopback (tests/sshd.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sshd import SshdLab
from test_ssh_nodes import write_lab

from labrun import state_id
from labrun.app import RunOptions, open_store, run_job
from labrun.cli import main
from labrun.states import Outcome, RunState, TaskState

JOB = """
[job]
name = "spec"
[defaults]
retry_delay = 0
[[tasks]]
name = "w"
items = { range = [0, 12] }
nodes = ["node-a", "node-b"]
speculate = true
speculate_after = "2s"
grace = "2s"
env = { MARK = "{mark}" }
outputs = ["{attempt_dir}/out.txt"]
command = '''
if [ {item} = 0 ] && [ "$LABRUN_ATTEMPT" = 1 ]; then sleep 90; else sleep 1; fi
echo {item} > {attempt_dir}/out.txt'''
"""


def marked_processes(mark: str) -> list[int]:
    """Live processes whose environment carries MARK=mark."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"MARK={mark}".encode() in env and state != "Z":
            found.append(int(entry))
    return found


def test_a_straggler_gets_a_copy_on_the_other_node_and_the_first_success_wins(
    tmp_path: Path, sshd_lab: SshdLab, capsys: pytest.CaptureFixture[str]
) -> None:
    sshd_lab.start("node-a")
    sshd_lab.start("node-b")
    lab = write_lab(tmp_path, sshd_lab, {"node-a": "cpus = 4", "node-b": "cpus = 4"})
    job = tmp_path / "job.toml"
    job.write_text(JOB.replace("{mark}", str(tmp_path)))
    result = run_job(str(job), lab, RunOptions(quiet=True))
    assert result.state is RunState.SUCCEEDED, result.counts
    store, _ = open_store(lab)
    task = store.task_by_name(result.run.id, "w[0]")
    assert task is not None and task.state is TaskState.SUCCEEDED
    first, copy = store.attempts(task.id)
    assert (first.n, first.outcome, copy.n, copy.outcome) == (1, Outcome.SUPERSEDED, 2, Outcome.SUCCEEDED)
    assert copy.node != first.node  # never on the original's node while the other fits
    assert first.ended is not None and first.ended - first.started < 80  # stopped, not slept out
    assert "another attempt succeeded first" in (first.detail or "")
    others = [a for a in store.run_attempts(result.run.id) if a.task_id != task.id]
    assert len(others) == 11 and all(a.outcome is Outcome.SUCCEEDED for a in others)
    state = state_id.read(lab.state_dir)
    assert state is not None
    winner = tmp_path / "attempts" / state / f"run-{result.run.id}" / "w[0]" / "2" / "out.txt"
    assert winner.read_text() == "0\n"  # the winner's own directory
    deadline = time.monotonic() + 30
    while marked_processes(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marked_processes(str(tmp_path)) == []
    config = ["--config", str(tmp_path / "labrun.toml")]
    with pytest.raises(SystemExit):
        main(["why", "last", "w[0]", "--attempt", "1", *config])
    why = capsys.readouterr().out
    assert "another attempt succeeded first" in why, why
    with pytest.raises(SystemExit):
        main(["status", "--events", "last", "w[0]", *config])
    status = capsys.readouterr().out
    assert "speculative: attempt running" in status and "median" in status, status
    with pytest.raises(SystemExit):
        main(["status", "last", "w[0]", *config])
    lines = capsys.readouterr().out.splitlines()
    first_line = next(x for x in lines if x.strip().startswith("#1"))
    copy_line = next(x for x in lines if x.strip().startswith("#2"))
    assert first_line.endswith("superseded"), lines
    assert copy_line.endswith("succeeded (speculative copy) (winner)"), lines
