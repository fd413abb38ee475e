"""A custom check: a shell command that passes when it exits 0.

The command runs in its own session (process group), so a command that outlives the time
limit is killed together with everything it started, not just the shell.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping

from labrun.preflight.core import Check, Verdict, failed, passed

TAIL_LINES = 5
_TAIL_CHARS = 2000


def custom_command(name: str, command: str, cwd: str, env: Mapping[str, str] | None = None) -> Check:
    """Runs `/bin/sh -c command` in `cwd` with `env` (None: this process's environment)."""

    def probe(timeout: float) -> Verdict:
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command],
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            where = f"in {cwd}" if not os.path.isdir(cwd) else "with /bin/sh"
            return failed(
                f"cannot start {where}: {exc.strerror or exc}",
                f"create the directory {cwd}" if not os.path.isdir(cwd) else "check /bin/sh",
            )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            out = _kill(proc)
            return failed(
                _with_tail(f"no answer within {timeout:g}s; killed", out),
                f"find out why `{command}` hangs, or raise the preflight time limit",
            )
        if proc.returncode == 0:
            return passed("exit 0")
        return failed(_with_tail(_describe_exit(proc.returncode), out), _fix(proc.returncode))

    return Check(name, probe)


def _kill(proc: subprocess.Popen[bytes]) -> bytes:
    """Kills the command's whole process group and reaps the shell; returns what it wrote."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        out, _ = proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        # Something left the group (setsid) and still holds the pipe: stop reading.
        if proc.stdout is not None:
            proc.stdout.close()
        proc.wait()
        out = b""
    return out or b""


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def _fix(code: int) -> str:
    if code == 127:
        return "a command it runs was not found: install it or fix PATH"
    if code == 126:
        return "a command it runs is not executable: chmod +x it"
    return "fix what the check reports above, then run `labrun check` again"


def _with_tail(head: str, out: bytes) -> str:
    text = out[-_TAIL_CHARS:].decode(errors="replace")
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if not lines:
        return f"{head} (no output)"
    return f"{head}: " + " ⏎ ".join(lines[-TAIL_LINES:])
