"""items = { file = ... }: one task per CSV row, JSON Lines object or line, with {item.FIELD}."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import labrun, write_job
from labrun_proc import query

from labrun.items_file import ItemsFileError, read_items


def _items(tmp_path: Path, name: str, content: bytes | str) -> list[tuple[str, dict[str, str] | None]]:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return [(item.value, item.fields) for item in read_items(str(path))]


def test_csv_rows_keep_quoted_separators_and_skip_blank_lines(tmp_path: Path) -> None:
    rows = _items(tmp_path, "g.csv", '\ufefflr,name\n0.1,"a, b"\n\n0.01,c\n')
    assert rows == [
        ('{"lr":"0.1","name":"a, b"}', {"lr": "0.1", "name": "a, b"}),
        ('{"lr":"0.01","name":"c"}', {"lr": "0.01", "name": "c"}),
    ]
    assert _items(tmp_path, "g.tsv", "a\tb\n1\t2\n") == [('{"a":"1","b":"2"}', {"a": "1", "b": "2"})]


def test_json_lines_and_plain_lines(tmp_path: Path) -> None:
    rows = _items(tmp_path, "g.jsonl", '{"lr": 0.1, "tag": "x"}\n\n{"lr": 1e-3, "tag": "y"}\n')
    assert [fields for _, fields in rows] == [{"lr": "0.1", "tag": "x"}, {"lr": "0.001", "tag": "y"}]
    assert _items(tmp_path, "g.txt", " a \n\nb c\n") == [("a", None), ("b c", None)]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("g.csv", "a,b\n1,2,3\n", "line 2: 3 fields where the header has 2"),
        ("g.csv", "a b,c\n1,2\n", "column 'a b' is not a name"),
        ("g.csv", "a,a\n1,2\n", "two columns have the same name"),
        ("g.csv", "a,b\n", "holds no items"),
        ("g.jsonl", '{"a": 1}\n[1, 2]\n', "line 2: expected a JSON object"),
        ("g.jsonl", '{"a": 1}\n{oops\n', "line 2: not JSON"),
        ("g.txt", b"a\nb\xff\n", "line 2: not UTF-8"),
        ("g.txt", "a\nb\0\n", "line 2: a NUL byte"),
        ("g.txt", "\n \n", "holds no items"),
    ],
)
def test_bad_items_files_say_which_line(
    tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    with pytest.raises(ItemsFileError, match=message):
        _items(tmp_path, name, content)


GRID_JOB = """
[job]
name = "grid"
[[tasks]]
name = "train"
items = { file = "grid.csv" }
command = "printf '%s|%s|%s\\n' {item.lr} {item.name} \\"$LABRUN_ITEM_LR\\" > out-{index}.txt"
retries = 0
"""


def test_a_sweep_over_csv_rows_quotes_every_field(tmp_path: Path) -> None:
    (tmp_path / "grid.csv").write_text('lr,name\n0.1,plain\n0.01,"a; rm -rf ~"\n')
    write_job(tmp_path, GRID_JOB)
    state = tmp_path / "state"
    check = labrun(state, "check", "job.toml", cwd=tmp_path)
    assert check.returncode == 0 and "2 items; fields lr, name" in check.stdout, check.stdout
    done = labrun(state, "run", "job.toml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out-0.txt").read_text() == "0.1|plain|0.1\n"
    assert (tmp_path / "out-1.txt").read_text() == "0.01|a; rm -rf ~|0.01\n"  # one argument
    items = [json.loads(str(r[0])) for r in query(state, "SELECT item FROM tasks ORDER BY seq")]
    assert items == [{"lr": "0.1", "name": "plain"}, {"lr": "0.01", "name": "a; rm -rf ~"}]


def test_a_field_missing_from_a_row_refuses_before_any_run_exists(tmp_path: Path) -> None:
    (tmp_path / "grid.csv").write_text("lr,depth\n0.1,3\n")
    write_job(tmp_path, GRID_JOB)
    state = tmp_path / "state"
    check = labrun(state, "check", "job.toml", cwd=tmp_path)
    assert check.returncode == 3
    assert "line 2 has no field 'name' (its fields: lr, depth) for {item.name}" in check.stdout
    done = labrun(state, "run", "job.toml", "--no-preflight", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "job.toml:5:1: tasks[0].items: items file" in done.stderr
    assert "Traceback" not in done.stderr
    assert query(state, "SELECT COUNT(*) FROM runs") == [(0,)]  # nothing left `running`
    (tmp_path / "grid.csv").unlink()
    gone = labrun(state, "run", "job.toml", "--no-preflight", cwd=tmp_path)
    assert gone.returncode == 2 and "cannot read it: No such file or directory" in gone.stderr


def test_item_fields_need_rows(tmp_path: Path) -> None:
    write_job(tmp_path, GRID_JOB.replace('{ file = "grid.csv" }', '["a", "b"]'))
    done = labrun(tmp_path / "state", "check", "job.toml", cwd=tmp_path)
    assert done.returncode == 2
    assert "{item.lr} names a field of an item, but this task's items are not rows of a file" in done.stderr
