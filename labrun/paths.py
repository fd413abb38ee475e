"""The layout of the state directory: 0700 directories, 0600 files (labrun/private.py).

An attempt's files lie in its run's directory, named for the task and the attempt:
`runs/RUN/TASK.N.stdout`, `TASK.N.stderr`, and what executors keep beside them
(`TASK.N.stderr.excerpt`...). No directory is made per task or per attempt: on ext4 a
directory costs 30-60 us against 20 us for a file, and the two directories were a tenth
of the runner's CPU on trivial tasks. A task name holds no dot: the names cannot collide.
Runs written before kept each attempt in a directory of its own, `runs/RUN/TASK/N/stdout`;
what reads logs finds those too (`log`, `beside`, `run_dir_of`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from labrun import private, state_id
from labrun.errors import StoreError


def _safe(name: str) -> str:
    """Task names are [A-Za-z0-9_-] plus "[N]"; nothing can climb out of the run directory."""
    return name.replace("/", "_").replace("\0", "_") or "_"


@dataclass(frozen=True)
class StatePaths:
    root: str

    @cached_property
    def id(self) -> str:
        """The state directory's id (`state_id`), made when first asked for; read once."""
        return state_id.ensure(self.root)

    @property
    def db(self) -> str:
        return os.path.join(self.root, "labrun.db")

    def run_dir(self, run_id: int) -> str:
        return os.path.join(self.root, "runs", str(run_id))

    def shared_dir(self, run_id: int) -> str:
        return os.path.join(self.run_dir(run_id), "shared")

    def attempt_log(self, run_id: int, task: str, attempt: int, stream: str) -> str:
        """Where an attempt starting now writes `stream` ("stdout" or "stderr")."""
        return os.path.join(self.run_dir(run_id), f"{_safe(task)}.{attempt}.{stream}")

    def log(self, run_id: int, task: str, attempt: int, stream: str) -> str:
        """Where an attempt's `stream` is: in a run written by an earlier labrun, the
        attempt's own directory when that is where it is."""
        legacy = os.path.join(self.run_dir(run_id), _safe(task), str(attempt), stream)
        return where_it_is(self.attempt_log(run_id, task, attempt, stream), legacy)

    def lock(self, job: str) -> str:
        return os.path.join(self.root, "locks", f"{job}.lock")

    def ensure(self) -> None:
        """Create the state directory, private to its owner, and tighten it if it exists."""
        try:
            for path in (
                self.root,
                os.path.join(self.root, "runs"),
                os.path.join(self.root, "locks"),
            ):
                private.makedirs(path)
            os.chmod(self.root, private.DIR_MODE)  # one made by an older labrun, or by hand
        except OSError as exc:
            raise StoreError(
                f"cannot create the state directory {self.root}: {exc.strerror}; set state_dir "
                "in labrun.toml or LABRUN_STATE_DIR to a directory you can write"
            ) from None


_STREAMS = ("stdout", "stderr")


def beside(log: str, name: str) -> str:
    """The attempt's file `name` (its stderr excerpt, its cgroup's usage...), beside its log
    `log`, in either layout."""
    head, tail = os.path.split(log)
    if tail in _STREAMS:  # runs/RUN/TASK/N/stdout, from an earlier labrun
        return os.path.join(head, name)
    return log[: log.rindex(".") + 1] + name


def run_dir_of(log: str) -> str:
    """The run's directory, from one of its attempts' logs, in either layout."""
    head, tail = os.path.split(log)
    if tail in _STREAMS:
        return os.path.dirname(os.path.dirname(head))
    return head


def where_it_is(current: str, before: str, base: str = "") -> str:
    """`current`, unless only `before` exists (under `base` when they are relative): what an
    older labrun made where this one no longer would."""
    if not os.path.exists(os.path.join(base, current)) and os.path.exists(os.path.join(base, before)):
        return before
    return current
