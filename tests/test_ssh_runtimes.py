"""Runtimes other than `process` on ssh nodes, against real sshd servers (tests/sshd.py).

The "remote" nodes are this machine, so the cgroup runtime there is the kernel's real one
(cgroup v1 as root here), driven by the agent's monitor on the far side of ssh.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from e2e import MiB, attempts, labrun
from sshd import SshdLab
from test_memory_series import GROW
from test_ssh_nodes import launch, ssh_node, wait_for, write_lab

from labrun.cgroup import detect, open_existing
from labrun.executors.ssh import SshExecutor
from labrun.memseries import decode
from labrun.model import DockerOptions, Launch, Runtime
from labrun.ssh.nodes import target_of
from labrun.ssh.session import AgentSession

SUPPORT = detect()
needs_cgroup = pytest.mark.skipif(not SUPPORT.ok, reason=f"no cgroup here: {SUPPORT.reason}")
HOG = "head -c 300000000 /dev/zero | dd of=/dev/null bs=300M count=1 iflag=fullblock"


@needs_cgroup
def test_a_remote_cgroup_task_is_oom_then_its_grown_retry_succeeds(tmp_path: Path, sshd_lab: SshdLab) -> None:
    sshd_lab.start("node-a")
    write_lab(tmp_path, sshd_lab, {"node-a": 'runtimes = ["process", "cgroup"]'})
    (tmp_path / "job.toml").write_text(
        '[job]\nname = "remote-oom"\n[[tasks]]\nname = "hog"\nruntime = "cgroup"\nnodes = ["node-a"]\n'
        f'memory = "100MiB"\nmemory_growth = 4\nretry_delay = 0\ncommand = "{HOG}"\n'
    )
    done = labrun(tmp_path, "run", "job.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    first, second = attempts(tmp_path, "hog")
    assert first["outcome"] == "oom" and first["oom_killed"], first
    assert first["node"] == "node-a" and first["mechanism"] == SUPPORT.mechanism
    assert first["memory_limit"] == 100 * MiB
    assert 90 * MiB <= first["peak_memory"] <= 101 * MiB  # the kernel stopped it at the limit
    assert second["outcome"] == "succeeded" and second["node"] == "node-a"
    assert second["memory_limit"] == 400 * MiB
    assert second["peak_memory"] >= 280 * 10**6 and second["cpu_seconds"] > 0


@needs_cgroup
def test_a_remote_attempts_cgroup_is_removed_after_it_ends(tmp_path: Path, sshd_lab: SshdLab) -> None:
    sshd_lab.start("node-a")
    lab = write_lab(tmp_path, sshd_lab, {"node-a": 'runtimes = ["cgroup"]'})
    session = AgentSession(target_of(lab, ssh_node(lab)), ssh_node(lab).workdir)
    assert "cgroup" in session.connect()["runtimes"]
    executor = SshExecutor(session, poll_interval=0.1, runtime=Runtime.CGROUP)
    try:
        # a child that leaves the process group: the cgroup's removal ends it too
        started = executor.start(launch(tmp_path, ("sh", "-c", "setsid sleep 60 & echo $GREETING"), 1))
        facts = wait_for(executor, 1)
    finally:
        executor.close()
    assert started.mechanism == SUPPORT.mechanism
    assert facts[1].exit_code == 0 and facts[1].peak_memory  # type: ignore[attr-defined]
    assert (tmp_path / "logs/1/stdout").read_text() == "hello\n"
    status = json.loads((tmp_path / "remote-node-a/attempts/r1-a1/status.json").read_text())
    assert status["mechanism"] == SUPPORT.mechanism and status["oom_kills"] == 0
    assert open_existing(SUPPORT, status["cgroup"]) is None, "the attempt's cgroup outlived it"


def docker_executor(tmp_path: Path, sshd_lab: SshdLab, docker_url: str) -> SshExecutor:
    """node-a, whose sessions get DOCKER_HOST from its sshd (as a node's environment would)."""
    sshd_lab.start("node-a", env={"DOCKER_HOST": docker_url})
    lab = write_lab(tmp_path, sshd_lab, {"node-a": 'runtimes = ["docker"]'})
    session = AgentSession(target_of(lab, ssh_node(lab)), ssh_node(lab).workdir)
    session.connect()
    return SshExecutor(session, poll_interval=0.1, runtime=Runtime.DOCKER)


def in_image(tmp_path: Path, image: str, argv: tuple[str, ...], attempt_id: int, memory: int) -> Launch:
    base = launch(tmp_path, argv, attempt_id)
    return dataclasses.replace(base, memory=memory, options=DockerOptions(image=image, shared=str(tmp_path)))


def test_a_remote_container_oom_is_oom_and_exit_codes_pass_through(
    tmp_path: Path, sshd_lab: SshdLab, docker_url: str, docker_image: str
) -> None:
    executor = docker_executor(tmp_path, sshd_lab, docker_url)
    hog = "dd if=/dev/zero of=/dev/null bs=64M count=1"  # one 64 MB buffer, under a 16 MiB limit
    try:
        started = executor.start(in_image(tmp_path, docker_image, ("sh", "-c", hog), 1, 16 * MiB))
        executor.start(in_image(tmp_path, docker_image, ("sh", "-c", "echo $GREETING; exit 3"), 2, 64 * MiB))
        facts = wait_for(executor, 2, limit=60)
    finally:
        executor.close()
    assert started.mechanism == "docker"
    assert facts[1].oom_killed and facts[1].exit_code == 137  # type: ignore[attr-defined]
    assert facts[2].exit_code == 3 and not facts[2].oom_killed  # type: ignore[attr-defined]
    assert (tmp_path / "logs/2/stdout").read_text() == "hello\n"
    status = json.loads((tmp_path / "remote-node-a/attempts/r1-a2/status.json").read_text())
    gone = subprocess.run(
        ["docker", "inspect", status["container"]],
        env={**os.environ, "DOCKER_HOST": docker_url},
        capture_output=True,
        check=False,
    )
    assert gone.returncode != 0, "the container outlived its attempt"


def test_an_image_missing_on_the_node_is_a_config_error_saying_how_to_load_it(
    tmp_path: Path, sshd_lab: SshdLab, docker_url: str
) -> None:
    sshd_lab.start("node-a", env={"DOCKER_HOST": docker_url})
    write_lab(tmp_path, sshd_lab, {"node-a": 'runtimes = ["docker"]'})
    (tmp_path / "job.toml").write_text(
        '[job]\nname = "no-image"\n[[tasks]]\nname = "t"\nruntime = "docker"\nnodes = ["node-a"]\n'
        'image = "labrun-test/absent:9"\nimage_tar = "/srv/images/absent.tar"\ncommand = "true"\n'
    )
    done = labrun(tmp_path, "run", "--no-preflight", "job.toml")
    assert done.returncode != 0
    (only,) = attempts(tmp_path, "t")
    assert only["outcome"] == "config_error" and only["node"] == "node-a"
    reason = json.dumps(only)
    assert "on node node-a" in reason and "docker load -i /srv/images/absent.tar" in reason


@needs_cgroup
def test_a_remote_attempt_brings_back_its_memory_series(tmp_path: Path, sshd_lab: SshdLab) -> None:
    """The agent's monitor samples the attempt's cgroup once a second while it waits, and
    the series comes back in the status file, stored with the end as for a local attempt."""
    sshd_lab.start("node-a")
    write_lab(tmp_path, sshd_lab, {"node-a": 'runtimes = ["process", "cgroup"]'})
    (tmp_path / "grow.py").write_text(GROW)
    (tmp_path / "job.toml").write_text(
        '[job]\nname = "remote-series"\n[[tasks]]\nname = "grow"\nruntime = "cgroup"\nnodes = ["node-a"]\n'
        f'memory = "1GiB"\ncommand = "{sys.executable} {tmp_path / "grow.py"} 16"\n'
    )
    done = labrun(tmp_path, "run", "job.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    conn = sqlite3.connect(tmp_path / "state" / "labrun.db")
    ((node, text),) = conn.execute("SELECT node, memory_series FROM attempts").fetchall()
    conn.close()
    sizes = [size for _, size in decode(text)]
    assert node == "node-a" and len(sizes) >= 3, text
    assert sizes[-1] >= sizes[0] + 40 * MiB
