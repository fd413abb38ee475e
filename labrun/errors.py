"""labrun's own exceptions, each carrying the exit code the CLI returns for it.

    LabrunError (1)
    ├── ConfigError (2)        invalid job file or lab configuration; holds every problem found
    ├── UsageError (2)         a bad command-line argument (unknown run, unknown task)
    ├── NothingToRerun (0)     `run --rerun-failed` after a run that succeeded
    ├── PreflightFailed (3)    `run` refused to start because a check failed
    ├── LockHeld (75)          another runner holds this job's lock (EX_TEMPFAIL)
    ├── StoreError (1)         the state directory or database cannot be used
    └── Interrupted (130)      the runner was stopped by a signal

Anything else that escapes is a bug; the CLI still prints one line, not a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class ExitCode:
    OK = 0
    TASKS_FAILED = 1
    CONFIG = 2
    PREFLIGHT = 3
    LOCKED = 75
    INTERRUPTED = 130


class LabrunError(Exception):
    exit_code = ExitCode.TASKS_FAILED


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration file, with where it is and what to do."""

    file: str
    line: int | None
    column: int | None
    key: str
    message: str
    hint: str = ""

    def render(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        key = f" {self.key}:" if self.key else ""
        text = f"{where}:{key} {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class ConfigError(LabrunError):
    exit_code = ExitCode.CONFIG

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(p.render() for p in problems))


class UsageError(LabrunError):
    exit_code = ExitCode.CONFIG


class NothingToRerun(LabrunError):
    """`--rerun-failed` after a run that succeeded: said, and not an error."""

    exit_code = ExitCode.OK


class PreflightFailed(LabrunError):
    exit_code = ExitCode.PREFLIGHT


class LockHeld(LabrunError):
    exit_code = ExitCode.LOCKED


class StoreError(LabrunError):
    exit_code = ExitCode.TASKS_FAILED


class Interrupted(LabrunError):
    exit_code = ExitCode.INTERRUPTED
