"""`labrun cancel RUN` stops Docker and SSH attempts: nothing of the run is left running.

Real dockerd (tests/dockerd.py) and real sshd on loopback (tests/sshd.py). Each case runs
twice: with the runner alive (cancel asks it, its executors stop the attempts) and with
the runner SIGKILLed first (cancel finds the attempts through their backend: the
container by its attempt label, the remote attempt by the agent's record).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from labrun_proc import query, run, start
from procs import pids_where
from sshd import SshdLab

DEADLINE = 60.0  # generous: the machine is busy


def wait_until(what: str, check: Callable[[], Any], proc: subprocess.Popen[str] | None = None) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the runner ended while waiting for {what}: {proc.communicate()}")
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def started_ref(state: Path) -> str | None:
    try:
        rows = query(state, "SELECT ref FROM attempts WHERE ref IS NOT NULL")
    except Exception:  # the database is being created
        return None
    return str(rows[0][0]) if rows else None


def cancel(state: Path, cwd: Path, proc: subprocess.Popen[str], runner: str, **env: str) -> None:
    """`labrun cancel last` with the runner alive, or after SIGKILL; the run must end cancelled."""
    if runner == "killed":
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = run(["cancel", "last"], state, cwd, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    if runner == "live":
        assert proc.wait(DEADLINE) == 130, proc.communicate()
        assert "its runner" in done.stdout
    else:
        assert "1 leftover attempt stopped" in done.stdout, done.stdout
    assert query(state, "SELECT state FROM runs") == [("cancelled",)]
    assert query(state, "SELECT state FROM tasks") == [("cancelled",)]
    assert query(state, "SELECT outcome FROM attempts") == [("killed",)]


@pytest.mark.parametrize("runner", ["live", "killed"])
def test_cancel_leaves_no_container_of_the_run(
    tmp_path: Path, docker_url: str, docker_image: str, runner: str
) -> None:
    (tmp_path / "job.toml").write_text(
        f'[job]\nname = "boxed"\n[[tasks]]\nname = "nap"\nruntime = "docker"\nimage = "{docker_image}"\n'
        'command = "sleep 300"\ngrace = 1\n'
    )
    state = tmp_path / "state"
    api = docker.APIClient(base_url=docker_url, version="auto")
    proc = start(["run", "job.toml", "--plain"], state, tmp_path, DOCKER_HOST=docker_url)
    try:
        container = wait_until("the container", lambda: started_ref(state), proc)
        assert api.inspect_container(container)["State"]["Running"]
        cancel(state, tmp_path, proc, runner, DOCKER_HOST=docker_url)
        with pytest.raises(docker.errors.NotFound):
            api.inspect_container(container)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        api.close()


def _processes_with(marker: str) -> list[int]:
    """Pids whose command line holds `marker` (the "remote" node is this machine; a zombie's
    command line is empty)."""
    return pids_where("cmdline", lambda cmdline: marker.encode() in cmdline)


@pytest.mark.parametrize("runner", ["live", "killed"])
def test_cancel_leaves_no_remote_process_of_the_run(tmp_path: Path, sshd_lab: SshdLab, runner: str) -> None:
    sshd_lab.start("node-a")
    (tmp_path / "labrun.toml").write_text(
        '[nodes.local]\ncpus = 1\n[nodes.node-a]\nssh = "node-a"\n'
        f'ssh_config = "{sshd_lab.ssh_config}"\nworkdir = "{tmp_path}/remote"\n'
    )
    marker = f"300.{random.randrange(10**6, 10**7)}"  # a sleep no other process runs
    (tmp_path / "job.toml").write_text(
        '[job]\nname = "far"\n[[tasks]]\nname = "nap"\nnodes = ["node-a"]\n'
        f'command = "sleep {marker}; echo woke"\ngrace = 1\n'
    )
    state = tmp_path / "state"
    proc = start(["run", "job.toml", "--plain"], state, tmp_path)
    try:
        wait_until("the remote attempt", lambda: (started_ref(state) or "?").endswith("-r1-a1"), proc)
        wait_until("its processes", lambda: _processes_with(marker), proc)
        cancel(state, tmp_path, proc, runner)
        assert _processes_with(marker) == []
        (status_file,) = (tmp_path / "remote" / "attempts").glob("*-r1-a1/status.json")  # STATE_ID-r1-a1
        status = status_file.read_text()
        assert '"signal": 15' in status  # TERM first, as to a local attempt
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _processes_with(marker):  # never leave a sleeper behind a failed test
            os.kill(pid, signal.SIGKILL)


def test_cancel_after_the_runner_died_removes_a_cgroup_attempts_cgroup(tmp_path: Path) -> None:
    from labrun.cgroup import detect, open_existing

    support = detect()
    if not support.ok:
        pytest.skip(f"no cgroup here: {support.reason}")
    marker = f"300.{random.randrange(10**6, 10**7)}"
    (tmp_path / "job.toml").write_text(
        f'[job]\nname = "grouped"\n[[tasks]]\nname = "nap"\nruntime = "cgroup"\ncommand = "sleep {marker}"\n'
    )
    state = tmp_path / "state"
    proc = start(["run", "job.toml", "--plain"], state, tmp_path)
    try:
        name = wait_until("the attempt's cgroup", lambda: started_ref(state), proc)
        wait_until("its process", lambda: _processes_with(marker), proc)
        assert open_existing(support, name) is not None
        cancel(state, tmp_path, proc, "killed")
        assert _processes_with(marker) == []
        assert open_existing(support, name) is None  # swept: no cgroup outlives the run
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _processes_with(marker):
            os.kill(pid, signal.SIGKILL)
