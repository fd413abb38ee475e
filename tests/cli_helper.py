"""Run the `labrun` command in-process, the way a user would, and capture what it prints."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helpers
import pytest

from labrun.cli import main


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Labrun = Callable[..., Result]


def make_labrun(capsys: pytest.CaptureFixture[str]) -> Labrun:
    def run(*args: str) -> Result:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        captured = capsys.readouterr()
        code = exit_info.value.code
        return Result(code if isinstance(code, int) else 0, captured.out, captured.err)

    return run


def write_job(directory: Path, text: str, name: str = "job.toml") -> str:
    """helpers.write_job, as the string path `main([...])` takes."""
    return str(helpers.write_job(directory, text, name))


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
