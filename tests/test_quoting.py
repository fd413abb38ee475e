"""An item is data, never code: inside "..." or '...' of a string command as well as bare."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import labrun, write_job

from labrun.expand import argv_for

HOSTILE = """x"; touch pwned; echo "$(touch pwned2)`touch pwned3`' end"""


@pytest.mark.parametrize(
    ("command", "printed"),
    [
        ("echo {item}", HOSTILE),
        ('echo "{item}"', HOSTILE),
        ('echo "before {item} after"', f"before {HOSTILE} after"),
        ("echo 'before {item} after'", f"before {HOSTILE} after"),
        ("""echo "it's \\"{item}\\"" """, f'it\'s "{HOSTILE}"'),
    ],
)
def test_a_hostile_item_is_one_literal_word(tmp_path: Path, command: str, printed: str) -> None:
    argv = argv_for(command, {"item": HOSTILE})
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.stdout == printed + "\n", (argv, done.stderr)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("pwned")]


def test_a_job_with_a_quoted_item_runs_it_as_data(tmp_path: Path) -> None:
    write_job(
        tmp_path,
        f"""
        [job]
        name = "quoted"
        [[tasks]]
        name = "t"
        items = [{json.dumps(HOSTILE)}]
        command = 'printf "%s\\n" "name: {{item}}" > out.txt'
        """,
    )
    done = labrun(tmp_path / "s", "run", "job.toml", "--plain", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out.txt").read_text() == f"name: {HOSTILE}\n"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("pwned")]
