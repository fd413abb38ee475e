"""`labrun serve` as a user starts it: the real CLI in a subprocess on a free port, ended
with Ctrl-C (SIGINT) after the test, which must stop it cleanly."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from helpers import cli_env

START_WITHIN = 60.0  # seconds for the URL line, on a loaded machine


@contextlib.contextmanager
def serving(state: Path, *args: str) -> Iterator[str]:
    """The base URL (http://127.0.0.1:PORT) of a running `labrun serve --port 0`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "labrun", "serve", "--port", "0", *args],
        env=cli_env(state),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], START_WITHIN)
        line = proc.stdout.readline() if ready else ""
        found = re.search(r"http://[^/ ]+", line)
        assert found, (
            f"no URL from labrun serve: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        )
        yield found.group(0)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "labrun serve: stopped" in out and "Traceback" not in err


def request(base: str, method: str, path: str, host: str | None = None) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of one request; `host`: the Host header to send instead."""
    address = base.removeprefix("http://")
    name, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(name.strip("[]"), int(port), timeout=60)
    try:
        headers = {"Host": host} if host is not None else {}
        conn.request(method, path, headers=headers)
        answer = conn.getresponse()
        body = answer.read().decode("utf-8")
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, body
    finally:
        conn.close()


def wait_for_page(base: str, path: str, needle: str, timeout: float = 90.0) -> str:
    """The page once it holds `needle` (a runner writes meanwhile)."""
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        status, _, body = request(base, "GET", path)
        if status == 200 and needle in body:
            return body
        time.sleep(0.2)
    raise AssertionError(f"{path} never held {needle!r} within {timeout}s; last: {body[-1500:]}")


def listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP socket listens on at `port`, from the kernel's tables."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        with open(table) as handle:
            next(handle)
            for line in handle:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port and len(address) == width:
                    found.add(address)
    return found
