"""`labrun report`: a run's attempts read from one read-only snapshot, written as they stream.

The whole report is read inside one snapshot, so its header counts and its rows agree
even while a runner goes on writing; nothing here takes the write lock.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import IO

from labrun.app import find_run
from labrun.outfile import written
from labrun.readstore import ReadStore
from labrun.views import build, trace

FORMATS = ("tsv", "json")


@contextlib.contextmanager
def _destination(output: str | None) -> Iterator[IO[str]]:
    if output is None or output == "-":
        yield sys.stdout
        return
    with written(output) as handle:
        yield handle


def write_report(reader: ReadStore, run_ref: str, fmt: str, output: str | None) -> None:
    with reader.snapshot() as snap:
        run = find_run(snap, run_ref)  # before the file is made: a wrong run leaves no file
        with _destination(output) as out:
            rows = trace.trace_rows(build.task_views(snap, run.id))
            if fmt == "tsv":
                trace.write_tsv(rows, out)
            else:
                trace.write_json(build.run_view(snap, run), rows, out)
