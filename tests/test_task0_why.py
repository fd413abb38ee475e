"""Task 0, dependencies and `labrun why`, through `labrun run` / `labrun why` with real processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helper import Labrun, closed_port, make_labrun, write_job

from labrun.config.lab import load_lab
from labrun.paths import StatePaths
from labrun.store import Store

HEAD = """
[job]
name = "t"

[defaults]
memory = "32MiB"
retries = 0
retry_delay = 0
"""


@pytest.fixture
def labrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Labrun:
    monkeypatch.setenv("LABRUN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("LABRUN_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return make_labrun(capsys)


def why(labrun: Labrun, task: str) -> dict[str, object]:
    result = labrun("why", "last", task, "--json")
    assert result.code == 0, result.err
    answer: dict[str, object] = result.json()
    return answer


def states(labrun: Labrun) -> dict[str, tuple[str, str | None]]:
    result = labrun("status", "last", "--json")
    return {t["id"]: (t["state"], t["reason"]) for t in result.json()["tasks"]}


def test_task_0_without_its_output_fails_and_its_dependents_are_skipped(
    labrun: Labrun, tmp_path: Path
) -> None:
    job = write_job(
        tmp_path,
        HEAD
        + """
        [setup]
        command = "echo preparing, but writing nothing"
        outputs = ["{shared}/parts.txt"]

        [[tasks]]
        name = "process"
        items = "setup"
        command = "echo {item}"

        [[tasks]]
        name = "report"
        depends_on = ["process"]
        command = "true"
        """,
    )
    result = labrun("run", job, "--plain")
    assert result.code == 1
    found = states(labrun)
    assert found["setup"][0] == "failed"
    assert found["report"][0] == "skipped"
    assert "upstream task setup failed: exited 0 but produced no output" in str(found["report"][1])
    assert "0 setup" in labrun("status", "last").out
    for ref in ("0", "setup"):
        answer = why(labrun, ref)
        assert answer["cause"] == "missing_output"
        assert "parts.txt" in str(answer["title"])
    answer = why(labrun, "report")
    assert answer["cause"] == "dependency_failure"
    assert "upstream failed: setup" in answer["evidence"]  # type: ignore[operator]


def test_fan_out_over_task_0_manifest_then_a_final_task(labrun: Labrun, tmp_path: Path) -> None:
    job = write_job(
        tmp_path,
        HEAD
        + """
        [setup]
        command = "printf 'red\\n\\ngreen\\nblue\\n' > {shared}/parts.txt"
        outputs = ["{shared}/parts.txt"]

        [[tasks]]
        name = "process"
        items = "setup"
        command = "echo {item} > {shared}/{item}.out"
        outputs = ["{shared}/{item}.out"]

        [[tasks]]
        name = "final"
        depends_on = ["process"]
        command = "cat {shared}/red.out {shared}/green.out {shared}/blue.out"
        """,
    )
    result = labrun("run", job, "--plain")
    assert result.code == 0, result.out + result.err
    status = labrun("status", "last", "--json").json()
    items = {t["id"]: t["item"] for t in status["tasks"]}
    assert items == {
        "setup": None,
        "final": None,
        "process[0]": "red",
        "process[1]": "green",
        "process[2]": "blue",
    }
    assert status["counts"]["succeeded"] == 5
    assert labrun("logs", "last", "final").out.split() == ["red", "green", "blue"]
    assert why(labrun, "final")["cause"] == "succeeded"


def test_pipeline_example_runs_from_the_repository(labrun: Labrun) -> None:
    example = Path(__file__).parent.parent / "examples" / "pipeline.toml"
    result = labrun("run", str(example), "--plain")
    assert result.code == 0, result.out + result.err
    assert labrun("logs", "last", "total").out.strip().endswith("words")


def test_upstream_failure_skips_dependents_while_independent_tasks_carry_on(
    labrun: Labrun, tmp_path: Path
) -> None:
    job = write_job(
        tmp_path,
        HEAD
        + """
        [[tasks]]
        name = "a"
        command = "sh -c 'echo boom >&2; exit 3'"

        [[tasks]]
        name = "b"
        depends_on = ["a"]
        command = "true"

        [[tasks]]
        name = "c"
        depends_on = ["b"]
        command = "true"

        [[tasks]]
        name = "d"
        items = ["x", "y"]
        command = "sleep 0.2"
        """,
    )
    result = labrun("run", job, "--plain")
    assert result.code == 1
    found = states(labrun)
    assert found["a"][0] == "failed"
    assert found["b"] == ("skipped", found["c"][1])
    assert str(found["c"][1]).startswith("upstream task a failed: exited 3")
    assert found["d[0]"][0] == found["d[1]"][0] == "succeeded"
    assert why(labrun, "c")["cause"] == "dependency_failure"
    answer = why(labrun, "a")
    assert answer["cause"] == "application_error"
    assert "| boom" in answer["evidence"]  # type: ignore[operator]


def test_command_not_found_is_a_misconfiguration(labrun: Labrun, tmp_path: Path) -> None:
    job = write_job(
        tmp_path,
        HEAD
        + """
        [[tasks]]
        name = "direct"
        command = "labrun-no-such-command-xyz --flag"

        [[tasks]]
        name = "shell"
        command = "labrun-no-such-command-xyz && true"
        """,
    )
    assert labrun("run", job, "--plain").code == 1
    for task in ("direct", "shell"):
        answer = why(labrun, task)
        assert answer["cause"] == "misconfiguration", answer
        assert "labrun-no-such-command-xyz" in str(answer["title"]) + str(answer["next_step"])


def test_an_unset_environment_variable_is_named(
    labrun: Labrun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LABRUN_TEST_DATA_DIR", raising=False)
    job = write_job(
        tmp_path,
        HEAD
        + """
        [[tasks]]
        name = "reader"
        command = ["sh", "-c", "ls ${LABRUN_TEST_DATA_DIR:?}"]
        """,
    )
    assert labrun("run", job, "--plain").code == 1
    answer = why(labrun, "reader")
    assert answer["cause"] == "misconfiguration"
    assert "LABRUN_TEST_DATA_DIR" in str(answer["title"])


def test_a_closed_port_is_a_dependency_failure(labrun: Labrun, tmp_path: Path) -> None:
    port = closed_port()
    job = write_job(
        tmp_path,
        HEAD
        + f"""
        [[tasks]]
        name = "client"
        command = ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/{port}"]
        """,
    )
    assert labrun("run", job, "--plain").code == 1
    answer = why(labrun, "client")
    assert answer["cause"] == "dependency_failure"
    assert "Connection refused" in str(answer["title"])


def test_a_timeout_is_resource_exhaustion(labrun: Labrun, tmp_path: Path) -> None:
    job = write_job(
        tmp_path,
        HEAD
        + """
        [[tasks]]
        name = "slow"
        command = "sleep 30"
        timeout = "300ms"
        grace = "200ms"
        """,
    )
    assert labrun("run", job, "--plain").code == 1
    answer = why(labrun, "slow")
    assert answer["cause"] == "resource_exhaustion"
    assert "time limit" in str(answer["title"])
    text = labrun("why", "last", "slow").out
    assert text.startswith("run 1, task slow: resource exhaustion")


@pytest.mark.parametrize(
    ("tasks", "message", "line"),
    [
        (
            """
            [[tasks]]
            name = "a"
            command = "true"
            depends_on = ["b"]

            [[tasks]]
            name = "b"
            command = "true"
            depends_on = ["a"]
            """,
            "dependency cycle: a → b → a",
            ":12:",
        ),
        (
            """
            [[tasks]]
            name = "a"
            command = "true"
            depends_on = ["reprot"]

            [[tasks]]
            name = "report"
            command = "true"
            """,
            "depends on 'reprot', which is no task of this job (did you mean 'report'?)",
            ":12:",
        ),
        (
            """
            [[tasks]]
            name = "a"
            command = "true"
            items = "setup"
            """,
            'items = "setup" needs task 0 with outputs',
            ":12:",
        ),
    ],
)
def test_bad_dependencies_are_configuration_errors(
    labrun: Labrun, tmp_path: Path, tasks: str, message: str, line: str
) -> None:
    job = write_job(tmp_path, HEAD + tasks)
    for command in ("run", "check"):
        result = labrun(command, job)
        assert result.code == 2
        assert message in result.err
        assert f"job.toml{line}" in result.err
    assert not os.path.exists(tmp_path / "state" / "labrun.db") or not _runs(tmp_path)


def _runs(tmp_path: Path) -> list[object]:
    store = Store(StatePaths(load_lab().state_dir).db)
    try:
        return list(store.runs())
    finally:
        store.close()
