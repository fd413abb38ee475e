"""The engine's own cost per task, without processes or log files.

    python bench/engine.py [--tasks 2000] [--repeat 5] [--statements]

A real `Runner` over a real SQLite store drives N tasks, 2 at a time, through an executor
whose attempts end as soon as the runner looks (one end per look, like two `true` tasks
on two cores): what is left is the engine — decisions, the ledger, placement, the SQLite
transaction of each tick. Prints the runner's CPU per task (best and median of R runs);
`--statements` adds the time of the ten costliest kinds of SQL statement per task (from a timed
wrapper around the store's connection). Run it against two checkouts with PYTHONPATH to
compare them; the machine's load moves every figure, so interleave and repeat.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from labrun import store as store_module
from labrun.config.job import parse_job
from labrun.config.lab import NodeSpec
from labrun.executors.base import Executor, Waker
from labrun.expand import instances
from labrun.model import Facts, Launch, Runtime, Started
from labrun.paths import StatePaths
from labrun.progress import Reporter
from labrun.runner import Runner
from labrun.store import Store


class Instant(Executor):
    """Attempts that have ended by the runner's next look, one per look."""

    runtime = Runtime.PROCESS

    def __init__(self, waker: Waker) -> None:
        self.waker = waker
        self.live: list[int] = []

    def start(self, launch: Launch) -> Started:
        self.live.append(launch.attempt_id)
        self.waker.wake()
        return Started(pid=1, mechanism="instant")

    def finished(self) -> list[tuple[int, Facts]]:
        if not self.live:
            return []
        attempt_id = self.live.pop(0)
        if self.live:
            self.waker.wake()
        return [(attempt_id, Facts(0, None, time.time()))]

    def signal(self, attempt_id: int, signum: int) -> None:
        pass

    def running(self) -> list[int]:
        return list(self.live)


class TimedConnection:
    """A sqlite3 connection that adds each statement's time to `spent[first three words]`."""

    def __init__(self, conn: sqlite3.Connection, spent: dict[str, list[float]]) -> None:
        self._conn, self._spent = conn, spent

    def _timed(self, kind: str, call: Any, sql: str, params: Iterable[Any]) -> Any:
        began = time.perf_counter()
        try:
            return call(sql, params)
        finally:
            self._spent[kind + " ".join(sql.split()[:3])].append(time.perf_counter() - began)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._timed("", self._conn.execute, sql, params)  # type: ignore[no-any-return]

    def executemany(self, sql: str, params: Iterable[Any]) -> sqlite3.Cursor:
        return self._timed("many: ", self._conn.executemany, sql, params)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def one_run(tasks: int) -> float:
    """CPU seconds the runner spent per task on one run of `tasks` tasks."""
    directory = tempfile.mkdtemp(prefix="engine-")
    try:
        text = (
            '[job]\nname = "engine"\n[defaults]\ncpus = 1.0\nmemory = "16MiB"\n'
            f'[[tasks]]\nname = "t"\ncommand = ["true"]\nitems = {{ range = [0, {tasks}] }}\n'
        )
        job = parse_job(text, os.path.join(directory, "job.toml"))
        store = Store(os.path.join(directory, "labrun.db"))
        with store.tx():
            run_id = store.create_run(job.name, job.file, job.text, time.time())
            store.add_tasks(run_id, instances(job))
        run = store.run(run_id)
        assert run is not None
        paths = StatePaths(os.path.join(directory, "state"))
        paths.ensure()
        waker = Waker()
        executors: dict[tuple[str, Runtime], Executor] = {("local", Runtime.PROCESS): Instant(waker)}
        node = NodeSpec("local", 2, 8 * 1024**3)
        runner = Runner(store, paths, job, run, [node], executors, waker, Reporter())
        began = time.process_time()
        runner.drive(time.time)
        spent = time.process_time() - began
        waker.close()
        store.close()
        return spent / tasks
    finally:
        shutil.rmtree(directory)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--statements", action="store_true")
    args = parser.parse_args()
    spent: dict[str, list[float]] = defaultdict(list)
    if args.statements:
        connect = store_module._connect
        store_module._connect = lambda path: TimedConnection(connect(path), spent)  # type: ignore[assignment,return-value]
    costs = [one_run(args.tasks) for _ in range(args.repeat)]
    where = os.path.dirname(os.path.dirname(os.path.abspath(store_module.__file__)))
    print(
        f"{where}: engine {min(costs) * 1e6:.0f} us of runner CPU a task at best, "
        f"{statistics.median(costs) * 1e6:.0f} median ({args.repeat} runs of {args.tasks} tasks)"
    )
    for kind, times in sorted(spent.items(), key=lambda item: -sum(item[1]))[:10]:
        print(f"  {sum(times) / (args.tasks * args.repeat) * 1e6:7.1f} us a task  {kind}")


if __name__ == "__main__":
    main()
