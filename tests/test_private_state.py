"""Everything labrun makes under its state directory (and the agent under a node's work
directory) is 0700 or 0600 whatever the umask: a real run under `umask 000`, with process,
cgroup-free Docker and SSH tasks and a task-0 fan-out, then the whole tree walked."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e import labrun, status
from sshd import SshdLab
from test_ssh_nodes import write_lab

from labrun import private


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """This process's umask (so sshd, the CLI and the tasks inherit it), restored after."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def too_open(root: Path, allowed: set[Path] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Every path under `root` (itself included) with a mode looser than 0700 / 0600."""
    found = []
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode) or path in allowed:
            continue
        limit = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
        if stat.S_ISSOCK(info.st_mode):
            limit = 0o600  # ssh's control sockets: owner only
        if mode & ~limit:
            found.append(f"{oct(mode)} {path.relative_to(root.parent)}")
    return found


JOB = """
[job]
name = "private"
[defaults]
retries = 0
[setup]
command = "printf 'x\\ny\\n' > {{shared}}/manifest.txt"
outputs = ["{{shared}}/manifest.txt"]
[[tasks]]
name = "fan"
items = "setup"
command = "echo {{item}}; echo err-{{item}} >&2"
[[tasks]]
name = "modes"
# the database's WAL files and the lock's holder exist while the runner holds them
command = "stat -c '%a %n' {state}/labrun.db* {state}/locks/* > {tmp}/live-modes.txt"
[[tasks]]
name = "boxed"
runtime = "docker"
image = "{image}"
command = "echo in-a-container; echo container-err >&2"
[[tasks]]
name = "remote"
nodes = ["node-a"]
command = "echo on-a-node; echo node-err >&2"
"""


def test_a_run_under_umask_000_leaves_nothing_looser_than_0700_0600(
    tmp_path: Path, sshd_lab: SshdLab, docker_url: str, docker_image: str
) -> None:
    state = tmp_path / "state"
    with umask(0):
        sshd_lab.start("node-a")  # the agent's sessions inherit sshd's umask: 000 too
        write_lab(tmp_path, sshd_lab, {"node-a": 'runtimes = ["process"]'})
        job = JOB.format(state=state, tmp=tmp_path, image=docker_image).replace("{{", "{").replace("}}", "}")
        (tmp_path / "job.toml").write_text(job)
        done = labrun(tmp_path, "run", "job.toml", "--plain", env={"DOCKER_HOST": docker_url})
    assert done.returncode == 0, done.stdout + done.stderr
    shown = {t["id"]: t["state"] for t in status(tmp_path)["tasks"]}
    assert shown == dict.fromkeys(["setup", "fan[0]", "fan[1]", "modes", "boxed", "remote"], "succeeded")

    # what labrun wrote, locally and on the node, logs copied from Docker and SSH included
    run_dir = state / "runs" / "1"
    for task in ("setup", "fan[0]", "fan[1]", "boxed", "remote"):
        assert (run_dir / f"{task}.1.stderr").stat().st_size > 0 or task == "setup", task
    assert (run_dir / "exits").exists() and (state / "locks" / "private.lock").exists()
    manifest = run_dir / "shared" / "manifest.txt"  # the task's own file, made under its umask
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o666
    assert too_open(state, {manifest}) == []
    remote = tmp_path / "remote-node-a"
    assert list(remote.glob("agent-*.pyz")) and list(remote.glob("attempts/*/status.json"))
    assert too_open(remote) == []

    # and while the run was live: the database's -wal and -shm, the lock and its holder
    live = {}
    for line in (tmp_path / "live-modes.txt").read_text().splitlines():
        mode, path = line.split(" ", 1)
        live[os.path.basename(path)] = mode
    assert {"labrun.db", "labrun.db-wal", "labrun.db-shm", "private.lock", "private.lock.holder"} <= set(live)
    assert set(live.values()) == {"600"}, live


def test_makedirs_gives_every_directory_it_makes_0700_and_leaves_existing_ones(tmp_path: Path) -> None:
    outside = tmp_path / "mine"
    outside.mkdir(mode=0o755)
    outside.chmod(0o755)
    with umask(0):
        private.makedirs(str(outside / "a" / "b" / "c"))
        private.makedirs(str(outside / "a" / "b" / "c"))  # there already: fine
        fd = private.open_append(str(outside / "a" / "log"))
        os.close(fd)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o755  # not labrun's to change
    for path in (outside / "a", outside / "a" / "b", outside / "a" / "b" / "c"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert stat.S_IMODE((outside / "a" / "log").stat().st_mode) == 0o600
    (outside / "file").write_text("")
    with pytest.raises(FileExistsError):
        private.makedirs(str(outside / "file"))
