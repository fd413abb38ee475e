"""Helpers for tests that drive labrun as a real subprocess (`python -m labrun`)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path


def env_for(state: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "LABRUN_STATE_DIR": str(state), **extra}
    env.pop("LABRUN_CONFIG", None)
    return env


def start(args: list[str], state: Path, cwd: Path, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "labrun", *args],
        cwd=cwd,
        env=env_for(state, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(
    args: list[str], state: Path, cwd: Path, timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labrun", *args],
        cwd=cwd,
        env=env_for(state, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def integrity(state: Path) -> str:
    conn = sqlite3.connect(state / "labrun.db")
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def query(state: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(state / "labrun.db")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
