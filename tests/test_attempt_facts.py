"""The "ended attempt → facts" rules (labrun/attempt_facts.py): one output-present rule, the
same on the head and on an SSH node's agent (real sshd, tests/sshd.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from e2e import attempts, labrun
from sshd import SshdLab
from test_ssh_nodes import write_lab

from labrun import attempt_facts
from labrun.cgroup import Usage


def make(tmp_path: Path, kind: str) -> str:
    path = tmp_path / kind
    if kind == "file":
        path.write_text("x")
    elif kind == "empty-file":
        path.write_text("")
    elif kind == "directory":
        path.mkdir()
        (path / "inside").write_text("")  # one entry is enough, even an empty one
    elif kind == "empty-directory":
        path.mkdir()
    elif kind == "dangling-symlink":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "symlink-to-file":
        (tmp_path / "target").write_text("x")
        path.symlink_to(tmp_path / "target")
    return str(path)


@pytest.mark.parametrize(
    ("kind", "present"),
    [
        ("file", True),
        ("directory", True),
        ("symlink-to-file", True),
        ("empty-file", False),
        ("empty-directory", False),
        ("missing", False),
        ("dangling-symlink", False),
    ],
)
def test_output_present(tmp_path: Path, kind: str, present: bool) -> None:
    assert attempt_facts.output_present(make(tmp_path, kind)) is present


def test_an_unreadable_directory_is_missing(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any directory")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "x").write_text("x")
    locked.chmod(0)
    try:
        assert not attempt_facts.output_present(str(locked))
    finally:
        locked.chmod(0o700)


def test_missing_outputs_keep_the_declared_order(tmp_path: Path) -> None:
    paths = [make(tmp_path, k) for k in ("empty-directory", "file", "missing", "empty-file")]
    assert attempt_facts.missing_outputs(paths) == (paths[0], paths[2], paths[3])


def test_wait_status_and_exit_record(tmp_path: Path) -> None:
    assert attempt_facts.exit_of(3 << 8) == (3, None)
    assert attempt_facts.exit_of(9) == (None, 9)
    attempt = tmp_path / "run" / "task" / "1"
    log = attempt_facts.ExitLog(str(tmp_path / "run" / attempt_facts.EXITS_FILE))
    assert log.status(3) is None  # no file yet
    attempt.mkdir(parents=True)
    with open(log.path, "ab") as exits:
        exits.write(b"3 0\n4 137\n5 1")  # 5's line is not complete yet
        exits.flush()
        assert (log.status(3), log.status(4), log.status(5)) == (0, 137, None)
        exits.write(b"\n3 junk\n\n6 2\n")
    assert (log.status(5), log.status(6), log.status(3)) == (1, 2, 0)


class _Cgroup:
    def __init__(self, usage: Usage | Exception) -> None:
        self._usage = usage

    def usage(self) -> Usage:
        if isinstance(self._usage, Exception):
            raise self._usage
        return self._usage


def test_cgroup_notes_say_what_could_not_be_measured() -> None:
    full = attempt_facts.read_cgroup(_Cgroup(Usage(peak_memory=5, oom_kills=1, cpu_seconds=0.5)))
    assert (full.oom_kills, full.peak_memory, full.cpu_seconds, full.notes) == (1, 5, 0.5, ())
    blind = attempt_facts.read_cgroup(_Cgroup(Usage(peak_memory=5, oom_kills=None, cpu_seconds=None)))
    assert blind.notes == (attempt_facts.NO_OOM_COUNTER,)
    broken = attempt_facts.read_cgroup(_Cgroup(OSError("memory.events: gone")))
    assert broken.oom_kills is None and broken.notes == ("cgroup counters unreadable: memory.events: gone",)


# -- the same rule on the head and on a node ----------------------------------------------

MAKES = " && ".join(
    (
        "mkdir -p empty-dir full-dir",
        "touch full-dir/x empty.txt",
        "echo x > full.txt",
        "ln -sf nowhere dangling",
    )
)
DECLARED = ("full.txt", "full-dir", "empty.txt", "empty-dir", "dangling", "absent")
MISSING = ["empty.txt", "empty-dir", "dangling", "absent"]


def run_outputs_job(tmp_path: Path, where: str) -> tuple[dict[str, object], list[str]]:
    """The task's one attempt, and the outputs `labrun why` says are missing (as names)."""
    outputs = ", ".join(f'"{name}"' for name in DECLARED)
    (tmp_path / "job.toml").write_text(
        f'[job]\nname = "outs"\n[[tasks]]\nname = "t"\nretries = 0\n{where}\n'
        f'outputs = [{outputs}]\ncommand = "{MAKES}"\n'
    )
    done = labrun(tmp_path, "run", "--no-preflight", "job.toml")
    assert done.returncode == 1, done.stdout + done.stderr
    ran = attempts(tmp_path)
    assert len(ran) == 1, done.stdout + done.stderr
    only = ran[0]
    why = labrun(tmp_path, "why", "last", "t", "--json")
    evidence = json.loads(why.stdout)["evidence"]
    missing = [
        line.removeprefix("missing output: ") for line in evidence if line.startswith("missing output: ")
    ]
    return only, [os.path.relpath(path, tmp_path) for path in missing]


def test_empty_outputs_are_no_output_locally_and_on_an_ssh_node_alike(
    tmp_path: Path, sshd_lab: SshdLab
) -> None:
    local_dir, remote_dir = tmp_path / "local", tmp_path / "remote"
    local_dir.mkdir()
    remote_dir.mkdir()
    write_lab(local_dir, sshd_lab, {})
    local, local_missing = run_outputs_job(local_dir, "")
    sshd_lab.start("node-a")
    write_lab(remote_dir, sshd_lab, {"node-a": ""})
    remote, remote_missing = run_outputs_job(remote_dir, 'nodes = ["node-a"]')
    assert (local["node"], remote["node"]) == ("local", "node-a")
    assert local["outcome"] == remote["outcome"] == "no_output"
    assert local_missing == remote_missing == MISSING


def test_a_containers_128_plus_n_exit_is_signal_n_only_when_n_was_sent() -> None:
    """Docker reports its init's exit code; the head and the agent read it by this one rule."""
    assert attempt_facts.container_signal(143, False, [15]) == 15  # labrun's SIGTERM
    assert attempt_facts.container_signal(137, False, [15, 9]) == 9  # the KILL after the grace
    assert attempt_facts.container_signal(137, True, []) == 9  # the OOM killer's
    assert attempt_facts.container_signal(143, False, []) is None  # the task chose to exit 143
    assert attempt_facts.container_signal(137, False, [15]) is None
    assert attempt_facts.container_signal(0, False, [15]) is None
    assert attempt_facts.container_signal(None, False, [9]) is None
