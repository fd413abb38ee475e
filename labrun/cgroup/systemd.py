"""cgroup v2 through `systemd-run --user --scope`, for a user without a writable hierarchy.

systemd makes the scope's cgroup and removes it as soon as its last process exits, so
the counters would be gone before the runner could read them. The wrapper therefore
runs the task under a small /bin/sh that, still inside the scope, copies memory.events,
memory.peak and cpu.stat to a usage file after the task ends, then leaves with the
task's own status (re-raising its signal, so a SIGKILL still reads as a SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator, Sequence

from labrun.cgroup.common import (
    CGROUP_ROOT,
    AttemptCgroup,
    CgroupError,
    Limits,
    Usage,
    check_name,
    read_text,
)
from labrun.cgroup.v2 import V2Cgroup, usage_from_files

MECHANISM = "systemd-run"

# $1 usage file, $2 cgroup root, then the task's argv. Sections are split on "#" lines.
_SNAPSHOT = r"""u=$1; r=$2; shift 2
"$@"; rc=$?
g=$(sed -n 's/^0:://p' /proc/self/cgroup); d=$r$g
{ echo '#cgroup'; echo "$d"; echo '#events'; cat "$d/memory.events"
  echo '#peak'; cat "$d/memory.peak"; echo '#cpu'; cat "$d/cpu.stat"; } >"$u" 2>/dev/null
if [ $rc -gt 128 ]; then trap - $((rc - 128)); kill -$((rc - 128)) $$; fi
exit $rc"""


def unit_name(name: str) -> str:
    return f"labrun-{check_name(name)}"


def scope_argv(
    name: str,
    limits: Limits,
    argv: Sequence[str],
    usage_path: str,
    root: str = CGROUP_ROOT,
) -> list[str]:
    """The full command line: systemd-run with the limits, the snapshot shell, the task."""
    # Without OOMPolicy=continue systemd stops the whole scope at its first OOM kill, so the
    # snapshot shell dies before it can save the counters (seen on systemd 252 in the VM lane).
    props = ["-p", "OOMPolicy=continue"]
    if limits.memory is not None:
        props += ["-p", f"MemoryMax={limits.memory}", "-p", "MemorySwapMax=0"]
    if limits.cpus is not None:
        if not limits.cpus > 0:
            raise CgroupError(f"cpus must be a positive number of cores, got {limits.cpus!r}")
        # systemd takes whole percents; round up so a tiny share is never 0% (= no limit).
        props += ["-p", f"CPUQuota={max(1, -(-round(limits.cpus * 1000) // 10))}%"]
    if limits.cpuset is not None:
        props += ["-p", f"AllowedCPUs={limits.cpuset}"]
    return [
        "systemd-run",
        "--user",
        "--scope",
        "--quiet",
        "--collect",
        f"--unit={unit_name(name)}",
        *props,
        "--",
        "/bin/sh",
        "-c",
        _SNAPSHOT,
        "labrun-scope",
        usage_path,
        root,
        *argv,
    ]


def read_usage(usage_path: str) -> Usage | None:
    """Usage from the snapshot file; None when the wrapper could not write it (killed)."""
    text = read_text(usage_path)
    if text is None:
        return None
    sections: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("#"):
            current = line[1:]
            sections[current] = []
        elif current:
            sections[current].append(line)

    def joined(key: str) -> str | None:
        lines = sections.get(key)
        return "\n".join(lines) if lines else None

    return usage_from_files(joined("events"), joined("peak"), joined("cpu"))


def find_scope(name: str, uid: int, root: str = CGROUP_ROOT) -> str | None:
    """The scope's cgroup directory while it exists (for pids and kill), or None."""
    unit = unit_name(name) + ".scope"
    service = os.path.join(root, "user.slice", f"user-{uid}.slice", f"user@{uid}.service")
    for guess in ("app.slice", ""):
        path = os.path.join(service, guess, unit) if guess else os.path.join(service, unit)
        if os.path.isdir(path):
            return path
    # Some setups nest slices (app-foo.slice, session.slice): look a few levels down.
    for dirpath, dirnames, _ in os.walk(service):
        if unit in dirnames:
            return os.path.join(dirpath, unit)
        if dirpath.count(os.sep) - service.count(os.sep) >= 3:
            dirnames.clear()
    return None


class SystemdScope(AttemptCgroup):
    """An attempt confined by a systemd user scope; systemd owns creation and removal."""

    mechanism = MECHANISM

    def __init__(self, name: str, limits: Limits, usage_path: str, root: str = CGROUP_ROOT) -> None:
        self.name = check_name(name)
        self.limits = limits
        self.usage_path = usage_path
        self.root = root
        self.uid = os.geteuid()

    @property
    def procs_files(self) -> tuple[str, ...]:
        scope = find_scope(self.name, self.uid, self.root)
        return (os.path.join(scope, "cgroup.procs"),) if scope else ()

    def home_procs_files(self) -> tuple[str, ...]:
        return ()

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        # systemd-run makes the scope and moves itself in before it execs the task.
        yield

    def command(self, argv: Sequence[str]) -> list[str]:
        return scope_argv(self.name, self.limits, argv, self.usage_path, self.root)

    def wrap_argv(self, argv: Sequence[str]) -> list[str]:
        return self.command(argv)

    def pids(self) -> list[int]:
        scope = find_scope(self.name, self.uid, self.root)
        return V2Cgroup(scope).pids() if scope else []

    def usage(self) -> Usage:
        got = read_usage(self.usage_path)
        if got is not None:
            return got
        scope = find_scope(self.name, self.uid, self.root)
        return V2Cgroup(scope).usage() if scope else Usage(None, None, None)

    def kill(self, signum: int) -> None:
        scope = find_scope(self.name, self.uid, self.root)
        if scope:
            V2Cgroup(scope).kill(signum)

    def remove(self, timeout: float = 2.0) -> None:
        # systemd removes the scope when it empties (--collect also drops a failed unit);
        # only stragglers need a push.
        if self.pids():
            self.kill(signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.usage_path)
