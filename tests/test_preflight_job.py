"""Preflight from a job file: `labrun check` and the refusal of `labrun run`, for real."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helper import Labrun, closed_port, make_labrun, write_job

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))


@pytest.fixture
def labrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Labrun:
    monkeypatch.setenv("LABRUN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("LABRUN_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return make_labrun(capsys)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_passes_check(labrun: Labrun, example: Path) -> None:
    result = labrun("check", str(example))
    assert result.code == 0, result.out + result.err
    assert "✗" not in result.out
    assert result.out.rstrip().splitlines()[-1].startswith("all ")


def broken_job(tmp_path: Path, port: int) -> str:
    return write_job(
        tmp_path,
        f"""
        [job]
        name = "broken"

        [preflight]
        env = ["LABRUN_TEST_MISSING_VAR", "HOME"]
        tcp = ["127.0.0.1:{port}"]
        paths = ["data/no-such-input"]
        commands = ["sh"]
        timeout = "2s"

        [[tasks]]
        name = "t"
        command = "true"
        memory = "16MiB"
        """,
    )


def test_check_names_every_failure_and_exits_3(
    labrun: Labrun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LABRUN_TEST_MISSING_VAR", raising=False)
    port = closed_port()
    job = broken_job(tmp_path, port)
    result = labrun("check", job)
    assert result.code == 3
    failed = [line for line in result.out.splitlines() if line.startswith("✗")]
    assert len(failed) == 3, result.out
    text = "\n".join(failed)
    assert "env LABRUN_TEST_MISSING_VAR" in text and "not set" in text
    assert f"127.0.0.1:{port}" in text
    assert "data/no-such-input" in text
    assert "— fix: " in text
    assert "3 of 8 checks failed" in result.out

    report = labrun("check", job, "--json").json()
    assert labrun("check", job, "--json").code == 3
    assert report["ok"] is False
    bad = {c["name"] for c in report["checks"] if not c["ok"]}
    assert bad == {
        "env LABRUN_TEST_MISSING_VAR",
        f"tcp 127.0.0.1:{port}",
        f"path {tmp_path}/data/no-such-input",
    }, bad


def test_run_refuses_on_preflight_failure_and_creates_no_run(
    labrun: Labrun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LABRUN_TEST_MISSING_VAR", raising=False)
    job = broken_job(tmp_path, closed_port())
    result = labrun("run", job, "--plain")
    assert result.code == 3
    assert "preflight failed, nothing was started (3 of 8 checks failed)" in result.err
    assert "LABRUN_TEST_MISSING_VAR" in result.err
    assert "RUN" in labrun("runs").out and "broken" not in labrun("runs").out
    # --no-preflight starts anyway; the task itself needs none of it
    assert labrun("run", job, "--plain", "--no-preflight").code == 0
    assert "broken" in labrun("runs").out


def test_implied_checks_resources_and_output_directories(labrun: Labrun, tmp_path: Path) -> None:
    job = write_job(
        tmp_path,
        """
        [job]
        name = "implied"

        [[tasks]]
        name = "huge"
        command = "true"
        memory = "900TiB"
        outputs = ["out/result.txt", "{shared}/later.txt", "{item}.done"]
        """,
    )
    result = labrun("check", job)
    assert result.code == 3
    assert "✗ resources huge" in result.out
    assert f"✓ writable {tmp_path}/out" in result.out
    assert "shared" not in result.out.replace(str(tmp_path), "")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('comands = ["sh"]', "unknown key 'comands' in [preflight] (did you mean 'commands'?)"),
        ('disk_free = { "out" = "lots" }', "preflight.disk_free:"),
        ('checks = [{ name = "x" }]', "check 1 must have exactly a string name and a string command"),
        ('tcp = ["localhost"]', "preflight.tcp[0]: expected"),
    ],
)
def test_preflight_table_errors_have_locations(
    labrun: Labrun, tmp_path: Path, table: str, message: str
) -> None:
    job = write_job(
        tmp_path,
        f"""
        [job]
        name = "p"

        [preflight]
        {table}

        [[tasks]]
        name = "t"
        command = "true"
        """,
    )
    result = labrun("check", job)
    assert result.code == 2
    assert message in result.err
    assert "job.toml:5:" in result.err


def test_custom_checks_run_in_the_workdir(labrun: Labrun, tmp_path: Path) -> None:
    (tmp_path / "marker").write_text("x")
    job = write_job(
        tmp_path,
        """
        [job]
        name = "custom"

        [preflight]
        checks = [{ name = "marker present", command = "test -s marker" },
                  { name = "always fails", command = "echo nope >&2; exit 4" }]

        [[tasks]]
        name = "t"
        command = "true"
        """,
    )
    result = labrun("check", job)
    assert result.code == 3
    assert "✓ marker present" in result.out
    assert "✗ always fails" in result.out
