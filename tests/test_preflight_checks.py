"""Preflight checks against real files, sockets, processes and the real filesystem."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from labrun.preflight import (
    Check,
    CheckResult,
    command_on_path,
    disk_free,
    env_set,
    parse_address,
    path_readable,
    path_writable,
    render_text,
    run_checks,
    tcp_reachable,
    to_json,
)

NOBODY = 65534


def run1(check: Check, timeout: float = 5.0) -> CheckResult:
    (result,) = run_checks([check], timeout=timeout)
    return result


# --- commands -------------------------------------------------------------------------


def test_command_found_on_given_path(tmp_path: Path) -> None:
    tool = tmp_path / "mytool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    result = run1(command_on_path("mytool", path=str(tmp_path)))
    assert result.ok and result.found == str(tool)


def test_command_missing_names_the_path_searched(tmp_path: Path) -> None:
    result = run1(command_on_path("python3", path=str(tmp_path)))
    assert not result.ok
    assert str(tmp_path) in result.found
    assert "install python3" in result.fix


def test_command_that_is_not_executable_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "script").write_text("echo hi\n")
    assert not run1(command_on_path("script", path=str(tmp_path))).ok


# --- paths ----------------------------------------------------------------------------


def test_readable_file_and_directory(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x")
    assert run1(path_readable(str(tmp_path / "in.txt"))).found == "file, readable"
    assert run1(path_readable(str(tmp_path))).found == "directory, readable"


def test_missing_path_names_nearest_parent(tmp_path: Path) -> None:
    result = run1(path_readable(str(tmp_path / "data" / "input")))
    assert not result.ok
    assert f"nearest existing parent: {tmp_path}" in result.found
    assert "create" in result.fix


def test_path_under_a_file_and_dangling_link(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert "a parent of it is a file" in run1(path_readable(str(tmp_path / "f" / "g"))).found
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    result = run1(path_readable(str(tmp_path / "link")))
    assert not result.ok and "is a link to" in result.found


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory outside pytest's 0700 tmp tree, so another user can reach into it."""
    path = Path(tempfile.mkdtemp(prefix="labrun-preflight-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def check_as_nobody(path: str, writable: bool = False) -> tuple[bool, str]:
    """Runs the check in a forked child that has dropped to uid nobody.

    As root every permission check passes (root reads a mode-000 file), so a test of
    "unreadable" that ran as root would test nothing. Dropping privileges in a child makes
    the kernel refuse for real. When the tests are not run as root, the current user is
    already subject to permissions and the check runs in-process.
    """
    check = path_writable(path) if writable else path_readable(path)
    if os.geteuid() != 0:
        result = run1(check)
        return result.ok, result.found
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = check.run(5.0)
            os.write(write_end, json.dumps([result.ok, result.found]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    ok, found = json.loads(data)
    return bool(ok), str(found)


def test_unreadable_file_and_directory(shared_dir: Path) -> None:
    secret = shared_dir / "secret.txt"
    secret.write_text("x")
    secret.chmod(0)
    closed = shared_dir / "closed"
    closed.mkdir()
    closed.chmod(0)
    ok, found = check_as_nobody(str(secret))
    assert not ok and "cannot be read" in found and "Permission denied" in found
    ok, found = check_as_nobody(str(closed))
    assert not ok and "directory" in found
    # The same files are readable once the mode allows it: the check is not just failing.
    secret.chmod(0o644)
    assert check_as_nobody(str(secret)) == (True, "file, readable")


def test_writable_existing_and_to_be_created(tmp_path: Path) -> None:
    assert run1(path_writable(str(tmp_path))).ok
    result = run1(path_writable(str(tmp_path / "out" / "deep")))
    assert result.ok and str(tmp_path) in result.found
    assert not (tmp_path / "out").exists()  # nothing was created


def test_not_writable_as_another_user(shared_dir: Path) -> None:
    ro = shared_dir / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    ok, found = check_as_nobody(str(ro / "out"), writable=True)
    assert not ok and f"{ro} is not writable" in found
    ok, _ = check_as_nobody(str(ro), writable=True)
    assert not ok
    ro.chmod(0o777)
    assert check_as_nobody(str(ro / "out"), writable=True)[0]


def test_writable_under_a_file_fails(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    result = run1(path_writable(str(tmp_path / "f" / "out")))
    assert not result.ok and "is a file, not a directory" in result.found


# --- environment ----------------------------------------------------------------------


def test_env_set_empty_and_missing() -> None:
    env = {"DATA_DIRECTORY": "/data", "EMPTY": "  "}
    ok = run1(env_set("DATA_DIRECTORY", env))
    assert ok.ok and "/data" not in ok.found  # values may be secrets
    missing = run1(env_set("TOKEN", env))
    assert not missing.ok and missing.found == "not set" and "export TOKEN=" in missing.fix
    assert run1(env_set("EMPTY", env)).found == "set but empty"


# --- TCP ------------------------------------------------------------------------------


def test_parse_address() -> None:
    assert parse_address("localhost:5432") == ("localhost", 5432)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert parse_address("10.0.0.1:22") == ("10.0.0.1", 22)
    for bad in ("localhost", "::1:80", "host:0", "host:99999", "host:port", ""):
        with pytest.raises(ValueError):
            parse_address(bad)


def closed_port() -> int:
    """A port nothing listens on: bind to get a free one, then close it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_tcp_listening_vs_closed() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert run1(tcp_reachable(f"127.0.0.1:{port}")).found == f"connected to 127.0.0.1:{port}"
    port = closed_port()
    result = run1(tcp_reachable(f"127.0.0.1:{port}"))
    assert not result.ok
    assert f"connection refused by 127.0.0.1:{port}" in result.found
    assert "start the service" in result.fix


def test_tcp_unresolvable_host() -> None:
    # .invalid is reserved (RFC 2606): no resolver may answer for it.
    result = run1(tcp_reachable("no-such-host.invalid:5432"))
    assert not result.ok and "cannot resolve host 'no-such-host.invalid'" in result.found


def test_tcp_timeout_when_backlog_is_full() -> None:
    """A listener whose backlog is full drops SYNs on Linux: a real timeout, on loopback."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):  # backlog 0 still admits one or two; fill it
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                fillers.append(s)
            result = run1(tcp_reachable(f"127.0.0.1:{port}"), timeout=0.5)
        finally:
            for s in fillers:
                s.close()
    assert not result.ok
    assert f"no answer from 127.0.0.1:{port} within 0.5s" in result.found, result.found


# --- disk and resources ---------------------------------------------------------------


def test_disk_free(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    ok = run1(disk_free(str(tmp_path / "not-yet"), 1))
    assert ok.ok and f"free at {tmp_path}" in ok.found
    short = run1(disk_free(str(tmp_path), free + 2**50))
    assert not short.ok and "needs" in short.found and "PiB" not in short.found
    assert short.fix.startswith("free ")


# --- rendering ------------------------------------------------------------------------


def test_render_text_and_json(tmp_path: Path) -> None:
    results = run_checks([env_set("HOME_X", {"HOME_X": "1"}), path_readable(str(tmp_path / "nope"))], 5.0)
    lines = render_text(results, name_cap=200).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("✓ env HOME_X")
    assert lines[1].startswith("✗ path ") and "— fix: create" in lines[1]
    # a name past the cap stands whole on its line; what was found keeps the column
    long_name, found = render_text(results, name_cap=10).splitlines()[1:]
    assert long_name == f"✗ path {tmp_path / 'nope'}"
    assert found.startswith(" " * 14 + f"{tmp_path / 'nope'} does not exist")
    assert render_text(results, name_cap=10).splitlines()[0] == "✓ env HOME_X  set (1 character)"
    data = to_json(results)
    assert json.loads(json.dumps(data)) == data
    assert data["ok"] is False
    checks = data["checks"]
    assert isinstance(checks, list) and checks[1]["ok"] is False and checks[1]["fix"]
