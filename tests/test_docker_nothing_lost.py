"""Docker attempts across runner crashes (issue 12), with the real CLI and a real dockerd.

Each test kills the runner at an exact moment (`labrun.failpoint`), or SIGKILLs it while
its containers run, then resumes (or cancels, or collects) and checks what the tasks
themselves recorded: each appends to starts.txt when it begins, so a task that ran twice
shows twice. And nothing of this state directory is left on the daemon at the end.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from labrun_proc import query, run, start

from labrun import state_id

DEADLINE = 90.0  # generous: the machine is busy


@pytest.fixture
def api(docker_url: str) -> Iterator[Any]:
    client = docker.APIClient(base_url=docker_url, version="auto")
    yield client
    client.close()


def job(name: str, image: str, command: str, tasks: int = 1) -> str:
    return f"""
[job]
name = "{name}"
max_parallel = {tasks}

[defaults]
runtime = "docker"
image = "{image}"
memory = "64MiB"
cpus = 0.25
retry_delay = 0
grace = 1

[[tasks]]
name = "t"
items = {{ range = [0, {tasks}] }}
command = "{command}"
"""


RECORDS = "echo {item} >> starts.txt; echo out-{item}; echo {item} >> ends.txt"


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


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def ours(api: Any, state: Path) -> list[dict[str, Any]]:
    """Every container labelled with the state directory's id, running or not."""
    sid = state_id.read(str(state))
    assert sid, f"{state} has no id: it never made a container"
    return list(api.containers(all=True, filters={"label": f"labrun.state={sid}"}))


def labrun_ok(args: list[str], state: Path, cwd: Path, url: str, **env: str) -> str:
    done = run(args, state, cwd, timeout=DEADLINE, DOCKER_HOST=url, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout + done.stderr


def killed_at(point: str, state: Path, cwd: Path, url: str, args: tuple[str, ...] = ()) -> None:
    done = run(["run", "job.toml", "--plain", *args], state, cwd, DOCKER_HOST=url, LABRUN_FAILPOINT=point)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr


def test_a_container_created_but_not_started_at_the_kill_runs_once_on_resume(
    tmp_path: Path, docker_url: str, docker_image: str, api: Any
) -> None:
    (tmp_path / "job.toml").write_text(job("created", docker_image, RECORDS))
    state = tmp_path / "state"
    killed_at("docker-created:1", state, tmp_path, docker_url)
    [left] = ours(api, state)
    assert left["State"] == "created" and lines(tmp_path / "starts.txt") == []
    # Before: every resume waited on the `Created` container forever.
    labrun_ok(["run", "job.toml", "--plain", "--resume"], state, tmp_path, docker_url)
    assert lines(tmp_path / "starts.txt") == ["0"] == lines(tmp_path / "ends.txt")
    assert query(state, "SELECT outcome FROM attempts") == [("succeeded",)]  # adopted, not lost
    assert query(state, "SELECT state FROM runs") == [("succeeded",)]
    assert ours(api, state) == []


def test_an_end_seen_but_not_committed_is_read_again_from_its_container(
    tmp_path: Path, docker_url: str, docker_image: str, api: Any
) -> None:
    """The runner collected the exit and copied the logs, and died before the commit: the
    container is still there, so the resume records the real exit, not `lost`."""
    (tmp_path / "job.toml").write_text(job("ended", docker_image, RECORDS))
    state = tmp_path / "state"
    killed_at("ended:1", state, tmp_path, docker_url)
    [left] = ours(api, state)
    assert left["State"] == "exited"
    labrun_ok(["run", "job.toml", "--plain", "--resume"], state, tmp_path, docker_url)
    assert lines(tmp_path / "starts.txt") == ["0"]  # before: lost, and run a second time
    assert query(state, "SELECT outcome, exit_code FROM attempts") == [("succeeded", 0)]
    [stdout] = state.glob("runs/*/*.stdout")
    assert stdout.read_text() == "out-0\n"  # copied again afresh, not appended
    assert ours(api, state) == []


@pytest.mark.parametrize("by", ["resume", "gc"])
def test_a_container_whose_end_was_committed_is_swept_and_others_are_left(
    tmp_path: Path, docker_url: str, docker_image: str, api: Any, by: str
) -> None:
    """Killed after the commit, before the removal: the container is an orphan of this
    state directory. The resume and `labrun gc` remove it, and say so; a container of
    another state directory, or one without a state label, with the same attempt id, stays."""
    (tmp_path / "job.toml").write_text(job("swept", docker_image, RECORDS))
    state = tmp_path / "state"
    killed_at("recorded:1", state, tmp_path, docker_url)
    [orphan] = ours(api, state)
    foreign = ({"labrun.state": "another0install", "labrun.attempt_id": "1"}, {"labrun.attempt_id": "1"})
    others = [api.create_container(docker_image, ["true"], labels=labels)["Id"] for labels in foreign]
    try:
        if by == "gc":
            said = labrun_ok(["gc"], state, tmp_path, docker_url)
            which = "(exited) of run 1, task t[0], attempt 1 (attempt id 1): its attempt is no longer open"
            assert f"removed container {orphan['Id'][:12]} {which}" in said
        said = labrun_ok(["run", "job.toml", "--plain", "--resume"], state, tmp_path, docker_url)
        if by == "resume":
            assert f"removed what an earlier runner left: container {orphan['Id'][:12]}" in said
        assert ours(api, state) == []
        for other in others:
            assert api.inspect_container(other)["State"]["Status"] == "created"
    finally:
        for other in others:
            api.remove_container(other, force=True)
    assert lines(tmp_path / "starts.txt") == ["0"]
    assert query(state, "SELECT state FROM runs") == [("succeeded",)]


def _running_refs(state: Path, count: int) -> list[str] | None:
    try:
        rows = query(state, "SELECT ref FROM attempts WHERE ref IS NOT NULL ORDER BY id")
    except Exception:  # the database is being created
        return None
    return [str(r[0]) for r in rows] if len(rows) == count else None


def test_two_state_directories_on_one_daemon_never_touch_each_others_containers(
    tmp_path: Path, docker_url: str, docker_image: str, api: Any
) -> None:
    """The issue's reproduction: A's runner dies while its containers run (attempts 1-4);
    B's runner dies with its attempts 1-4 claimed and nothing started. B's resume, B's
    `gc` and a cancel in a third directory must neither adopt, kill nor remove A's
    containers (before: B recorded 4 successes it never ran, and removed A's)."""
    a, b, c = (tmp_path / name for name in "abc")
    for where in (a, b, c):
        where.mkdir()
    (a / "job.toml").write_text(job("a", docker_image, "sleep 300", tasks=4))
    proc = start(["run", "job.toml", "--plain"], a / "state", a, DOCKER_HOST=docker_url)
    try:
        refs = wait_until("A's four containers", lambda: _running_refs(a / "state", 4), proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        for where in (b, c):
            (where / "job.toml").write_text(job("b", docker_image, RECORDS, tasks=4))
            killed_at("claimed:1", where / "state", where, docker_url)
        labrun_ok(["run", "job.toml", "--plain", "--resume"], b / "state", b, docker_url)
        assert sorted(lines(b / "starts.txt")) == ["0", "1", "2", "3"]  # B ran its own tasks
        labrun_ok(["gc"], b / "state", b, docker_url)
        said = labrun_ok(["cancel", "last"], c / "state", c, docker_url)
        assert "0 leftover attempts stopped" in said
        assert [api.inspect_container(ref)["State"]["Running"] for ref in refs] == [True] * 4
        assert len(ours(api, a / "state")) == 4
        # A's own cancel still finds them: by its id and their attempt ids.
        said = labrun_ok(["cancel", "last"], a / "state", a, docker_url)
        assert "4 leftover attempts stopped" in said
        assert ours(api, a / "state") == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for ref in _running_refs(a / "state", 4) or []:
            try:
                api.remove_container(ref, force=True)
            except docker.errors.NotFound:
                pass
