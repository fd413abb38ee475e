"""Another process writing a labrun database: holds its write lock, commits on request.

Run as `python db_writer.py DB`; it reads one command per line from stdin and answers
one line on stdout when done, so a test can order its reads around real commits:

    lock          BEGIN IMMEDIATE (the write lock), answered "locked"
    sql STATEMENT run one statement, answered "ok"
    commit        COMMIT, answered "ok"
    churn RUN     start moving RUN's tasks between ready and running, one commit per
                  move, on a thread of its own until `stop`; answered "ok"
    stop          stop churning, answered "ok"

It exits when stdin closes, rolling back what it did not commit. `Writer` drives it.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path


class Writer:
    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, command: str) -> str:
        """One command; waits for its answer (the process's own busy wait is bounded)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer in ("locked", "ok"), f"db_writer answered {answer!r} to {command!r}"
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def churn(path: str, run_id: int, stop: threading.Event) -> None:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    step = 0
    while not stop.is_set():
        state = "running" if step % 2 == 0 else "ready"
        where = f"run_id = {run_id} AND seq % 7 = {step % 7}"
        conn.execute(f"UPDATE tasks SET state = '{state}' WHERE {where}")
        step += 1
        time.sleep(0.001)  # a runner commits a few times per tick, not in a tight loop
    conn.close()


def main(path: str) -> None:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    stop = threading.Event()
    churner: threading.Thread | None = None
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "lock":
            conn.execute("BEGIN IMMEDIATE")
            print("locked", flush=True)
        elif command == "sql":
            conn.execute(argument)
            print("ok", flush=True)
        elif command == "commit":
            conn.execute("COMMIT")
            print("ok", flush=True)
        elif command == "churn":
            churner = threading.Thread(target=churn, args=(path, int(argument), stop))
            churner.start()
            print("ok", flush=True)
        elif command == "stop" and churner is not None:
            stop.set()
            churner.join()
            print("ok", flush=True)
        else:
            print(f"unknown command {command!r}", flush=True)
    stop.set()
    if churner is not None:
        churner.join()
    conn.close()


if __name__ == "__main__":
    main(sys.argv[1])
