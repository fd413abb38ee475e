"""What Docker itself says about an attempt reaches `labrun why`, kept apart from the kernel's
facts: its State.Error as the executor's note, and its OOMKilled flag as its own source.

Real dockerd (tests/dockerd.py), real runner processes, real SQLite.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import labrun_proc
import pytest
from e2e import MiB, attempts, labrun, write_job


@pytest.fixture
def api(docker_url: str) -> Iterator[Any]:
    client = docker.APIClient(base_url=docker_url, version="auto")
    yield client
    client.close()


def why(tmp_path: Path, url: str) -> dict[str, Any]:
    done = labrun(tmp_path, "why", "last", "t", "--json", env={"DOCKER_HOST": url})
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def wait_until(what: str, check: Any, limit: float = 60.0) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {limit:.0f}s")


def started_container(state: Path) -> list[tuple[object, ...]]:
    if not (state / "labrun.db").exists():
        return []
    try:
        return labrun_proc.query(state, "SELECT ref FROM attempts WHERE ref IS NOT NULL")
    except sqlite3.OperationalError:  # the runner is still creating the tables
        return []


def test_docker_oomkilled_is_shown_apart_from_the_kernel_counter(
    tmp_path: Path, docker_url: str, docker_image: str
) -> None:
    write_job(
        tmp_path,
        f'[[tasks]]\nname = "t"\nruntime = "docker"\nimage = "{docker_image}"\nmemory = "64MiB"\n'
        'on_oom = "fail"\ncommand = "dd if=/dev/zero of=/dev/null bs=200M count=1"\n',
    )
    done = labrun(tmp_path, "run", "--no-preflight", "job.toml", env={"DOCKER_HOST": docker_url})
    assert done.returncode == 1, done.stdout + done.stderr
    (only,) = attempts(tmp_path, env={"DOCKER_HOST": docker_url})
    assert only["outcome"] == "oom" and only["memory_limit"] == 64 * MiB
    assert only["container_oom_killed"] is True and only["oom_kills"] == 0  # one source, not both
    found = why(tmp_path, docker_url)
    assert found["cause"] == "resource_exhaustion"
    assert "Docker reported OOMKilled" in found["title"]
    assert "Docker reported OOMKilled" in found["evidence"]
    # Docker's flag is not the kernel's counter: the runtime keeps none, so none is claimed
    assert not any(line.startswith("OOM kills") for line in found["evidence"])


def test_a_docker_state_error_reaches_why(
    tmp_path: Path, docker_url: str, docker_image: str, api: Any
) -> None:
    """The runner dies; the container is stopped and restarted by hand, which Docker refuses
    (its workdir mount is now a file); the resumed run adopts it and records Docker's error."""
    work = tmp_path / "work"
    work.mkdir()
    write_job(
        tmp_path,
        f'[[tasks]]\nname = "t"\nruntime = "docker"\nimage = "{docker_image}"\nretries = 0\n'
        'command = ["sleep", "600"]\n',
    )
    job = tmp_path / "job.toml"
    job.write_text(job.read_text().replace('name = "t"\n', 'name = "t"\nworkdir = "work"\n', 1))
    state = tmp_path / "state"
    runner = labrun_proc.start(["run", "--no-preflight", "job.toml"], state, tmp_path, DOCKER_HOST=docker_url)
    try:
        rows = wait_until("the container started", lambda: started_container(state))
    finally:
        runner.kill()  # SIGKILL: the runner "crashed"; its container keeps running
        runner.communicate(timeout=30)
    container = str(rows[0][0])
    api.kill(container)
    wait_until("the container stopped", lambda: not api.inspect_container(container)["State"]["Running"])
    shutil.rmtree(work)
    work.write_text("a file where the mounted directory was\n")
    with pytest.raises(docker.errors.APIError):
        api.start(container)
    error = api.inspect_container(container)["State"]["Error"]
    assert "not a directory" in error
    done = labrun(tmp_path, "run", "--resume", "--no-preflight", "job.toml", env={"DOCKER_HOST": docker_url})
    assert done.returncode == 1, done.stdout + done.stderr
    (only,) = attempts(tmp_path, env={"DOCKER_HOST": docker_url})
    assert only["note"] == f"Docker State.Error: {error}"
    found = why(tmp_path, docker_url)
    assert found["cause"] == "misconfiguration"
    assert found["title"] == f"Docker could not run the container: {error}"
    assert f"noted by the executor: Docker State.Error: {error}" in found["evidence"]
    with pytest.raises(docker.errors.NotFound):
        api.inspect_container(container)  # collected, then removed
