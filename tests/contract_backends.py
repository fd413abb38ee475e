"""The executors the contract suite (test_executor_contract.py) runs against, one entry each.

A backend is a `Backend`: how to build a fresh executor (a second one stands for a runner
that restarted), the launch options its attempts need, whether it enforces a memory
limit, and what of an attempt it can leave behind besides processes. Adding a backend
is one factory in `BACKENDS`.

Everything an attempt starts carries `CONTRACT_TOKEN=<unique>` in its environment, so
"nothing of the attempt is left" is one scan of /proc on this machine, whatever the
runtime: the ssh "node" is this machine, and a container's processes are visible here.

`make_launch` and `wait_ends` are the only places that build a `Launch` and that wait on
an executor, so a change of `Launch.options` or of the wake methods is adapted here once.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from procs import pids_where
from slurm import Cluster
from sshd import new_lab
from test_ssh_nodes import ssh_node as ssh_node_of
from test_ssh_nodes import write_lab

from labrun.cgroup import detect, open_existing
from labrun.executors.base import Executor, Waker
from labrun.executors.cgroup import CgroupExecutor
from labrun.executors.docker import DockerExecutor
from labrun.executors.process import ProcessExecutor
from labrun.executors.slurm import SlurmExecutor
from labrun.executors.slurm_query import squeue
from labrun.executors.slurm_submit import SlurmOptions, name_prefix
from labrun.executors.ssh import SshExecutor
from labrun.model import DockerOptions, Facts, Launch, ProcessOptions, Runtime, RuntimeOptions, Started
from labrun.ssh.nodes import target_of
from labrun.ssh.session import AgentSession
from labrun.ssh.transport import SshTarget

MiB = 1024 * 1024
SH = "/bin/sh"  # on this machine, on the ssh node (this machine) and in the busybox image
TOKEN = "CONTRACT_TOKEN"
CGROUP_SUPPORT = detect()
FALLBACK_POLL = 0.25  # the longest the wait helper sleeps without an event (as the runner's poll)
# Attempt ids unique across sessions: the test dockerd is shared with other test runs.
_IDS = itertools.count(secrets.randbelow(10**9) + 10**9)
_MADE: list[Launch] = []  # launches of the current test, for kill_leftover_processes


@dataclass
class Backend:
    name: str
    new_executor: Callable[[Waker], Executor]
    options: RuntimeOptions = field(default_factory=ProcessOptions)
    enforces_memory: bool = False
    # what of a started attempt is left besides its processes (cgroups, containers);
    # `closed`: the executor that ran it was closed since
    leftovers: Callable[[Started, bool], list[str]] = lambda started, closed: []
    # test name, or name[variant], -> why this backend fails it today (a strict xfail)
    known_failures: dict[str, str] = field(default_factory=dict)
    lacks: tuple[str, ...] = ()  # programs the attempts' environment does not have


def make_launch(
    backend: Backend,
    tmp_path: Path,
    argv: tuple[str, ...],
    *,
    env: dict[str, str] | None = None,
    outputs: tuple[str, ...] = (),
    memory: int = 256 * MiB,
) -> Launch:
    """A Launch in its own log directory (the exit record lives beside the logs)."""
    attempt_id = next(_IDS)
    logs = tmp_path / "attempts" / str(attempt_id)
    launch = Launch(
        attempt_id=attempt_id,
        run_id=attempt_id,
        task_name="contract",
        attempt=1,
        argv=argv,
        env={TOKEN: secrets.token_hex(8), **(env or {})},
        workdir=str(tmp_path),
        stdout_path=str(logs / "stdout"),
        stderr_path=str(logs / "stderr"),
        cpus=1.0,
        memory=memory,
        outputs=outputs,
        options=backend.options,
    )
    _MADE.append(launch)
    return launch


def _next_wake(executor: Executor, now: float) -> float:
    """Seconds until the executor wants `finished()` called without an event."""
    wake_at = executor.wake_at(now)
    return math.inf if wake_at is None else max(0.0, wake_at - now)


def collect(executor: Executor, waker: Waker, ids: set[int] | None, limit: float) -> dict[int, Facts]:
    """What ends within `limit` seconds, waiting on the waker as the runner does; returns as
    soon as every attempt in `ids` ended (None: waits the whole `limit`)."""
    found: dict[int, Facts] = {}
    deadline = time.monotonic() + limit
    while True:
        now = time.time()
        due = executor.wake_at(now)
        if due is not None and due <= now:
            executor.tick(now)
        ended = executor.finished()
        executor.committed([attempt_id for attempt_id, _ in ended])  # as the runner, after its commit
        found.update(ended)
        left = deadline - time.monotonic()
        if (ids is not None and ids <= found.keys()) or left <= 0:
            return found
        # capped: a missed wake-up costs a fraction of a second here, not the test
        waker.wait(min(left, FALLBACK_POLL, _next_wake(executor, time.time())))


def wait_ends(executor: Executor, waker: Waker, ids: set[int], limit: float = 60.0) -> dict[int, Facts]:
    """Facts of each attempt in `ids`; fails when one has not ended within `limit` seconds."""
    found = collect(executor, waker, ids, limit)
    if not ids <= found.keys():
        raise AssertionError(f"attempts {sorted(ids - found.keys())} did not end within {limit:g}s")
    return found


def wait_end(executor: Executor, waker: Waker, launch: Launch, limit: float = 60.0) -> Facts:
    return wait_ends(executor, waker, {launch.attempt_id}, limit)[launch.attempt_id]


def quiet_for(executor: Executor, waker: Waker, seconds: float) -> dict[int, Facts]:
    """What ends within `seconds` (expected: nothing; a lower bound, never a timing assertion)."""
    return collect(executor, waker, None, seconds)


def processes_of(launch: Launch) -> list[int]:
    """Pids on this machine whose environment holds the launch's token (zombies have none)."""
    needle = f"{TOKEN}={launch.env[TOKEN]}".encode()
    return pids_where("environ", lambda environ: needle in environ.split(b"\0"))


def forget_launches() -> None:
    _MADE.clear()


def kill_leftover_processes() -> None:
    """Whatever a failed test left running of its attempts; the test already said so."""
    for launch in _MADE:
        for pid in processes_of(launch):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    _MADE.clear()


def wait_until(condition: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit:g}s: {what}")
        time.sleep(0.02)


# --- the backends ------------------------------------------------------------------------


def _process(request: pytest.FixtureRequest) -> Backend:
    return Backend(
        "process",
        ProcessExecutor,
    )


def _cgroup_leftovers(started: Started, closed: bool) -> list[str]:
    """The documented policy: an ended attempt's cgroup is emptied and kept for reuse while
    its executor lives (v1), and removed at close()."""
    cg = open_existing(CGROUP_SUPPORT, started.ref or "")
    if cg is None:
        return []
    if closed:
        return [f"cgroup {started.ref} outlived its executor"]
    pids = cg.pids()
    return [f"cgroup {started.ref} still holds pids {pids}"] if pids else []


def _cgroup(request: pytest.FixtureRequest) -> Backend:
    if not CGROUP_SUPPORT.ok:
        pytest.skip(f"runtime cgroup cannot run here: {CGROUP_SUPPORT.reason}")
    return Backend(
        "cgroup",
        lambda waker: CgroupExecutor(waker, CGROUP_SUPPORT),
        enforces_memory=True,
        leftovers=_cgroup_leftovers,
    )


DOCKER_EXIT_ONLY = (
    "issue 12: Docker gives only the exit code of the container's init (137); which signal "
    "ended the task needs the exit record issue 12 adds on every runtime"
)


def _container_left(url: str, container: str | None) -> list[str]:
    import docker

    if not container:
        return []
    client: Any = docker.APIClient(base_url=url, version="auto")
    try:
        state = client.inspect_container(container)["State"]["Status"]
    except docker.errors.NotFound:
        return []
    finally:
        client.close()
    return [f"container {container} is left ({state})"]


def _docker(request: pytest.FixtureRequest) -> Backend:
    url: str = request.getfixturevalue("docker_url")
    image: str = request.getfixturevalue("docker_image")
    state_dir = str(request.getfixturevalue("tmp_path") / "state")  # a restarted executor's too

    return Backend(
        "docker",
        lambda waker: DockerExecutor(waker, base_url=url, state_dir=state_dir),
        options=DockerOptions(image=image),
        enforces_memory=True,
        leftovers=lambda started, closed: _container_left(url, started.ref),
        known_failures={"test_a_signal_labrun_did_not_send_is_a_signal_not_an_exit_code": DOCKER_EXIT_ONLY},
        lacks=("setsid",),  # the busybox test image
    )


def _ssh(request: pytest.FixtureRequest) -> Backend:
    node: Node = request.getfixturevalue("ssh_node")
    return Backend(
        "ssh",
        lambda waker: node(waker, Runtime.PROCESS),
    )


def _remote_status(started: Started) -> dict[str, Any]:
    """The agent's status file of an ssh attempt (the node is this machine)."""
    directory = (started.ref or ":").split(":", 1)[1]
    with open(os.path.join(directory, "status.json"), encoding="utf-8") as handle:
        status: dict[str, Any] = json.load(handle)
    return status


def _ssh_cgroup(request: pytest.FixtureRequest) -> Backend:
    if not CGROUP_SUPPORT.ok:
        pytest.skip(f"runtime cgroup cannot run here: {CGROUP_SUPPORT.reason}")
    node: Node = request.getfixturevalue("ssh_node")

    def leftovers(started: Started, closed: bool) -> list[str]:
        name = _remote_status(started).get("cgroup")
        return [f"cgroup {name} outlived its attempt"] if name and open_existing(CGROUP_SUPPORT, name) else []

    return Backend(
        "ssh-cgroup", lambda waker: node(waker, Runtime.CGROUP), enforces_memory=True, leftovers=leftovers
    )


def _ssh_docker(request: pytest.FixtureRequest) -> Backend:
    url: str = request.getfixturevalue("docker_url")
    image: str = request.getfixturevalue("docker_image")
    node: Node = request.getfixturevalue("ssh_docker_node")
    return Backend(
        "ssh-docker",
        lambda waker: node(waker, Runtime.DOCKER),
        options=DockerOptions(image=image),
        enforces_memory=True,
        leftovers=lambda started, closed: _container_left(url, _remote_status(started).get("container")),
        known_failures={"test_a_signal_labrun_did_not_send_is_a_signal_not_an_exit_code": DOCKER_EXIT_ONLY},
        lacks=("setsid",),
    )


def _slurm(request: pytest.FixtureRequest) -> Backend:
    """A Slurm partition of the test cluster (tests/slurm.py); its node is this machine, so
    the attempts' processes are visible here. A restarted executor has the same state id."""
    cluster: Cluster = request.getfixturevalue("slurm_cluster")
    request.getfixturevalue("monkeypatch").setenv("SLURM_CONF", cluster.conf)
    tmp = request.getfixturevalue("tmp_path")
    state = "contract" + secrets.token_hex(4)

    def new(waker: Waker) -> Executor:
        options = SlurmOptions(partition=cluster.partition)
        return SlurmExecutor(
            "hpc", options, str(tmp / "state"), state, waker, poll=1.0, partition_nodes=(cluster.node,)
        )

    def active(job_id: str | None) -> list[str]:
        jobs = squeue(name_prefix(state)).values()
        return [f"Slurm job {j.job_id} is {j.state}" for j in jobs if j.job_id == job_id and j.active]

    def leftovers(started: Started, closed: bool) -> list[str]:
        """The job once Slurm tore it down: an attempt ends with its exit record, and the
        job a moment later, when its batch script has exited and Slurm killed the rest."""
        deadline = time.monotonic() + 30
        while active(started.ref) and time.monotonic() < deadline:
            time.sleep(0.1)
        return active(started.ref)

    return Backend("slurm", new, enforces_memory=True, leftovers=leftovers)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Backend]] = {
    "process": _process,
    "cgroup": _cgroup,
    "docker": _docker,
    "ssh": _ssh,
    "ssh-cgroup": _ssh_cgroup,
    "ssh-docker": _ssh_docker,
    "slurm": _slurm,
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    found = BACKENDS[request.param](request)
    name = request.function.__name__
    variant = request.node.callspec.id.replace(str(request.param), "", 1).strip("-")
    reason = found.known_failures.get(f"{name}[{variant}]" if variant else name)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    return found


@pytest.fixture
def waker() -> Iterator[Waker]:
    w = Waker()
    yield w
    w.close()


Node = Callable[[Waker, Runtime], SshExecutor]  # (waker, runtime) -> an executor on a fresh session


def _node(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str] | None) -> Iterator[Node]:
    """A real sshd on loopback; each call connects a new executor (a new runner) to it."""
    sshd = new_lab(tmp_path_factory)
    sshd.start("node-a", env=env)
    lab = write_lab(tmp_path_factory.mktemp("lab"), sshd, {"node-a": ""})
    spec = ssh_node_of(lab)
    target = target_of(lab, spec)
    kept = _KeptMaster(**{f.name: getattr(target, f.name) for f in dataclasses.fields(target)})

    def connect(waker: Waker, runtime: Runtime) -> SshExecutor:
        session = AgentSession(kept, spec.workdir)
        session.connect()
        return SshExecutor(session, poll_interval=0.1, waker=waker, runtime=runtime)

    try:
        yield connect
    finally:
        target.close()
        sshd.stop_all()


@dataclasses.dataclass(frozen=True)
class _KeptMaster(SshTarget):
    """The node's master connection outlives each executor (as ControlPersist keeps it after
    a runner dies): the handshake would be most of every test's time."""

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def ssh_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One node per module, shared by the ssh backends' tests."""
    yield from _node(tmp_path_factory, None)


@pytest.fixture(scope="module")
def ssh_docker_node(tmp_path_factory: pytest.TempPathFactory, docker_url: str) -> Iterator[Node]:
    """A node whose sessions get DOCKER_HOST (as a node's environment would name its daemon)."""
    yield from _node(tmp_path_factory, {"DOCKER_HOST": docker_url})
