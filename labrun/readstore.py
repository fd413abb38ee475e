"""Reading the store without ever writing it: what `status`, `why`, `runs` and `logs` open.

A `ReadStore` opens the database with SQLite's read-only URI (`mode=ro`). It never takes
the write lock, never migrates, never creates or chmods the state directory: it answers
while a runner holds the lock, and on a state directory it cannot write (a read-only
mount, another user's archive). Every view reads through one `snapshot()`, a read
transaction (BEGIN DEFERRED … COMMIT) in which WAL keeps one version of the database
whatever the runner commits meanwhile: counts and rows always agree.

How the file is opened. WAL needs the -shm index to read what the -wal log holds:

    directory writable, or a -wal present   mode=ro. SQLite uses the -shm, or makes one
        (as the database's owner, with its mode); on a read-only mount it reads a
        read-only -shm into private memory, which works while a runner writes elsewhere.
    directory read-only and no -wal         mode=ro&immutable=1. No connection is open
        anywhere (each keeps the -wal until the last one closes), so the database file
        holds every commit. immutable skips locking, safe only while nothing writes: the
        snapshot checks on exit that the file did not change under it.
    directory read-only, -wal without -shm  refused, with the fix. The log holds commits
        that cannot be read without its index, and showing the older state would lie.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

from labrun.errors import StoreError
from labrun.migrations import MIGRATIONS, READS_SAME_SINCE
from labrun.reads import Reads, read_error

Fingerprint = tuple[int, int, int]  # inode, size, mtime (ns) of the database file


class Snapshot(Reads):
    """Reads inside one read transaction; valid only inside `ReadStore.snapshot()`."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.conn = conn
        self.path = path
        self.live = True

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        assert self.live, "a snapshot is read inside its `with` block"
        return super()._read(sql, params)

    def _stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Any]:
        assert self.live, "a snapshot is read inside its `with` block"
        return super()._stream(sql, params)


class ReadStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fingerprint: Fingerprint | None = None  # set when opened immutable
        try:
            self.conn = self._open()
        except sqlite3.Error as exc:
            raise read_error(exc, path) from None

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """One consistent version of the database for everything read inside."""
        try:
            self.conn.execute("BEGIN DEFERRED")
        except sqlite3.Error as exc:
            raise read_error(exc, self.path) from None
        snap = Snapshot(self.conn, self.path)
        try:
            yield snap
        finally:
            snap.live = False
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("COMMIT")
        if self._fingerprint is not None and _fingerprint(self.path) != self._fingerprint:
            raise StoreError(
                f"{self.path} changed while it was read through a read-only directory, so what "
                "was shown may be mixed; run the command again"
            )

    def _open(self) -> sqlite3.Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.exists(self.path):
            _require_possible(directory)
            return _empty()  # nothing has run yet; never create the state directory to say so
        wal, shm = self.path + "-wal", self.path + "-shm"
        query = "mode=ro"
        if not os.access(directory, os.W_OK):
            if not os.path.exists(wal):
                query, self._fingerprint = "mode=ro&immutable=1", _fingerprint(self.path)
            elif not os.path.exists(shm):
                raise StoreError(
                    f"{self.path}: its write-ahead log {wal} holds commits but its index {shm} is "
                    f"missing, and {directory} is read-only, so they cannot be read; copy the state "
                    f"directory somewhere writable and read it there: cp -a {directory} "
                    "/tmp/labrun-state && LABRUN_STATE_DIR=/tmp/labrun-state labrun status"
                )
        uri = f"file:{urllib.parse.quote(os.path.abspath(self.path))}?{query}"
        conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA busy_timeout = 30000")
        if not _check_version(conn, self.path):
            conn.close()
            return _empty()
        return conn


def _require_possible(directory: str) -> None:
    """A state directory that is not there yet is fine (nothing ran); one that never can be
    (a file where it or a parent should be) is a setting to fix, said as the writer says it."""
    found = directory
    while not os.path.exists(found) and os.path.dirname(found) != found:
        found = os.path.dirname(found)
    if not os.path.isdir(found):
        raise StoreError(
            f"cannot use the state directory {directory}: {found} is a file, not a directory; "
            "set LABRUN_STATE_DIR or state_dir in labrun.toml to a directory"
        )


def _fingerprint(path: str) -> Fingerprint:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _check_version(conn: sqlite3.Connection, path: str) -> bool:
    """True if this labrun reads the database as it is; False if it holds no tables yet."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    current = len(MIGRATIONS)
    if READS_SAME_SINCE <= version <= current:
        return True
    if version > current:
        raise StoreError(
            f"{path} was written by a newer labrun (schema {version}; this labrun reads schema "
            f"{current}): upgrade labrun to read it"
        )
    if version == 0:
        if conn.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()[0]:
            raise StoreError(f"{path} is not a labrun database; check state_dir in labrun.toml")
        return False  # a runner is creating it right now, or it was created empty
    raise StoreError(
        f"{path} was written by an older labrun (schema {version}; this labrun reads schema "
        f"{current}), and reading never changes it: run any labrun write command once to upgrade "
        "it, e.g. `labrun gc --older-than 36500d` (which removes nothing)"
    )


def _empty() -> sqlite3.Connection:
    """A database of the current schema with nothing in it, in memory."""
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    for migration in MIGRATIONS:
        conn.executescript(migration)
    return conn
