"""Checks on the local machine: commands, paths, environment variables, disk space.

Each constructor returns a `Check`; nothing here reads a job file. Paths are taken as
given (the caller resolves them against the job's directory).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path

from labrun.fit import plural
from labrun.preflight.core import Check, Verdict, failed, passed
from labrun.units import format_size


def command_on_path(command: str, path: str | None = None) -> Check:
    """`command` can be run: found on `path` (the PATH string; None: this process's PATH)."""

    def probe(_timeout: float) -> Verdict:
        search = path if path is not None else os.environ.get("PATH", os.defpath)
        found = shutil.which(command, path=search)
        if found:
            return passed(found)
        if os.sep in command:
            what = "does not exist" if not os.path.lexists(command) else "is not executable"
            return failed(f"{command} {what}", f"fix the path, or chmod +x {command}")
        return failed(
            f"not found on PATH ({_short_path(search)})",
            f"install {command}, or add the directory that holds it to PATH",
        )

    return Check(f"command {command}", probe)


def _short_path(search: str, keep: int = 6) -> str:
    parts = [p for p in search.split(os.pathsep) if p]
    if len(parts) <= keep:
        return os.pathsep.join(parts)
    return os.pathsep.join(parts[:keep]) + f"{os.pathsep}… ({len(parts) - keep} more)"


def nearest_existing(path: Path) -> Path:
    """The path itself if it exists, else its closest ancestor that does."""
    current = path.absolute()
    while not os.path.lexists(current) and current != current.parent:
        current = current.parent
    return current


def path_readable(path: str) -> Check:
    """`path` exists and this user can read it (list it, for a directory)."""

    def probe(_timeout: float) -> Verdict:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return _missing(path)
        except NotADirectoryError:
            return failed(
                f"{path} does not exist: a parent of it is a file",
                f"fix the path, or create {path}",
            )
        except PermissionError:
            return failed(
                f"cannot reach {path}: permission denied on a parent directory",
                f"ask for search (x) permission on the directories above {path}",
            )
        kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
        problem = _try_read(path, is_dir=kind == "directory")
        if problem:
            return failed(
                f"{kind} {path} exists but cannot be read: {problem}",
                f"chmod u+r{'x' if kind == 'directory' else ''} {path}, or run as its owner",
            )
        return passed(f"{kind}, readable")

    return Check(f"path {path}", probe)


def _missing(path: str) -> Verdict:
    if os.path.islink(path):
        target = os.readlink(path)
        return failed(f"{path} is a link to {target}, which does not exist", f"create {target}")
    parent = nearest_existing(Path(path))
    return failed(
        f"{path} does not exist (nearest existing parent: {parent})",
        f"create {path}, or fix the path in the job file",
    )


def _try_read(path: str, is_dir: bool) -> str:
    """Reads for real rather than asking `os.access`, which answers for the real uid only."""
    try:
        if is_dir:
            with os.scandir(path) as entries:
                next(entries, None)
        else:
            with open(path, "rb") as f:
                f.read(1)
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


def path_writable(path: str) -> Check:
    """`path` is writable, or can be created: then its nearest existing ancestor must be.

    Nothing is created: the check asks the kernel (`access(2)` with the effective ids).
    """

    def probe(_timeout: float) -> Verdict:
        target = Path(path)
        base = nearest_existing(target)
        if not base.exists():  # a dangling link
            return failed(f"{base} is a link to nothing", f"remove {base} or create its target")
        unwritable = _unwritable_filesystem(str(base))
        if unwritable:  # access(2) says yes to root here, and chmod cannot help
            return failed(f"{path} is on {unwritable}", "write somewhere else (fix the path in the job file)")
        if base == target.absolute():
            if os.access(base, os.W_OK | (os.X_OK if base.is_dir() else 0), effective_ids=True):
                return passed(f"{'directory' if base.is_dir() else 'file'}, writable")
            return failed(f"{path} exists but is not writable", f"chmod u+w {path}")
        if not base.is_dir():
            return failed(
                f"cannot create {path}: {base} is a file, not a directory",
                "fix the path in the job file",
            )
        if os.access(base, os.W_OK | os.X_OK, effective_ids=True):
            return passed(f"does not exist yet; can be created in {base}")
        return failed(
            f"cannot create {path}: {base} is not writable",
            f"create {path} yourself, or chmod u+w {base}",
        )

    return Check(f"writable {path}", probe)


# Kernel filesystems: files there are the kernel's; root passes access(2) but cannot create.
_PSEUDO_FILESYSTEMS = {"proc", "sysfs", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "configfs"}


def _unwritable_filesystem(path: str) -> str:
    """Why nothing can be written at `path` whatever the permissions ('' if it can be)."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "a read-only filesystem (chmod cannot help: remount it read-write or write elsewhere)"
    except OSError:
        return ""
    fstype = _fstype(os.path.realpath(path))
    if fstype in _PSEUDO_FILESYSTEMS:
        return f"the kernel's {fstype} filesystem, where no file can be created"
    return ""


def _fstype(path: str) -> str:
    """The type of the filesystem mounted nearest above `path` (/proc/self/mounts)."""
    best, kind = "", ""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        return ""
    return kind


def env_set(name: str, environ: Mapping[str, str], secret: bool = False) -> Check:
    """The environment variable `name` is set and non-empty in `environ`. A `secret` one
    (a `secret_env` name) is never to be written in the job file: the fix says so."""

    def probe(_timeout: float) -> Verdict:
        value = environ.get(name)
        if value is None and secret:
            return failed(
                "not set",
                f"export {name}=... in the shell that runs labrun (a secret never goes in the job file)",
            )
        if value is None:
            return failed("not set", f"export {name}=... before running, or add it to [defaults] env")
        if not value.strip():
            return failed("set but empty", f"give {name} a value, e.g. export {name}=...")
        return passed(f"set ({plural(len(value), 'character')})")  # the value may be a secret

    return Check(f"env {name}", probe)


def disk_free(path: str, needed: int) -> Check:
    """At least `needed` bytes free for this user on the filesystem that holds `path`."""

    def probe(_timeout: float) -> Verdict:
        base = nearest_existing(Path(path))
        try:
            st = os.statvfs(base)
        except OSError as exc:
            return failed(f"cannot look at {base}: {exc.strerror}", f"check that {base} exists")
        free = st.f_bavail * st.f_frsize  # bavail: what a non-root user may use
        found = f"{format_size(free)} free at {base} (needs {format_size(needed)})"
        if free >= needed:
            return passed(found)
        return failed(
            found,
            f"free {format_size(needed - free)} on that filesystem, or write somewhere else",
        )

    return Check(f"disk free {path}", probe)
