"""What every cgroup mechanism shares: limits, usage, errors and small file helpers.

Standard library only: this package is shipped to remote nodes inside a stdlib-only agent.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

CGROUP_ROOT = "/sys/fs/cgroup"
PARENT = "labrun"  # every attempt's cgroup lives under <hierarchy>/labrun/
CPU_PERIOD_US = 100_000
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@=+-]{0,200}$")


class CgroupError(Exception):
    """A cgroup could not be made, limited, entered or removed. The message says which file."""


@dataclass(frozen=True)
class Limits:
    """What one attempt may use. None means "no limit" for that resource."""

    memory: int | None = None  # bytes; swap is disallowed wherever the kernel allows it
    cpus: float | None = None  # cores, fractional allowed (0.5 = half a core)
    cpuset: str | None = None  # CPUs to pin to, kernel list syntax: "0-3,6"


@dataclass(frozen=True)
class Usage:
    """What the kernel counted for an attempt's cgroup.

    `oom_kills` is None only where the kernel keeps no OOM-kill counter (cgroup v1 before
    Linux 4.13); `peak_memory` is None where no high-water mark exists (v2 before 5.19).
    """

    oom_kills: int | None
    peak_memory: int | None
    cpu_seconds: float | None


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise CgroupError(
            f"invalid cgroup name {name!r}: use letters, digits and _.@=+- only, "
            "not starting with '.' or '-', at most 200 characters"
        )
    return name


def cpu_quota_us(cpus: float, period_us: int = CPU_PERIOD_US) -> int:
    """CFS quota for `cpus` cores; the kernel refuses quotas under 1 ms."""
    if not cpus > 0:
        raise CgroupError(f"cpus must be a positive number of cores, got {cpus!r}")
    return max(1000, round(cpus * period_us))


def read_text(path: str) -> str | None:
    """The file's content, or None when it does not exist (an older kernel, a gone cgroup)."""
    # os.open/os.read: these files are tiny, and the text layer costs more than the read.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, 65536).decode("ascii", "replace")
    finally:
        os.close(fd)


def read_int(path: str) -> int | None:
    text = read_text(path)
    if text is None or not text.strip() or text.strip() == "max":
        return None
    return int(text.split()[0])


def read_keyed(path: str) -> dict[str, int] | None:
    """A flat-keyed file ("oom_kill 3" per line) as a dict; None when it does not exist."""
    text = read_text(path)
    if text is None:
        return None
    return parse_keyed(text)


def parse_keyed(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def write(path: str, value: str) -> None:
    """Write one value to a kernel file, turning OSError into a message naming the file."""
    try:
        # O_TRUNC as a shell redirection does: the kernel ignores it, a plain file needs it.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError as e:
        raise CgroupError(f"cannot open {path} to write {value!r}: {e.strerror}") from e
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise CgroupError(f"the kernel refused {value!r} in {path}: {e.strerror}") from e
    finally:
        os.close(fd)


def read_pids(procs_path: str) -> list[int]:
    text = read_text(procs_path)
    return [int(p) for p in text.split()] if text else []


def rmdir_retry(path: str, timeout: float, kill: Callable[[], None] | None = None) -> None:
    """rmdir, retrying while the kernel still tears down the cgroup's exiting processes.

    `kill` is called once if the first try finds the cgroup busy (stragglers left behind).
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if kill is not None and e.errno == errno.EBUSY:
                kill()
                kill = None
                continue
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise CgroupError(
                    f"cannot remove cgroup {path}: {e.strerror} (processes still in it: "
                    f"{read_pids(os.path.join(path, 'cgroup.procs'))})"
                ) from e
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def enter_argv(procs_files: Sequence[str], argv: Sequence[str]) -> list[str]:
    """argv that joins the cgroup(s) from /bin/sh, then execs the task (no window outside)."""
    script = 'while [ "$1" != -- ]; do echo $$ >"$1" || exit 125; shift; done; shift; exec "$@"'
    return ["/bin/sh", "-c", script, "labrun-enter", *procs_files, "--", *argv]


def move_self(procs_files: Sequence[str]) -> None:
    """Move this process (cgroup.procs: all its threads; v1 tasks: the calling thread)
    into the cgroup(s) of procs_files. "0" means the writer on v1 and v2 alike."""
    for path in procs_files:
        write(path, "0")


def proc_cgroups(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup as {controller: path}; the v2 line is under the key ""."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                # not str.removeprefix: this file also runs on nodes with Python 3.8
                name = controller[len("name=") :] if controller.startswith("name=") else controller
                out[name] = parts[2]
    return out


class AttemptCgroup(abc.ABC):
    """One attempt's cgroup: created with limits, entered by the child, read, killed, removed.

    Spawning, for every mechanism:

        with cg.entered():
            proc = subprocess.Popen(cg.command(argv), ...)

    Direct mechanisms move the spawning process into the cgroup for the moment of the
    fork, so the child is born inside it (the kernel gives a child its parent's
    cgroups) and the task never runs outside; `command` is argv itself. systemd-run does
    the opposite: `entered` does nothing and `command` wraps argv.
    """

    mechanism: str = ""
    name: str = ""
    reusable: bool = False  # True where reuse() can make it ready for another attempt
    # The file `entered` writes this process to, next to each cgroup.procs; "0" in it
    # means the writer (v1: "tasks", the calling thread only; a child is born in the
    # cgroups of the thread that forks it).
    self_file: str = "cgroup.procs"

    @property
    @abc.abstractmethod
    def procs_files(self) -> tuple[str, ...]:
        """The cgroup.procs files a process must be written to, to be inside the cgroup."""

    @abc.abstractmethod
    def home_procs_files(self) -> tuple[str, ...]:
        """The cgroup.procs files of this process's own cgroups, in procs_files' hierarchies."""

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """This process sits in the cgroup for the duration: fork the attempt in here.

        Where `self_file` is "cgroup.procs" (v2) all threads of this process move, and a
        thread that forks something else meanwhile puts it in the attempt's cgroup; on
        v1 ("tasks") only the calling thread moves. Keep it around the Popen call only.
        Memory this process allocates meanwhile is charged to the attempt (kilobytes).
        """
        home = self._as_self(self.home_procs_files())
        try:
            move_self(self._as_self(self.procs_files))  # in the try: a half-done move goes home too
            yield
        finally:
            move_self(home)

    def _as_self(self, procs_files: Sequence[str]) -> tuple[str, ...]:
        return tuple(os.path.join(os.path.dirname(p), self.self_file) for p in procs_files)

    def command(self, argv: Sequence[str]) -> list[str]:
        """The argv to spawn: the task's own for direct mechanisms."""
        return list(argv)

    def wrap_argv(self, argv: Sequence[str]) -> list[str]:
        """Alternative to `entered` for a spawner that cannot move itself (threads,
        another host): a /bin/sh prefix that joins the cgroup, then execs argv. Costs a
        shell start per attempt (about 1 ms here, against 0.2 ms for `entered`)."""
        return enter_argv(self.procs_files, argv)

    def pids(self) -> list[int]:
        return read_pids(self.procs_files[0])

    def reuse(self, limits: Limits) -> bool:
        """Make this idle cgroup ready for another attempt with `limits`, counters as new.

        False where it does not fit `limits` (by default: wherever a counter could not be
        started afresh); CgroupError where it is unfit for any attempt: remove it then."""
        return False

    @abc.abstractmethod
    def usage(self) -> Usage:
        """The kernel's counters for this cgroup; read them before remove()."""

    def current_memory(self) -> int | None:
        """Bytes charged to the cgroup now (what its memory limit is held against), for the
        series sampled while it runs; None where no file says it cheaply (then the
        attempt's process tree is sampled instead)."""
        return None

    @abc.abstractmethod
    def kill(self, signum: int) -> None:
        """Send `signum` to every process in the cgroup."""

    @abc.abstractmethod
    def remove(self, timeout: float = 2.0) -> None:
        """Kill what is left, then rmdir. Raises CgroupError if it is still busy after timeout."""


def signal_pids(procs_file: str, signum: int, rounds: int) -> None:
    """Signal every pid in procs_file; with SIGKILL repeat while a fork raced the loop."""
    for _ in range(rounds):
        pids = read_pids(procs_file)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        if rounds == 1:
            return
        time.sleep(0.002)
