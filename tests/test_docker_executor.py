"""DockerExecutor against a real dockerd (tests/dockerd.py starts one when none answers)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from labrun import state_id
from labrun.executors.base import Waker
from labrun.executors.docker import DockerExecutor
from labrun.memseries import decode
from labrun.model import DockerOptions, Facts, Launch, LaunchError, Started

MiB = 1024 * 1024


@pytest.fixture
def waker() -> Iterator[Waker]:
    w = Waker()
    yield w
    w.close()


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    """The state directory whose id labels the test's containers."""
    return str(tmp_path / "state")


@pytest.fixture
def executor(docker_url: str, waker: Waker, state_dir: str) -> Iterator[DockerExecutor]:
    ex = DockerExecutor(waker, base_url=docker_url, state_dir=state_dir)
    yield ex
    # Kill and collect what a test left running, so no container or cgroup outlives it.
    for attempt_id in ex.running():
        ex.signal(attempt_id, signal.SIGKILL)
    while ex.running():
        wait_end(ex, waker, timeout=15)
    ex.close()


@pytest.fixture
def api(docker_url: str) -> Iterator[Any]:
    client = docker.APIClient(base_url=docker_url, version="auto")
    yield client
    client.close()


def make_launch(
    tmp_path: Path,
    image: str,
    *argv: str,
    attempt_id: int = 1,
    memory: int = 256 * MiB,
    outputs: tuple[str, ...] = (),
    **options: Any,
) -> Launch:
    return Launch(
        attempt_id=attempt_id,
        run_id=7,
        task_name="t",
        attempt=1,
        argv=argv,
        env={"FOO": "bar"},
        workdir=str(tmp_path),
        stdout_path=str(tmp_path / f"{attempt_id}.out"),
        stderr_path=str(tmp_path / f"{attempt_id}.err"),
        cpus=1.0,
        memory=memory,
        outputs=outputs,
        options=DockerOptions(image=image, **options),
    )


def wait_end(
    ex: DockerExecutor, waker: Waker, timeout: float = 30.0, commit: bool = True
) -> list[tuple[int, Facts]]:
    """The next ends; `commit`: then told committed, as the runner does after its transaction."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = ex.finished()
        if done:
            if commit:
                ex.committed([attempt_id for attempt_id, _ in done])
            return done
        waker.wait(deadline - time.monotonic())
    raise AssertionError(f"no attempt ended within {timeout}s")


def run_one(ex: DockerExecutor, waker: Waker, launch: Launch) -> Facts:
    ex.start(launch)
    [(attempt_id, facts)] = wait_end(ex, waker)
    assert attempt_id == launch.attempt_id
    return facts


@pytest.mark.parametrize("code", [0, 3])
def test_exit_code_passes_through(
    executor: DockerExecutor, waker: Waker, docker_image: str, tmp_path: Path, code: int
) -> None:
    facts = run_one(executor, waker, make_launch(tmp_path, docker_image, "sh", "-c", f"exit {code}"))
    assert (facts.exit_code, facts.signal, facts.oom_killed) == (code, None, False)
    assert executor.running() == []


def test_container_oom_is_reported(
    executor: DockerExecutor, waker: Waker, docker_image: str, tmp_path: Path
) -> None:
    argv = ("dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1")
    facts = run_one(executor, waker, make_launch(tmp_path, docker_image, *argv, memory=64 * MiB))
    assert facts.oom_killed is True
    assert (facts.exit_code, facts.signal) == (137, signal.SIGKILL)


def test_same_dd_under_enough_memory_is_no_oom(
    executor: DockerExecutor, waker: Waker, docker_image: str, tmp_path: Path
) -> None:
    argv = ("dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1")
    facts = run_one(executor, waker, make_launch(tmp_path, docker_image, *argv, memory=512 * MiB))
    assert (facts.exit_code, facts.oom_killed) == (0, False)


def test_stdout_and_stderr_land_in_their_files(
    executor: DockerExecutor, waker: Waker, docker_image: str, tmp_path: Path
) -> None:
    script = 'echo "out $FOO $(pwd)"; echo err >&2'
    launch = make_launch(tmp_path, docker_image, "sh", "-c", script)
    assert run_one(executor, waker, launch).exit_code == 0
    assert Path(launch.stdout_path).read_text() == f"out bar {tmp_path}\n"
    assert Path(launch.stderr_path).read_text() == "err\n"


def test_missing_image_names_it_and_the_fix(
    executor: DockerExecutor, docker_image: str, tmp_path: Path
) -> None:
    with pytest.raises(LaunchError, match=r"labrun-test/absent:9.*docker load -i"):
        executor.start(make_launch(tmp_path, "labrun-test/absent:9", "true"))
    assert executor.running() == []


def test_image_tar_is_loaded_when_image_missing(
    executor: DockerExecutor, waker: Waker, docker_image: str, tmp_path: Path, api: Any
) -> None:
    tag = f"labrun-test/tarred:{uuid.uuid4().hex[:8]}"
    repo, _, version = tag.partition(":")
    api.tag(docker_image, repo, version)
    tar = tmp_path / "image.tar"
    with tar.open("wb") as out:
        for chunk in api.get_image(tag):
            out.write(chunk)
    api.remove_image(tag)
    try:
        facts = run_one(executor, waker, make_launch(tmp_path, tag, "true", image_tar=str(tar)))
        assert facts.exit_code == 0
        assert api.inspect_image(tag)["RepoTags"]
    finally:
        api.remove_image(tag)


def test_image_tar_without_the_image_says_so(
    executor: DockerExecutor, docker_image: str, tmp_path: Path, api: Any
) -> None:
    tar = tmp_path / "other.tar"
    with tar.open("wb") as out:
        for chunk in api.get_image(docker_image):
            out.write(chunk)
    launch = make_launch(tmp_path, "labrun-test/absent:9", "true", image_tar=str(tar))
    with pytest.raises(LaunchError, match=r"does not contain image labrun-test/absent:9"):
        executor.start(launch)


def test_labels_user_limits_and_no_privilege(
    executor: DockerExecutor, docker_image: str, tmp_path: Path, api: Any, state_dir: str
) -> None:
    started = executor.start(make_launch(tmp_path, docker_image, "sleep", "30", attempt_id=42))
    info = api.inspect_container(started.ref)
    assert info["Config"]["Labels"] == {
        "labrun.state": state_id.read(state_dir),  # made by the first start, 0600
        "labrun.run": "7",
        "labrun.task": "t",
        "labrun.attempt": "1",
        "labrun.attempt_id": "42",
    }
    assert info["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"
    host = info["HostConfig"]
    assert (host["Memory"], host["MemorySwap"], host["NanoCpus"]) == (256 * MiB, 256 * MiB, 10**9)
    assert host["Privileged"] is False
    assert host["NetworkMode"] != "host"
    assert started.mechanism == "docker"
    assert os.stat(state_id.path_of(state_dir)).st_mode & 0o777 == 0o600


def test_files_in_workdir_are_owned_by_the_mapped_user(
    executor: DockerExecutor, waker: Waker, docker_image: str, tmp_path: Path
) -> None:
    tmp_path.chmod(0o777)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    script = f"touch made && touch {shared}/too"
    launch = make_launch(tmp_path, docker_image, "sh", "-c", script, user="1000:1000", shared=str(shared))
    assert run_one(executor, waker, launch).exit_code == 0
    for made in (tmp_path / "made", shared / "too"):
        assert (made.stat().st_uid, made.stat().st_gid) == (1000, 1000)


def test_signal_stops_a_running_container(
    executor: DockerExecutor, waker: Waker, docker_image: str, tmp_path: Path
) -> None:
    executor.start(make_launch(tmp_path, docker_image, "sleep", "60"))
    assert executor.running() == [1]
    begun = time.monotonic()
    executor.signal(1, signal.SIGTERM)
    [(_, facts)] = wait_end(executor, waker, timeout=15)
    assert time.monotonic() - begun < 10
    assert (facts.exit_code, facts.signal, facts.oom_killed) == (143, signal.SIGTERM, False)
    executor.signal(1, signal.SIGTERM)  # already finished: ignored


def test_exit_wakes_the_waker(
    executor: DockerExecutor, waker: Waker, docker_image: str, tmp_path: Path
) -> None:
    executor.start(make_launch(tmp_path, docker_image, "sleep", "1"))
    begun = time.monotonic()
    waker.wait(30)  # returns early only if the executor wakes it
    assert time.monotonic() - begun < 10
    deadline = time.monotonic() + 5
    while not (done := executor.finished()) and time.monotonic() < deadline:
        waker.wait(deadline - time.monotonic())
    assert [a for a, _ in done] == [1]
    executor.committed([1])


def test_missing_outputs_after_exit_zero(
    executor: DockerExecutor, waker: Waker, docker_image: str, tmp_path: Path
) -> None:
    made, absent = tmp_path / "made.txt", tmp_path / "absent.txt"
    launch = make_launch(
        tmp_path, docker_image, "sh", "-c", "echo x > made.txt", outputs=(str(made), str(absent))
    )
    facts = run_one(executor, waker, launch)
    assert (facts.exit_code, facts.missing_outputs) == (0, (str(absent),))


def test_adopt_finds_container_started_by_another_executor(
    docker_url: str, executor: DockerExecutor, waker: Waker, docker_image: str, tmp_path: Path, state_dir: str
) -> None:
    launch = make_launch(tmp_path, docker_image, "sh", "-c", "sleep 1; exit 5", attempt_id=9)
    first = DockerExecutor(None, base_url=docker_url, state_dir=state_dir)
    started = first.start(launch)
    first.close()  # the first runner "crashed"; its container keeps running
    assert executor.adopt(9, launch, Started(mechanism="docker")) is True  # found by label
    [(attempt_id, facts)] = wait_end(executor, waker)
    assert (attempt_id, facts.exit_code) == (9, 5)
    assert executor.adopt(9, launch, started) is False  # removed after collection


def test_container_removed_after_collection(
    executor: DockerExecutor, waker: Waker, docker_image: str, tmp_path: Path, api: Any
) -> None:
    started = executor.start(make_launch(tmp_path, docker_image, "true"))
    wait_end(executor, waker)
    with pytest.raises(docker.errors.NotFound):
        api.inspect_container(started.ref)


def test_peak_memory_and_cpu_time_from_the_cgroup_parent(
    executor: DockerExecutor, waker: Waker, docker_image: str, tmp_path: Path
) -> None:
    argv = ("dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=3")
    launch = make_launch(tmp_path, docker_image, *argv, memory=512 * MiB)
    executor.start(launch)
    if executor._cgroup_version is None:
        pytest.skip("this daemon's cgroups cannot be read here (systemd driver or remote)")
    [(_, facts)] = wait_end(executor, waker)
    assert facts.exit_code == 0
    assert facts.peak_memory is not None and 100 * MiB <= facts.peak_memory < 300 * MiB
    assert facts.cpu_seconds is not None and 0 < facts.cpu_seconds < 10
    root = "/sys/fs/cgroup/memory" if executor._cgroup_version == "1" else "/sys/fs/cgroup"
    assert not list(Path(root, "labrun").glob("r7-a1-*"))  # the parent was removed


def test_oom_peak_is_near_the_limit(
    executor: DockerExecutor, waker: Waker, docker_image: str, tmp_path: Path
) -> None:
    argv = ("dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1")
    facts = run_one(executor, waker, make_launch(tmp_path, docker_image, *argv, memory=64 * MiB))
    if facts.peak_memory is None:
        pytest.skip("this daemon's cgroups cannot be read here (systemd driver or remote)")
    assert facts.oom_killed
    assert 56 * MiB <= facts.peak_memory <= 72 * MiB  # the parent also counts kernel memory


def test_image_tar_that_is_no_image_archive_says_so(
    executor: DockerExecutor, docker_image: str, tmp_path: Path
) -> None:
    tar = tmp_path / "junk.tar"
    tar.write_bytes(b"not a tar at all" * 100)
    launch = make_launch(tmp_path, "labrun-test/absent:9", "true", image_tar=str(tar))
    with pytest.raises(LaunchError, match=r"junk\.tar could not be loaded.*docker save"):
        executor.start(launch)


def test_container_the_daemon_refuses_is_a_launch_error(
    executor: DockerExecutor, docker_image: str, tmp_path: Path
) -> None:
    with pytest.raises(LaunchError, match=r"daemon refused the container.*[Mm]inimum memory"):
        executor.start(make_launch(tmp_path, docker_image, "true", memory=1024 * 1024))
    launch = make_launch(tmp_path, docker_image, "true", network="no-such-network")
    with pytest.raises(LaunchError, match=r"did not start: network no-such-network not found"):
        executor.start(launch)
    assert executor.running() == []


def test_an_end_not_committed_is_reported_again_after_a_restart(
    docker_url: str,
    executor: DockerExecutor,
    waker: Waker,
    docker_image: str,
    tmp_path: Path,
    api: Any,
    state_dir: str,
) -> None:
    """`finished` keeps the container (the attempt's exit record) until `committed`: a runner
    that died in between leaves it, and the next executor reads the same end from it."""
    launch = make_launch(tmp_path, docker_image, "sh", "-c", "echo once; exit 3", attempt_id=11)
    first_waker = Waker()
    first = DockerExecutor(first_waker, base_url=docker_url, state_dir=state_dir)
    started = first.start(launch)
    [(_, seen)] = wait_end(first, first_waker, commit=False)
    first.close()  # died before its commit
    first_waker.close()
    assert api.inspect_container(started.ref)["State"]["Status"] == "exited"
    assert executor.adopt(11, launch, Started(mechanism="docker")) is True
    [(attempt_id, facts)] = wait_end(executor, waker)
    assert (attempt_id, seen.exit_code, facts.exit_code) == (11, 3, 3)
    assert Path(launch.stdout_path).read_text() == "once\n"  # copied afresh, not twice
    with pytest.raises(docker.errors.NotFound):
        api.inspect_container(started.ref)


def test_a_container_of_another_state_directory_is_never_adopted(
    docker_url: str, executor: DockerExecutor, docker_image: str, tmp_path: Path, api: Any
) -> None:
    launch = make_launch(tmp_path, docker_image, "sleep", "30", attempt_id=12)
    other = DockerExecutor(None, base_url=docker_url, state_dir=str(tmp_path / "other"))
    started = other.start(launch)
    try:
        assert executor.adopt(12, launch, Started(mechanism="docker")) is False  # same attempt id
        assert executor.running() == []
    finally:
        other.close()
        api.remove_container(started.ref, force=True)


def test_memory_series_from_the_cgroup_parent_while_it_runs(
    executor: DockerExecutor, waker: Waker, docker_image: str, tmp_path: Path
) -> None:
    # 10 MiB more in /dev/shm (tmpfs: charged to the container) every half second
    grow = "for i in 1 2 3 4 5 6; do head -c 10485760 /dev/zero > /dev/shm/f$i; sleep 0.5; done; sleep 1"
    executor.start(make_launch(tmp_path, docker_image, "sh", "-c", grow, memory=512 * MiB))
    if executor._cgroup_version is None:
        pytest.skip("this daemon's cgroups cannot be read here (systemd driver or remote)")
    deadline, done = time.monotonic() + 60, []
    while not done and time.monotonic() < deadline:  # the runner's loop: tick when asked
        due = executor.wake_at(time.time())
        if due is not None and due <= time.time():
            executor.tick(time.time())
        done = executor.finished()
        waker.wait(None if due is None else max(0.0, min(due - time.time(), 1.0)))
    [(_, facts)] = done
    executor.committed([1])
    sizes = [size for _, size in decode(facts.memory_series)]
    assert facts.exit_code == 0 and len(sizes) >= 3, facts.memory_series
    assert sizes[-1] >= sizes[0] + 20 * MiB  # it climbed while sampled
