"""The `[preflight]` table of a job file: what must be true of the world before a run."""

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
