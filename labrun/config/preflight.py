"""The `[preflight]` and `[notify]` tables of a job file: what must hold before a run, and who
hears about it after."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PreflightSpec:
    commands: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()  # relative paths: against the job's workdir
    writable: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    tcp: tuple[str, ...] = ()
    disk_free: Mapping[str, int] = field(default_factory=dict)  # path -> bytes
    checks: tuple[tuple[str, str], ...] = ()  # (name, shell command)
    timeout: float = 5.0  # seconds, per check


@dataclass(frozen=True)
class NotifySpec:
    command: str | None = None  # sh -c, in the job's workdir, the summary JSON on stdin
    email: str | None = None  # through the local sendmail
    on: tuple[str, ...] = ("failure", "recovery")
    timeout: float = 60.0
