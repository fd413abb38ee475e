"""Shell quoting of substituted values, private state files, and secrets that stay secret."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from e2e import labrun as labrun_e2e
from labrun_proc import query, run
from sshd import SshdLab
from test_ssh_nodes import write_lab

from labrun.cgroup import detect
from labrun.masking import Masker, masked_facts
from labrun.model import Facts

HOSTILE_ITEM_JOB = """
[job]
name = "quoting"
[[tasks]]
name = "echo"
items = ["a; rm -rf {victim}", "$(touch {victim}/pwned)", "b' ; touch {victim}/pwned2 ; '"]
command = "printf '%s|' {{item}} > out-{{index}}.txt"
"""


def test_substituted_items_stay_one_argument(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    job = HOSTILE_ITEM_JOB.format(victim=victim).replace("{{", "{").replace("}}", "}")
    (tmp_path / "job.toml").write_text(job)
    done = run(["run", "job.toml", "--plain"], tmp_path / "state", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (victim / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert (tmp_path / "out-0.txt").read_text() == f"a; rm -rf {victim}|"
    assert (tmp_path / "out-1.txt").read_text() == f"$(touch {victim}/pwned)|"


def test_state_directory_is_private(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text('[job]\nname = "p"\n[[tasks]]\nname = "t"\ncommand = "echo hi"\n')
    state = tmp_path / "state"
    old = os.umask(0o022)
    try:
        done = run(["run", "job.toml", "--plain"], state, tmp_path)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for sub in ("runs", "locks"):
        assert stat.S_IMODE((state / sub).stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "labrun.db").stat().st_mode) & 0o077 == 0
    logs = list((state / "runs").rglob("*.stdout")) + list((state / "runs").rglob("*.stderr"))
    assert len(logs) == 2
    for log in logs:
        assert stat.S_IMODE(log.stat().st_mode) == 0o600


SECRET_JOB = """
[job]
name = "secret"
[[tasks]]
name = "use"
command = "printf %s \\"$DB_PASSWORD\\" | sha256sum > got.txt"
secret_env = ["DB_PASSWORD"]
"""


def test_secret_reaches_the_task_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(SECRET_JOB)
    state = tmp_path / "state"
    secret = "hunter2-XYZZY"
    done = run(["run", "job.toml", "--plain", "-v"], state, tmp_path, DB_PASSWORD=secret)
    assert done.returncode == 0, done.stdout + done.stderr
    want = hashlib.sha256(secret.encode()).hexdigest()
    assert (tmp_path / "got.txt").read_text().split()[0] == want
    outputs = [done.stdout, done.stderr]
    for command in (["status", "last"], ["status", "last", "--json"], ["runs"]):
        shown = run(command, state, tmp_path)
        outputs += [shown.stdout, shown.stderr]
    assert all(secret not in text for text in outputs)
    for path in state.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    dump = "\n".join(
        str(row)
        for table in ("runs", "tasks", "attempts", "events")
        for row in query(state, f"SELECT * FROM {table}")
    )
    assert secret not in dump and "DB_PASSWORD" in dump  # the name is in the job text, not the value


def test_missing_secret_stops_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(SECRET_JOB)
    state = tmp_path / "state"
    env_without = {k: v for k, v in os.environ.items() if k != "DB_PASSWORD"}
    os.environ.pop("DB_PASSWORD", None)
    done = run(["run", "job.toml", "--plain"], state, tmp_path)
    assert env_without.get("DB_PASSWORD") is None
    assert done.returncode == 3, done.stderr
    assert "secret_env DB_PASSWORD is not set" in done.stderr and "Traceback" not in done.stderr
    assert not (state / "labrun.db").exists() or query(state, "SELECT COUNT(*) FROM runs") == [(0,)]


WITHHELD_JOB = """
[job]
name = "withheld"
[defaults]
retries = 0
secret_env = ["DEFAULT_KEY"]
[[tasks]]
name = "declares"
command = "env > declares.env"
secret_env = ["LAB_TOKEN"]
[[tasks]]
name = "inherits"
command = "env > inherits.env"
[[tasks]]
name = "plain"
command = "env > plain.env"
secret_env = []
[[tasks]]
name = "caged"
runtime = "{cgroup}"
command = "env > caged.env"
secret_env = []
[[tasks]]
name = "boxed"
runtime = "docker"
image = "{image}"
command = "env > boxed.env"
secret_env = []
[[tasks]]
name = "remote"
nodes = ["node-a"]
command = "env > remote.env"
secret_env = []
[[tasks]]
name = "remote_declares"
nodes = ["node-a"]
command = "env > remote_declares.env"
secret_env = ["LAB_TOKEN"]
"""


def _env_of(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return dict(pairs)


def test_a_task_receives_only_the_secrets_it_declares_on_every_runtime(
    tmp_path: Path, sshd_lab: SshdLab, docker_url: str, docker_image: str
) -> None:
    token, default_key = "lab-token-7f3a9c", "default-key-51e0"
    # the node has its own copy of the token in every session: withheld there too
    sshd_lab.start("node-a", env={"LAB_TOKEN": "the-nodes-own-copy"})
    write_lab(tmp_path, sshd_lab, {"node-a": 'runtimes = ["process"]'})
    cgroup = "cgroup" if detect().ok else "process"
    (tmp_path / "job.toml").write_text(WITHHELD_JOB.format(image=docker_image, cgroup=cgroup))
    env = {"DOCKER_HOST": docker_url, "LAB_TOKEN": token, "DEFAULT_KEY": default_key}
    done = labrun_e2e(tmp_path, "run", "job.toml", "--plain", env=env)
    assert done.returncode == 0, done.stdout + done.stderr

    declares, inherits = _env_of(tmp_path / "declares.env"), _env_of(tmp_path / "inherits.env")
    assert declares.get("LAB_TOKEN") == token and "DEFAULT_KEY" not in declares
    assert inherits.get("DEFAULT_KEY") == default_key and "LAB_TOKEN" not in inherits
    assert _env_of(tmp_path / "remote_declares.env").get("LAB_TOKEN") == token
    for name in ("plain", "caged", "boxed", "remote"):
        seen = _env_of(tmp_path / f"{name}.env")
        assert "PATH" in seen, name  # it did print its environment
        assert "LAB_TOKEN" not in seen and "DEFAULT_KEY" not in seen, (name, seen)
        assert token not in (tmp_path / f"{name}.env").read_text()


MASKED_JOB = """
[job]
name = "masked"
[[tasks]]
name = "leaky"
command = "echo \\"using password=$DB_PASSWORD\\" >&2; echo \\"auth failed: $DB_PASSWORD\\" >&2; exit 4"
retries = 0
secret_env = ["DB_PASSWORD"]
"""


def test_why_status_and_the_failure_line_mask_a_secret_the_task_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "job.toml").write_text(MASKED_JOB)
    state = tmp_path / "state"
    secret = "pa55-word-QX"
    done = run(["run", "job.toml", "--plain"], state, tmp_path, DB_PASSWORD=secret)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "auth failed: ***" in done.stdout + done.stderr  # the failure line shows the error...
    assert secret not in done.stdout + done.stderr  # ... masked
    # `why` from a shell that has the secret, and from one that does not
    with_secret = run(["why", "last", "leaky"], state, tmp_path, DB_PASSWORD=secret)
    monkeypatch.delenv("DB_PASSWORD", raising=False)
    without = run(["why", "last", "leaky"], state, tmp_path)
    as_json = run(["why", "last", "leaky", "--json"], state, tmp_path)
    shown = run(["status", "last"], state, tmp_path)
    for out in (with_secret, without, as_json, shown):
        assert out.returncode == 0, out.stderr
        assert secret not in out.stdout + out.stderr
    assert "| auth failed: ***" in without.stdout and "password=***" in without.stdout
    # the log itself stays as the task wrote it (0600, for its owner)
    log = state / "runs" / "1" / "leaky.1.stderr"
    assert f"auth failed: {secret}" in log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_masker_replaces_values_of_four_characters_or_more_longest_first() -> None:
    mask = Masker(["abc", "token-1", "token-12345", ""])
    assert mask("abc token-12345 token-1") == "abc *** ***"  # "abc" is too short to mask
    assert not Masker(["ab", ""]) and Masker(["abcd"])
    facts = Facts(1, None, 0.0, detail="Docker State.Error: bad token-1", start_error="")
    assert masked_facts(facts, mask).detail == "Docker State.Error: bad ***"
