"""The id of a state directory: what tells its containers from another installation's.

Two state directories may use one Docker daemon (two users, a test and a real run, a
copy of labrun in a virtualenv): their attempt ids overlap (both start at 1), so a
container is known as ours by the `labrun.state` label carrying this id, never by its
attempt id alone. The id is random, made once, in `<state_dir>/state-id` (0600), by the
first writer that makes a container; readers (`cancel` of a dead run, `gc`, the orphan
sweep) only read it, and a state directory without the file has no container at all.
"""

from __future__ import annotations

import contextlib
import os

FILE = "state-id"


def path_of(state_dir: str) -> str:
    return os.path.join(state_dir, FILE)


def read(state_dir: str) -> str | None:
    """The directory's id, or None when none was made yet (or the file is unreadable)."""
    try:
        with open(path_of(state_dir), encoding="ascii") as handle:
            text = handle.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def ensure(state_dir: str) -> str:
    """The directory's id, made now if it has none. Two processes making it at once agree:
    each writes its own file and links it into place, and the loser reads the winner's."""
    found = read(state_dir)
    if found is not None:
        return found
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    made = os.urandom(8).hex()  # not `secrets`: its import (hmac, hashlib) cost every command 5 ms
    temp = path_of(state_dir) + f".{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (made + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path_of(state_dir))  # atomic, and never over an existing id
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    found = read(state_dir)
    if found is None:
        raise OSError(f"{path_of(state_dir)}: written but unreadable; check its permissions")
    return found
