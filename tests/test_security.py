"""Shell quoting of substituted values, private state files, and secrets that stay secret."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from labrun_proc import query, run

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
    logs = list((state / "runs").rglob("stdout")) + list((state / "runs").rglob("stderr"))
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
