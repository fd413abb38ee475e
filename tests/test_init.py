"""`labrun init` writes a commented job file that `labrun check` passes and never
overwrites one; `labrun init --lab` probes this machine (GPUs through the NVML seam) and
real sshd nodes on loopback, and writes a labrun.toml labrun loads."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helper import Labrun, make_labrun
from sshd import SshdLab

from labrun import gpus
from labrun.config.job import load_job
from labrun.config.lab import load_lab
from labrun.ssh.config import SshNodeSpec


@pytest.fixture
def labrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Labrun:
    monkeypatch.setenv("LABRUN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("LABRUN_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return make_labrun(capsys)


def test_init_writes_a_job_that_check_passes_and_runs(labrun: Labrun, tmp_path: Path) -> None:
    (tmp_path / "grid.txt").write_text('lr=0.1\n# a comment\n\nlr=0.01\nit\'s "quoted"; $(touch pwned)\n')
    (tmp_path / "train.py").write_text("import sys\nprint('trained', sys.argv[1])\n")
    done = labrun("init", "python3 train.py {item}", "--items", "grid.txt", "--memory", "256MiB")
    assert done.code == 0, done.err
    assert "wrote job.toml: job train, 3 items from grid.txt; next: labrun check job.toml" in done.out
    text = (tmp_path / "job.toml").read_text()
    assert text.count("\n# ") >= 5, "the file explains itself"
    job = load_job(str(tmp_path / "job.toml"))
    (task,) = job.tasks
    assert task.command == "python3 train.py {item}" and task.memory == 256 * 2**20
    assert [i for i in task.items or ()] == ["lr=0.1", "lr=0.01", 'it\'s "quoted"; $(touch pwned)']
    assert job.preflight.commands == ("python3",)
    check = labrun("check", "job.toml")
    assert check.code == 0, check.out
    ran = labrun("run", "job.toml", "--plain")
    assert ran.code == 0, ran.out + ran.err
    assert labrun("logs", "last", "train[2]").out == 'trained it\'s "quoted"; $(touch pwned)\n'
    assert not (tmp_path / "pwned").exists()


def test_init_never_overwrites(labrun: Labrun, tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text("# mine\n")
    done = labrun("init", "echo hi")
    assert done.code == 2 and "job.toml exists; labrun init never overwrites" in done.err
    assert (tmp_path / "job.toml").read_text() == "# mine\n"
    other = labrun("init", "echo hi", "-o", "hello.toml", "--runtime", "cgroup")
    assert other.code == 0 and load_job(str(tmp_path / "hello.toml")).name == "hello"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["python3 train.py {item}"], "give --items FILE"),
        (["echo {item}", "--items", "missing.txt"], "--items missing.txt: cannot read it"),
        (["echo hi", "--memory", "lots"], "--memory 'lots'"),
        (["echo hi", "--runtime", "podman"], "expected one of process, cgroup, docker"),
        (["echo hi", "--runtime", "docker"], "--runtime docker needs --image"),
        (["python3", "train.py"], "quote the command as one argument"),
    ],
)
def test_init_refuses_with_a_reason(labrun: Labrun, tmp_path: Path, args: list[str], message: str) -> None:
    done = labrun("init", *args)
    assert done.code == 2 and message in done.err, done.err
    assert not (tmp_path / "job.toml").exists()


@pytest.fixture
def two_gpus() -> Iterator[None]:
    previous = gpus.use_inventory(lambda: (gpus.Gpu(0, "Test GPU", 2**30), gpus.Gpu(1, "Test GPU", 2**30)))
    try:
        yield
    finally:
        gpus.use_inventory(previous)


def test_init_lab_probes_this_machine_and_ssh_nodes(
    labrun: Labrun, tmp_path: Path, sshd_lab: SshdLab, two_gpus: None
) -> None:
    tag = hashlib.sha1(str(tmp_path).encode()).hexdigest()[:8]  # unique: ssh control sockets may be shared
    up, gone = f"up-{tag}", f"gone-{tag}"
    sshd_lab.start(up)
    sshd_lab.start(gone).stop()
    done = labrun("init", "--lab", up, gone, "--ssh-config", sshd_lab.ssh_config)
    assert done.code == 0, done.err
    assert f"wrote labrun.toml: local, {up}; left out (commented): {gone} (" in done.out
    text = (tmp_path / "labrun.toml").read_text()
    assert "2 GPUs (Test GPU)" in text  # through the NVML seam
    assert f"# {gone} did not answer today" in text and f"# [nodes.{gone}]" in text
    lab = load_lab(str(tmp_path / "labrun.toml"))
    ssh_nodes = [n for n in lab.nodes if isinstance(n, SshNodeSpec)]
    assert [n.name for n in ssh_nodes] == [up]
    (node,) = ssh_nodes
    assert node.ssh == up and node.ssh_config == sshd_lab.ssh_config and "process" in node.runtimes
    local = lab.node("local")
    assert local is not None and local.declared().gpus == (0, 1)
    again = labrun("init", "--lab")
    assert again.code == 2 and "labrun.toml exists" in again.err
