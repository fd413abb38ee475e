"""Job-file validation: every problem named with file, line, key and a fix; exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import labrun, write_job

from labrun.config.job import parse_job
from labrun.errors import ConfigError

VALID = """[job]
name = "ok"
[[tasks]]
name = "t"
command = "true"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_job(text, "job.toml")
    return [p.render() for p in info.value.problems]


def test_bad_toml_syntax_names_line_and_column() -> None:
    (message,) = problems('[job]\nname = "x"\n[[tasks]]\nname = "t"\ncommand = "true\n')
    assert message.startswith("job.toml:5:")
    assert "invalid TOML" in message


def test_unknown_key_suggests_the_right_one() -> None:
    (message,) = problems(VALID + 'memroy = "1GiB"\n')
    assert message.startswith("job.toml:6:1: tasks[0].memroy: unknown key")
    assert "did you mean 'memory'?" in message


def test_wrong_type_names_what_was_expected() -> None:
    (message,) = problems(VALID + 'retries = "three"\n')
    assert message.startswith("job.toml:6:1: tasks[0].retries:")
    assert "expected an integer" in message


def test_bad_size_string() -> None:
    (message,) = problems(VALID.replace("[[tasks]]", '[defaults]\nmemory = "lots"\n[[tasks]]'))
    assert message.startswith("job.toml:4:1: defaults.memory:")
    assert '"512MiB"' in message


def test_all_problems_of_a_file_are_reported_together() -> None:
    text = """
[job]
name = "bad name"
[defaults]
timeout = "5 minutes"
[[tasks]]
name = "t"
command = 3
cpus = 0
"""
    found = problems(text)
    assert len(found) == 4
    assert [m.split(":")[1] for m in found] == ["3", "5", "8", "9"]


def test_inline_table_keys_are_located() -> None:
    (message,) = problems(
        VALID.replace("[[tasks]]", '[defaults]\nenv = { OK = "1", "bad name" = "x" }\n[[tasks]]')
    )
    assert "job.toml:4:" in message and "not a valid environment variable name" in message


def test_missing_pieces_are_named() -> None:
    found = problems('[job]\n[[tasks]]\nname = "t"\n')
    assert any("the job has no name" in m for m in found)
    assert any("task t has no command" in m for m in found)


def test_duplicate_task_names_and_misspelt_placeholder() -> None:
    text = VALID + '[[tasks]]\nname = "t"\ncommand = "echo {itme}"\n'
    found = problems(text)
    assert any("a second task is named 't'" in m for m in found)
    assert any("unknown placeholder {itme}" in m and "{item}" in m for m in found)


def test_shell_braces_are_not_placeholders() -> None:
    job = parse_job(VALID.replace('"true"', "\"awk '{print $1}' ${HOME}\""), "job.toml")
    assert job.tasks[0].command == "awk '{print $1}' ${HOME}"


def test_defaults_are_inherited_and_env_merged() -> None:
    text = """
[job]
name = "j"
[defaults]
memory = "512MiB"
env = { A = "1", B = "2" }
[[tasks]]
name = "t"
command = ["true"]
env = { B = "3" }
items = { range = [0, 4] }
"""
    (task,) = parse_job(text, "/tmp/j.toml").tasks
    assert task.memory == 512 * 1024**2
    assert dict(task.env) == {"A": "1", "B": "3"}
    assert task.items is not None and len(task.items) == 4


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ('[job]\nname = "x"\n[[tasks]]\nname = "t"\ncommand = "true\n', "job.toml:5:"),
        (VALID + "bogus = 1\n", "job.toml:6:1"),
        (VALID + 'cpus = "two"\n', "job.toml:6:1"),
        (VALID + 'memory = "12 parsecs"\n', "job.toml:6:1"),
    ],
    ids=["syntax", "unknown-key", "wrong-type", "bad-size"],
)
def test_cli_exits_2_with_location_and_no_traceback(tmp_path: Path, body: str, expect: str) -> None:
    job = write_job(tmp_path, body)
    result = labrun(tmp_path / "state", "run", "job.toml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expect in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert job.exists()
    # nothing ran: no run was recorded
    assert "there are no runs" in labrun(tmp_path / "state", "status").stderr


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    missing = labrun(tmp_path / "state", "run", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "nope.toml" in missing.stderr and "cannot read" in missing.stderr
    (tmp_path / "bin.toml").write_bytes(b'[job]\nname = "\xff\xfe"\n')
    binary = labrun(tmp_path / "state", "run", str(tmp_path / "bin.toml"))
    assert binary.returncode == 2 and "bin.toml:2" in binary.stderr and "UTF-8" in binary.stderr


def test_string_commands_keep_shell_meaning() -> None:
    from labrun.expand import argv_for

    values = {"item": "a; rm -rf ~", "index": "0", "run": "1", "attempt": "1", "shared": "/s", "task": "t"}
    assert argv_for("exit 3", values) == ("/bin/sh", "-c", "exit 3")  # a builtin, not a program
    assert argv_for("cd data", values) == ("/bin/sh", "-c", "cd data")
    assert argv_for("python3 x.py {item}", values) == ("python3", "x.py", "a; rm -rf ~")
    assert argv_for("echo {item} > out", values) == ("/bin/sh", "-c", "echo 'a; rm -rf ~' > out")
    assert argv_for("true", values) == ("true",)
