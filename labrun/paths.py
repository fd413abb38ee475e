"""The layout of the state directory: 0700 directories, 0600 files (labrun/private.py)."""

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

    def attempt_dir(self, run_id: int, task: str, attempt: int) -> str:
        return os.path.join(self.run_dir(run_id), _safe(task), str(attempt))

    def log(self, run_id: int, task: str, attempt: int, stream: str) -> str:
        return os.path.join(self.attempt_dir(run_id, task, attempt), stream)

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
