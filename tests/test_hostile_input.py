"""Hostile job files through the real CLI entry, in-process: exit 2, a location, no run.

Each example starts from a valid job file and breaks it in one way that must be
rejected: a wrong type, a huge or negative number, unicode where a name is expected,
an empty table, deep nesting, a duplicate key, binary garbage, a NUL byte, a very long
string. Whatever the mutation, `labrun run` must exit 2 with `file:line` in its message,
never print a traceback, and never create a run.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labrun.cli import main

BASE = """\
[job]
name = "victim"
max_parallel = 2

[defaults]
retries = 1
memory = "64M"

[[tasks]]
name = "first"
command = "true"
cpus = 1
timeout = "10s"

[[tasks]]
name = "second"
command = ["true", "{item}"]
items = ["a", "b"]
env = { A = "1" }
"""

# key -> a TOML value of a kind the key never accepts
WRONG = st.sampled_from(
    [
        ("job", "name", "5"),
        ("job", "name", '"has space"'),
        ("job", "max_parallel", '"two"'),
        ("job", "max_parallel", "0"),
        ("job", "max_parallel", "1e400"),
        ("job", "max_parallel", "9223372036854775807"),
        ("job", "workdir", "[1, 2]"),
        ("job", "resume", '"yes"'),
        ("defaults", "retries", "-1"),
        ("defaults", "retries", "1.5"),
        ("defaults", "memory", "true"),
        ("defaults", "memory", '"64 parsecs"'),
        ("defaults", "memory", "99999999999999999999"),
        ("defaults", "memory", "-1"),
        ("defaults", "name", '"x"'),
        ("defaults", "timeout", '"-5s"'),
        ("defaults", "timeout", "inf"),
        ("defaults", "timeout", "nan"),
        ("defaults", "timeout", '"1000000000000000000000000000000d"'),
        ("defaults", "grace", "{ a = 1 }"),
        ("defaults", "env", '{ "1BAD" = "x" }'),
        ("defaults", "env", "{ A = [1] }"),
        ("defaults", "env", '{ A = "nul\\u0000" }'),
        ("defaults", "secret_env", '"DB_PASSWORD"'),
        ("defaults", "items", "[]"),
        ("defaults", "items", "{ range = [0, 0] }"),
        ("defaults", "items", "{ range = [0, 10, 0] }"),
        ("defaults", "items", "{ range = [0, 100000000000] }"),
        ("defaults", "items", "{ range = [0, 1e3] }"),
        ("defaults", "items", "[true]"),
        ("defaults", "command", '""'),
        ("defaults", "command", "[]"),
        ("defaults", "command", '[""]'),
        ("defaults", "command", "[1, 2]"),
        ("defaults", "runtime", '"quantum"'),
        ("defaults", "cpus", "0"),
        ("defaults", "cpus", "1e308"),
        ("defaults", "cpus", "1979-05-27T07:32:00Z"),
        ("defaults", "max_attempts", "0"),
        # issue 12: values `check` used to pass and `run` crashed on (exit 70)
        ("defaults", "command", '["echo", "a\\u0000b"]'),
        ("defaults", "items", '["x\\u0000y"]'),
        ("defaults", "outputs", '["out\\u0000"]'),
        ("defaults", "workdir", '"/tmp\\u0000"'),
        ("job", "name", '"' + "j" * 250 + '"'),
    ]
)


def _insert_in(text: str, table: str, line: str) -> str:
    header = f"[{table}]\n"
    return text.replace(header, header + line + "\n", 1)


@st.composite
def wrong_values(draw: st.DrawFn) -> str:
    table, key, value = draw(WRONG)
    return _insert_in(BASE, table, f"{key} = {value}")


@st.composite
def unicode_names(draw: st.DrawFn) -> str:
    name = draw(st.text(min_size=1, max_size=30).filter(lambda s: not re.fullmatch(r"[A-Za-z0-9_-]+", s)))
    escaped = "".join(f"\\U{ord(c):08x}" for c in name)
    return BASE.replace('name = "first"', f'name = "{escaped}"')


@st.composite
def unknown_keys(draw: st.DrawFn) -> str:
    key = draw(st.text("abcdefghijklmnopqrstuvwxyzé_-", min_size=1, max_size=5000))
    table = draw(st.sampled_from(["job", "defaults"]))
    return _insert_in(BASE, table, f'"zz{key}" = 1')


@st.composite
def long_strings(draw: st.DrawFn) -> str:
    size = draw(st.integers(1_000, 300_000))
    key = draw(st.sampled_from(["cpus", "memory", "timeout", "retries"]))
    return _insert_in(BASE, "defaults", f'{key} = "{"9" * size}x"')


@st.composite
def deep_nesting(draw: st.DrawFn) -> str:
    depth = draw(st.integers(2, 5000))
    kind = draw(st.sampled_from(["array", "table"]))
    key = draw(st.sampled_from(["items", "env", "command", "retries"]))
    value = "[" * depth + "1" + "]" * depth if kind == "array" else "{ a = " * depth + "1" + " }" * depth
    return _insert_in(BASE, "defaults", f"{key} = {value}")


@st.composite
def empty_tables(draw: st.DrawFn) -> str:
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return "[job]\n" + BASE.split("[defaults]", 1)[1].replace("\n", "\n", 1)
    if choice == 1:
        return BASE.split("[[tasks]]", 1)[0]
    if choice == 2:
        return BASE + "\n[[tasks]]\n"
    if choice == 3:
        return BASE.split("[[tasks]]", 1)[0] + "tasks = []\n"
    return "[job]\n[defaults]\n"


@st.composite
def duplicate_keys(draw: st.DrawFn) -> str:
    table = draw(st.sampled_from(["job", "defaults"]))
    key = "name" if table == "job" else "retries"
    value = '"victim"' if table == "job" else "1"
    text = _insert_in(BASE, table, f"{key} = {value}")
    return text if table == "job" else text.replace("retries = 1\n", "retries = 1\nretries = 1\n", 1)


@st.composite
def garbage(draw: st.DrawFn) -> bytes:
    raw = BASE.encode()
    junk = draw(st.binary(min_size=1, max_size=200))
    # each is invalid wherever it lands: NUL and \x01 are control characters TOML refuses
    # everywhere, and 0xFF is never UTF-8 whatever byte comes before it
    bad = draw(st.sampled_from([b"\x00", b"\xff\xfe", b"\xff", b"\x01"]))
    at = draw(st.integers(0, len(raw)))
    return raw[:at] + junk[: len(junk) // 2] + bad + junk[len(junk) // 2 :] + raw[at:]


HOSTILE = st.one_of(
    wrong_values(),
    unicode_names(),
    unknown_keys(),
    long_strings(),
    deep_nesting(),
    empty_tables(),
    duplicate_keys(),
    garbage(),
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("hostile")
    old = {k: os.environ.get(k) for k in ("LABRUN_STATE_DIR", "LABRUN_CONFIG", "LABRUN_DEBUG")}
    os.environ["LABRUN_STATE_DIR"] = str(root / "state")
    os.environ.pop("LABRUN_CONFIG", None)
    os.environ.pop("LABRUN_DEBUG", None)
    yield root
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:
            code = 0
    return code, out.getvalue(), err.getvalue()


def test_base_job_is_valid(workspace: Path) -> None:
    path = workspace / "base.toml"
    path.write_text(BASE)
    code, _, err = run_cli(["check", str(path)])
    assert code == 0, err


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(HOSTILE)
def test_hostile_job_files_are_rejected_with_a_location(workspace: Path, content: str | bytes) -> None:
    path = workspace / "job.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    code, out, err = run_cli(["run", str(path), "--plain"])
    assert code == 2, (code, out, err[:500])
    assert "Traceback" not in err and "internal error" not in err, err[:2000]
    assert re.search(re.escape(str(path)) + r":\d+", err), err[:500]
    db = workspace / "state" / "labrun.db"
    if db.exists():
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)
    assert not (workspace / "state" / "runs").exists() or not any((workspace / "state" / "runs").iterdir())


@pytest.mark.parametrize(
    "replacement",
    [
        'name = ["first"]',  # issue 12: a list or a table as a task's name exited 70
        "name = { a = 1 }",
        'name = "' + "t" * 260 + '"',  # a name that makes an over-long path (ENAMETOOLONG at run)
        'name = "first"\noutputs = ["{item}\\u0000"]',
    ],
)
def test_task_names_and_values_that_cannot_run_exit_2(workspace: Path, replacement: str) -> None:
    path = workspace / "names.toml"
    path.write_text(BASE.replace('name = "first"', replacement, 1))
    for args in (["check", str(path)], ["run", str(path), "--plain"]):
        code, out, err = run_cli(args)
        assert code == 2, (args, code, out, err[:500])
        assert re.search(re.escape(str(path)) + r":\d+:\d+: tasks\[0\]", err), err[:500]


def test_a_fifo_as_the_job_file_or_the_lab_file_is_refused_at_once(workspace: Path) -> None:
    fifo = workspace / "fifo.toml"
    os.mkfifo(fifo)
    code, _, err = run_cli(["check", str(fifo)])  # reading it would block forever
    assert code == 2 and "FIFO" in err and "not a regular file" in err, err
    job = workspace / "ok.toml"
    job.write_text(BASE)
    code, _, err = run_cli(["check", str(job), "--config", str(fifo)])
    assert code == 2 and "FIFO" in err, err
