"""Chaos: the runner itself SIGKILLed at seeded random moments, then `--resume` to the end.

Each task appends its name to starts.txt when it begins and to ends.txt when it is done,
and runs long enough that kills land while attempts run, while a wave is being launched,
and between the two; failpoints (`labrun.failpoint`) put kills exactly between a claim and
its spawn, and between a spawn and the commit of its pid. Nothing fails and the kills
never touch the tasks, so with every attempt adopted (or its end read from its exit
record) each task runs exactly once: that is the invariant, for commands labrun execs
and commands run through the shell, on the process, cgroup, docker and ssh runtimes (the
ssh node is an sshd on loopback). Docker adds its own failpoints: a container created and
not started, ends collected and not committed, and ends committed with their containers
not yet removed; at the end no container of the state directory is left on the daemon.

Bounded for `make test` (one seed each); `make soak` sets LABRUN_SOAK_SEEDS for more.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from labrun_proc import integrity, query, run, start

from labrun import state_id
from labrun.cgroup import detect, open_existing

TASKS = 20
SEEDS = range(int(os.environ.get("LABRUN_SOAK_SEEDS", "1")))
# {index} makes each task's sleep different: 0.05 s to 0.95 s
COMMANDS = {
    "exec": '["sh", "-c", "echo {task} >> starts.txt; sleep 0.{index}5; echo {task} >> ends.txt"]',
    "shell": '"echo {task} >> starts.txt; sleep 0.{index}5; echo {task} >> ends.txt"',
}


def job_text(runtime: str, command: str, image: str = "") -> str:
    where = 'runtime = "process"\nnodes = ["node-a"]' if runtime == "ssh" else f'runtime = "{runtime}"'
    if image:
        where += f'\nimage = "{image}"'
    return f"""
[job]
name = "chaos"
max_parallel = 5

[defaults]
{where}
memory = "64MiB"
retry_delay = 0

[[tasks]]
name = "t"
items = {{ range = [0, {TASKS}] }}
command = {command}
"""


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def _processes_of(directory: Path) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if str(directory) in line]


def _kill_at(proc: subprocess.Popen[str], starts: Path, point: int, delay: float) -> bool:
    """SIGKILL the runner `delay` s after `point` tasks have started; False if it ended first."""
    deadline = time.monotonic() + 120
    while len(_lines(starts)) < point:
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return True


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("runtime", ["process", "cgroup", "docker", "ssh"])
@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_sigkill_the_runner_at_random_then_resume_runs_each_task_once(
    tmp_path: Path, kind: str, runtime: str, seed: int, request: pytest.FixtureRequest
) -> None:
    if runtime == "cgroup" and not detect().ok:
        pytest.skip(f"runtime cgroup cannot run here: {detect().reason}")
    config: list[str] = []
    if runtime == "ssh":  # a node on loopback (this machine, so the files are shared)
        from test_ssh_nodes import write_lab

        sshd_lab = request.getfixturevalue("sshd_lab")
        sshd_lab.start("node-a")
        write_lab(tmp_path, sshd_lab, {"node-a": "cpus = 5"}, local_cpus=1)
        config = ["--config", str(tmp_path / "labrun.toml")]
    env: dict[str, str] = {}
    image = ""
    if runtime == "docker":
        env["DOCKER_HOST"] = request.getfixturevalue("docker_url")
        image = request.getfixturevalue("docker_image")
    (tmp_path / "job.toml").write_text(job_text(runtime, COMMANDS[kind], image))
    state, starts, ends = tmp_path / "state", tmp_path / "starts.txt", tmp_path / "ends.txt"
    rng = random.Random(f"{kind}-{runtime}-{seed}")
    # Seeded kills: at the failpoints (the runner SIGKILLs itself right after claiming, or
    # right after a spawn whose pid is not committed yet), and from outside once a number
    # of tasks have started, 0-40 ms later (often while a wave is being launched).
    plan: list[tuple[str, int]] = [
        ("spawned", rng.randint(1, 4)),
        ("claimed", 1),
        ("spawned", rng.randint(2, 5)),
    ]
    plan += [("started", rng.randint(1, 3)) for _ in range(3)]  # that many more than have started
    if runtime == "docker":
        for point in ("docker-created", "ended", "recorded"):
            plan.insert(rng.randint(0, len(plan)), (point, rng.randint(1, 3)))
    kills, outcome = 0, ""
    for i, (how, n) in enumerate(plan):
        args = ["run", "job.toml", "--plain", *config] + (["--resume"] if i else [])
        if how == "started":
            point = len(_lines(starts)) + n
            proc = start(args, state, tmp_path, **env)
            killed = _kill_at(proc, starts, point, rng.uniform(0.0, 0.04))
        else:
            done = run(args, state, tmp_path, LABRUN_FAILPOINT=f"{how}:{n}", **env)
            killed, outcome = done.returncode == -signal.SIGKILL, done.stdout + done.stderr
        assert integrity(state) == "ok"
        if not killed:  # the run ended: a further `--resume` would start a new run of every task
            break
        kills += 1
    assert kills >= 4, "the job finished before most kill points: the test proves little"
    for _ in range(3):
        if query(state, "SELECT state FROM runs") == [("succeeded",)]:
            break
        done = run(["run", "job.toml", "--plain", "--resume", *config], state, tmp_path, **env)
        outcome = done.stdout + done.stderr
    assert query(state, "SELECT state FROM runs") == [("succeeded",)], outcome
    assert "Traceback" not in outcome

    names = {f"t[{i}]" for i in range(TASKS)}
    began, finished = collections.Counter(_lines(starts)), collections.Counter(_lines(ends))
    assert set(began) == names and set(finished) == names
    twice = {name: n for name, n in began.items() if n > 1}
    assert not twice, f"ran more than once after {kills} kills: {twice}"
    assert query(state, "SELECT COUNT(*), MIN(state) FROM runs") == [(1, "succeeded")]
    succeeded = query(state, "SELECT COUNT(*) FROM attempts WHERE outcome = 'succeeded'")
    assert succeeded == [(TASKS,)]
    assert integrity(state) == "ok"
    deadline = time.monotonic() + 30  # a node's agent and monitors exit just after the run
    while leftovers := _processes_of(tmp_path):
        assert time.monotonic() < deadline, f"an attempt outlived the run: {leftovers[:3]}"
        time.sleep(0.2)
    if runtime == "cgroup":  # the dead runners' pools and their attempts' cgroups are swept
        refs = query(state, "SELECT DISTINCT ref FROM attempts WHERE ref IS NOT NULL")
        names = [str(ref) for (ref,) in refs]
        left = [name for name in names if open_existing(detect(), name) is not None]
        assert not left, f"{len(left)} of {len(names)} cgroups left after the final resume: {left[:3]}"
    if runtime == "docker":
        assert _containers_of(env["DOCKER_HOST"], state) == [], "a container outlived the run"


def _containers_of(url: str, state: Path) -> list[str]:
    """The state directory's containers on the daemon, running or not."""
    import docker

    client = docker.APIClient(base_url=url, version="auto")
    try:
        found = client.containers(all=True, filters={"label": f"labrun.state={state_id.read(str(state))}"})
    finally:
        client.close()
    return [f"{c['Id'][:12]} {c['State']} {c['Labels'].get('labrun.task')}" for c in found]
