"""`labrun check` refuses jobs that cannot run (no GPU, an undefined node, CPUs that do not
exist), and each suggested fix, applied as written, makes the check pass; an offline ssh
node is left out with a warning when every task fits elsewhere (real sshd on loopback)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from pathlib import Path

import pytest
from cli_helper import Labrun, make_labrun, write_job
from sshd import SshdLab

from labrun.config.job import TaskSpec
from labrun.config.lab import LabConfig, NodeSpec
from labrun.preflight.core import run_checks
from labrun.preflight.placement import cpu_list, local_cpus, parse_cpu_list, task_fits
from labrun.scheduler import NodeCapacity


@pytest.fixture
def labrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Labrun:
    monkeypatch.setenv("LABRUN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("LABRUN_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "labrun.toml").write_text("[nodes.local]\ngpus = []\n")  # this machine: no GPU
    return make_labrun(capsys)


def job_with(tmp_path: Path, line: str) -> str:
    return write_job(tmp_path, f'[job]\nname = "fit"\n[[tasks]]\nname = "train"\ncommand = "true"\n{line}\n')


def fix_of(out: str, check: str) -> str:
    """The fix `labrun check` printed for a check, as the user reads it."""
    line = next(line for line in out.splitlines() if line.startswith(f"✗ {check}"))
    return line.split("— fix: ", 1)[1]


def apply_set(fix: str, job: str) -> None:
    """Do what a fix of the form `set KEY = VALUE for task ...` says: replace that line."""
    match = re.match(r"(?:set |write )?(\w+ = (?:\"[^\"]*\"|\[[^\]]*\]|\d+))", fix)
    assert match, fix
    key = match.group(1).split(" = ")[0]
    text = Path(job).read_text()
    Path(job).write_text(re.sub(rf"^{key} = .*$", match.group(1), text, flags=re.M))


def test_a_gpu_task_on_a_machine_without_gpus_fails_and_the_fix_works(labrun: Labrun, tmp_path: Path) -> None:
    job = job_with(tmp_path, "gpus = 1")
    done = labrun("check", job)
    assert done.code == 3, done.out
    assert "task train asks 1 GPU; no node has a GPU" in done.out
    apply_set(fix_of(done.out, "resources train"), job)
    again = labrun("check", job)
    assert again.code == 0, again.out
    assert "gpus = 0" in Path(job).read_text()


def test_a_node_defined_nowhere_fails_and_did_you_mean_works(labrun: Labrun, tmp_path: Path) -> None:
    job = job_with(tmp_path, 'nodes = ["gpu-box"]')
    done = labrun("check", job)
    assert done.code == 3
    assert "may run only on gpu-box, which" in done.out and "does not define" in done.out
    assert "define [nodes.gpu-box] in" in fix_of(done.out, "resources train")
    typo = job_with(tmp_path, 'nodes = ["locl"]')
    done = labrun("check", typo)
    assert done.code == 3
    apply_set(fix_of(done.out, "resources train"), typo)
    assert labrun("check", typo).code == 0


def test_a_cpuset_past_this_machines_cpus_fails_and_the_fix_works(labrun: Labrun, tmp_path: Path) -> None:
    have = local_cpus()
    job = job_with(tmp_path, f'cpuset = "0-{max(have) + 98}"')
    done = labrun("check", job)
    assert done.code == 3, done.out
    assert f"this machine has no CPU {max(have) + 1}-{max(have) + 98}" in done.out
    apply_set(fix_of(done.out, "cpuset train"), job)
    again = labrun("check", job)
    assert again.code == 0, again.out
    assert f'cpuset = "{cpu_list(have)}"' in Path(job).read_text()


def test_cpu_lists_round_trip() -> None:
    assert parse_cpu_list("0-3,6") == {0, 1, 2, 3, 6}
    assert cpu_list({0, 1, 2, 3, 6, 8, 9}) == "0-3,6,8-9"


def test_the_largest_node_is_named_when_nothing_is_big_enough() -> None:
    lab = LabConfig(None, "/nonexistent", NodeSpec("local", 2, 2**30))
    nodes = [NodeCapacity("small", 2, 4 * 2**30), NodeCapacity("big", 8, 32 * 2**30)]
    (ok,) = run_checks([task_fits(TaskSpec("resize", "true", cpus=4, memory=8 * 2**30), nodes, lab)], 5)
    assert ok.ok and ok.found.endswith("fits on big")
    (bad,) = run_checks([task_fits(TaskSpec("train", "true", cpus=16, memory=64 * 2**30), nodes, lab)], 5)
    assert not bad.ok and "task train asks 16 cpus, 64.0GiB" in bad.found
    assert "largest node is big (8 cpus, 32.0GiB)" in bad.found
    odd = [NodeCapacity("cpu", 32, 2**30), NodeCapacity("mem", 2, 64 * 2**30)]
    (split,) = run_checks([task_fits(TaskSpec("t", "true", cpus=4, memory=8 * 2**30), odd, lab)], 5)
    assert not split.ok and "most memory is on mem" in split.found


def answers(sshd_lab: SshdLab, name: str) -> None:
    """Wait until the node answers a plain ssh: a fresh sshd on a busy machine can take
    many seconds for its first session, longer than a check is given."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            argv = ["ssh", "-F", sshd_lab.ssh_config, name, "true"]
            if (
                subprocess.run(
                    argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60
                ).returncode
                == 0
            ):
                return
        except subprocess.TimeoutExpired:
            pass
    raise AssertionError(f"node {name} never answered ssh")


def offline_lab(tmp_path: Path, sshd_lab: SshdLab) -> tuple[Path, str, str]:
    """labrun.toml with a node that answers and one that does not; their names.

    Names unique to the test: ssh's control sockets may live in a directory shared by
    every state directory of this user (transport.MAX_SOCKET_PATH), and tests of other
    checkouts running at the same time use names like node-a too."""
    tag = hashlib.sha1(str(tmp_path).encode()).hexdigest()[:8]
    up, gone = f"up-{tag}", f"gone-{tag}"
    sshd_lab.start(up)
    sshd_lab.start(gone).stop()
    answers(sshd_lab, up)
    text = f'state_dir = "{tmp_path}/state"\n[nodes.local]\ncpus = 2\ngpus = []\n'
    for name in (up, gone):
        text += f'[nodes.{name}]\nssh = "{name}"\nssh_config = "{sshd_lab.ssh_config}"\n'
        text += f'workdir = "{tmp_path}/remote-{name}"\nssh_options = ["ServerAliveInterval=7"]\n'
    (tmp_path / "labrun.toml").write_text(text)
    return tmp_path / "labrun.toml", up, gone


@pytest.mark.slow
def test_an_offline_node_is_left_out_with_a_warning_and_the_run_goes_on(
    tmp_path: Path, sshd_lab: SshdLab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LABRUN_STATE_DIR", raising=False)
    config, up, gone = offline_lab(tmp_path, sshd_lab)
    lab = str(config)
    labrun = make_labrun(capsys)
    slow = '[preflight]\ntimeout = "60s"\n'  # a busy machine: the live node must answer in time
    job = write_job(
        tmp_path, f'[job]\nname = "hi"\n{slow}[[tasks]]\nname = "t"\nitems = [1, 2]\ncommand = "true"\n'
    )
    done = labrun("check", job, "--config", lab)
    assert done.code == 0, done.out
    assert f"! node {gone} reachable" in done.out and "left out of this run" in done.out
    assert f"ssh -F {sshd_lab.ssh_config} -o ServerAliveInterval=7 {gone} true" in done.out
    assert f"not checked: node {gone} is not reachable" in done.out
    assert f"✓ node {up} reachable" in done.out, done.out
    assert "with a warning" in done.out.splitlines()[-1]
    ran = labrun("run", job, "--config", lab, "--plain")
    assert ran.code == 0, ran.out + ran.err
    assert f"node {gone} is left out of this run" in ran.err


@pytest.mark.slow
def test_an_offline_node_a_task_needs_still_fails_the_check(
    tmp_path: Path, sshd_lab: SshdLab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LABRUN_STATE_DIR", raising=False)
    config, _, gone = offline_lab(tmp_path, sshd_lab)
    job = job_with(tmp_path, f'nodes = ["{gone}"]')
    done = make_labrun(capsys)("check", job, "--config", str(config))
    assert done.code == 3
    assert f"✗ node {gone} reachable" in done.out and "task train can run only there" in done.out
