"""A node where tasks of a run keep failing is avoided for the rest of that run."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from labrun.app import open_store
from labrun.backends.local import LocalNode
from labrun.config.job import load_job
from labrun.config.lab import LabConfig, NodeSpec
from labrun.executors.base import Waker
from labrun.executors.process import ProcessExecutor
from labrun.expand import instances
from labrun.model import Launch, Runtime, Started
from labrun.progress import QuietReporter
from labrun.runner import Runner
from labrun.states import Outcome, RunState


class BrokenNode(ProcessExecutor):
    """A real process executor on a node where every command fails (as a broken node would)."""

    def start(self, launch: Launch) -> Started:
        return super().start(dataclasses.replace(launch, argv=("false",)))


def test_after_node_max_failures_the_node_is_not_used_again(tmp_path: Path) -> None:
    lab = LabConfig(None, str(tmp_path / "state"), (LocalNode("local", cpus=1, memory=1 << 30),))
    job_file = tmp_path / "job.toml"
    job_file.write_text(
        '[job]\nname = "nf"\n[[tasks]]\nname = "t"\nitems = { range = [0, 10] }\n'
        'command = "true"\nretries = 10\nretry_delay = 0\n'
    )
    job = load_job(str(job_file))
    store, paths = open_store(lab)
    with store.tx():
        run_id = store.create_run(job.name, job.file, job.text, time.time())
        store.add_tasks(run_id, instances(job))
    run = store.run(run_id)
    assert run is not None
    waker = Waker()
    # the broken node is bigger, so placement prefers it until it is avoided
    nodes = [NodeSpec("local", 1, 1 << 30), NodeSpec("broken", 1, 1 << 32)]
    executors = {
        ("local", Runtime.PROCESS): ProcessExecutor(waker),
        ("broken", Runtime.PROCESS): BrokenNode(waker),
    }
    runner = Runner(store, paths, job, run, nodes, executors, waker, QuietReporter(), node_max_failures=3)
    assert runner.drive(time.time) is RunState.SUCCEEDED
    attempts = store.run_attempts(run_id)
    on_broken = sorted((a for a in attempts if a.node == "broken"), key=lambda a: a.ended or 0)
    assert len(on_broken) >= 3 and all(a.outcome is Outcome.FAILED for a in on_broken)
    third = on_broken[2].ended or 0
    # none started after the third failure was recorded (one already in flight may fail too)
    late = [a for a in on_broken if a.started > third]
    assert not late and len(on_broken) <= 4, on_broken
    waker.close()
