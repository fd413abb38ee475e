"""The state directory's id (labrun/state_id.py): made once, by whoever comes first, 0600;
read without writing anything."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from labrun import state_id


def _ensure(state_dir: str) -> str:
    return state_id.ensure(state_dir)


def test_processes_making_the_id_at_once_agree_on_one(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    with multiprocessing.get_context("fork").Pool(6) as pool:
        ids = pool.map(_ensure, [state] * 12)
    assert len(set(ids)) == 1 and len(ids[0]) == 16
    assert state_id.read(state) == ids[0] == state_id.ensure(state)
    assert os.listdir(state) == [state_id.FILE]  # no temporary file left
    assert os.stat(state_id.path_of(state)).st_mode & 0o777 == 0o600


def test_reading_a_directory_without_an_id_makes_nothing(tmp_path: Path) -> None:
    assert state_id.read(str(tmp_path)) is None
    assert state_id.read(str(tmp_path / "absent")) is None
    assert os.listdir(tmp_path) == []


def test_two_state_directories_have_different_ids(tmp_path: Path) -> None:
    assert state_id.ensure(str(tmp_path / "a")) != state_id.ensure(str(tmp_path / "b"))


def test_the_id_is_made_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        state_id.ensure(str(tmp_path))
    finally:
        os.umask(old)
    assert os.stat(state_id.path_of(str(tmp_path))).st_mode & 0o777 == 0o600
