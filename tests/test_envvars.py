"""${VAR} in env values and [preflight] paths, from labrun's environment; $$ is a literal $."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import labrun, write_job

from labrun.config.envvars import UnsetVariable, expand, references


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${DATA}/in", "/srv/d/in"),
        ("$DATA/in", "/srv/d/in"),
        ("$$DATA", "$DATA"),
        ("cost: 5$", "cost: 5$"),
        ("${DATA}${DATA}", "/srv/d/srv/d"),
        ("no dollars", "no dollars"),
        ("${EMPTY}x", "x"),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, {"DATA": "/srv/d", "EMPTY": ""}) == expected


def test_an_unset_variable_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(UnsetVariable, match="NOPE"):
        expand("${NOPE}/x", {})
    assert references("$A ${B} $$C $A") == ["A", "B"]


ENV_JOB = """
[job]
name = "vars"
[defaults]
env = { DATA = "${DATA_ROOT}/in", LITERAL = "$$HOME", MODE = "fast" }
[preflight]
paths = ["${DATA_ROOT}/in"]
env = ["MODE"]
checks = [{ name = "sees the job env", command = 'test "$MODE" = fast' }]
[[tasks]]
name = "show"
command = ["sh", "-c", 'echo "$DATA $LITERAL" > seen.txt']
retries = 0
"""


def test_env_values_and_preflight_paths_expand(tmp_path: Path) -> None:
    (tmp_path / "root" / "in").mkdir(parents=True)
    write_job(tmp_path, ENV_JOB)
    state = tmp_path / "state"
    env = {"DATA_ROOT": str(tmp_path / "root")}
    check = labrun(state, "check", "job.toml", cwd=tmp_path, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "env MODE" in check.stdout  # satisfied by [defaults] env, not by the environment
    done = labrun(state, "run", "job.toml", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "seen.txt").read_text() == f"{tmp_path}/root/in $HOME\n"


def test_an_unset_reference_refuses_the_run_and_fails_check(tmp_path: Path) -> None:
    write_job(tmp_path, ENV_JOB)
    state = tmp_path / "state"
    check = labrun(state, "check", "job.toml", cwd=tmp_path)
    assert check.returncode == 3
    assert "uses ${DATA_ROOT}, which is not set" in check.stdout  # the [preflight] path
    assert "env DATA_ROOT (used by task show env DATA)" in check.stdout
    refused = labrun(state, "run", "job.toml", "--no-preflight", cwd=tmp_path)
    assert refused.returncode == 3, refused.stderr
    assert "env DATA = '${DATA_ROOT}/in' uses ${DATA_ROOT}, which is not set" in refused.stderr
    assert "export DATA_ROOT=" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "seen.txt").exists()


def test_an_unset_secret_of_task_0_refuses_the_run(tmp_path: Path) -> None:
    write_job(
        tmp_path,
        """
        [job]
        name = "s"
        [setup]
        command = "true"
        secret_env = ["SETUP_TOKEN"]
        [[tasks]]
        name = "t"
        command = "true"
        """,
    )
    check = labrun(tmp_path / "state", "check", "job.toml", cwd=tmp_path)
    assert check.returncode == 3 and "secret_env SETUP_TOKEN (task setup)" in check.stdout
    # the fix: export it; never "add it to [defaults] env", which would write it in the job file
    assert "export SETUP_TOKEN=... in the shell that runs labrun" in check.stdout
    assert "[defaults] env" not in check.stdout
    done = labrun(tmp_path / "state", "run", "job.toml", "--no-preflight", cwd=tmp_path)
    assert done.returncode == 3
    assert "task setup: secret_env SETUP_TOKEN is not set" in done.stderr
    fixed = labrun(tmp_path / "state", "check", "job.toml", cwd=tmp_path, env={"SETUP_TOKEN": "s3"})
    assert fixed.returncode == 0, fixed.stdout
    assert "s3" not in fixed.stdout  # a secret's value is never printed
