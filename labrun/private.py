"""Files and directories only their owner can read: 0700 directories, 0600 files, whatever
the umask.

Everything labrun writes under its state directory (and the agent under a node's work
directory) is made through here. `os.makedirs(path, mode)` is not enough: it gives its
mode only to the last directory, and the parents it creates on the way get 0777 less the
umask (0777 itself under `umask 000`). A mode passed to `open` can only lose bits to the
umask, so 0600 never becomes looser; a directory is set to exactly 0700 once made, since a
umask that takes the owner's own bits would leave one labrun cannot write into.

Standard library only, Python >= 3.8: shipped to SSH nodes with the agent.
"""

from __future__ import annotations

import os

DIR_MODE = 0o700
FILE_MODE = 0o600


def makedirs(path: str) -> None:
    """`path` and each missing parent, every one made 0700. Existing ones are left as they are
    (a parent outside the state directory is the user's)."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    except FileNotFoundError:
        parent = os.path.dirname(path.rstrip("/"))
        if not parent or parent == path:
            raise
        makedirs(parent)
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:  # made meanwhile by another process
            return
    os.chmod(path, DIR_MODE)


def open_fd(path: str, flags: int) -> int:
    """`os.open(path, flags | O_CREAT | O_CLOEXEC)`, a new file made 0600."""
    return os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)


def open_append(path: str) -> int:
    """A descriptor that appends to `path`, made 0600 when new."""
    return open_fd(path, os.O_WRONLY | os.O_APPEND)


def write_atomic(path: str, data: bytes) -> None:
    """Replace `path` with `data` in one rename: a reader sees the old or the new, never half."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with os.fdopen(open_fd(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)  # a full disk must not also be left a stray file
        except OSError:
            pass
        raise
