"""The live bar as a user sees it, in a real pseudo-terminal 80 columns wide: counts and
elapsed time stay, a long job name is shortened; after the first Ctrl-C it says it is
stopping and that a second Ctrl-C kills at once."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from helpers import cli_env, write_job

ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07|[()][A-Z0-9])")
JOB = "nightly-hyperparameter-sweep-for-the-big-transformer-model-on-all-datasets"


class Terminal:
    """A process on the slave side of a pty of the given size; its screen text, read so far."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], columns: int = 80) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        env = {**env, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": "24"}
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        self.master = master
        self.raw = b""

    def text(self) -> str:
        return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def lines(self) -> list[str]:
        return [part for part in re.split(r"[\r\n]", self.text()) if part.strip()]

    def wait_for(self, pattern: str, limit: float = 60) -> str:
        """Read until a line matches `pattern`; that line."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            found = [line for line in self.lines() if re.search(pattern, line)]
            if found:
                return found[-1]
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if ready:
                try:
                    self.raw += os.read(self.master, 65536)
                except OSError:  # the process closed the terminal
                    break
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines()[-30:]))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def test_the_bar_at_80_columns_and_the_first_ctrl_c(tmp_path: Path) -> None:
    write_job(
        tmp_path,
        f"""
        [job]
        name = "{JOB}"
        [defaults]
        grace = "300s"
        memory = "64MiB"
        [[tasks]]
        name = "t"
        items = [1, 2]
        command = "trap '' TERM; sleep 300"
        """,
    )
    term = Terminal([sys.executable, "-m", "labrun", "run", "job.toml"], tmp_path, cli_env(tmp_path / "s"))
    try:
        bar = term.wait_for(r"0/2 .*2 running")
        assert len(bar.rstrip()) <= 80, bar
        assert re.search(r"\d+:\d\d:\d\d", bar), f"the elapsed time is cut: {bar!r}"
        assert "…" in bar and bar.startswith(JOB[:6]), bar  # the name gave way, not the numbers
        term.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        term.wait_for(r"stopping \(Ctrl-C\)")
        term.wait_for(r"kill them now")  # the message may wrap at 80 columns
        said = re.sub(r"\s+", " ", " ".join(term.lines()))
        assert "SIGKILL after their grace" in said and "press Ctrl-C again to kill them now" in said
        stopping = term.wait_for(r"0/2 .*stopping; Ctrl-C again kills")
        assert len(stopping.rstrip()) <= 80 and re.search(r"\d+:\d\d:\d\d", stopping), stopping
        term.proc.send_signal(signal.SIGINT)  # the second one kills at once (grace is 300s)
        assert term.proc.wait(timeout=60) == 130
        assert "interrupted" in term.wait_for(r"labrun: job ")
    finally:
        term.close()
