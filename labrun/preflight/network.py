"""TCP reachability: "host:port" accepts a connection within the time limit."""

from __future__ import annotations

import re
import socket
import time

from labrun.preflight.core import Check, Verdict, failed, passed

_BRACKETED = re.compile(r"^\[([^\]]+)\]:(\d+)$")
_PLAIN = re.compile(r"^([^:\s\[\]]+):(\d+)$")
ADDRESS_HELP = '"host:port", e.g. "localhost:5432" or "[::1]:5432"'


def parse_address(text: str) -> tuple[str, int]:
    """(host, port) from "host:port" or "[ipv6]:port"; ValueError says what is wrong."""
    match = _BRACKETED.match(text.strip()) or _PLAIN.match(text.strip())
    if not match:
        raise ValueError(f"expected {ADDRESS_HELP}, got {text!r}")
    port = int(match.group(2))
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1-65535, got {port} in {text!r}")
    return match.group(1), port


def tcp_reachable(address: str) -> Check:
    """A TCP connection to `address` succeeds within the time limit; raises ValueError if
    `address` is not "host:port" (so that the configuration reports it, not the check)."""
    host, port = parse_address(address)

    def probe(timeout: float) -> Verdict:
        return _connect(host, port, timeout)

    return Check(f"tcp {address}", probe)


def _connect(host: str, port: int, timeout: float) -> Verdict:
    shown_address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    fix = f"start the service on {shown_address}, or fix the address in the job file"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return failed(
            f"cannot resolve host {host!r}: {exc.strerror}",
            f"check the spelling of {host!r} and this machine's DNS / /etc/hosts",
        )
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    for family, kind, proto, _name, sockaddr in infos:
        shown = _show(sockaddr)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            problems.append(f"{shown}: no time left")
            break
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(remaining)
            try:
                sock.connect(sockaddr)
            except ConnectionRefusedError:
                problems.append(f"connection refused by {shown} (nothing listening)")
            except TimeoutError:
                problems.append(f"no answer from {shown} within {timeout:g}s (dropped?)")
            except OSError as exc:
                problems.append(f"{shown}: {exc.strerror or exc}")
            else:
                return passed(f"connected to {shown}")
    return failed("; ".join(problems), fix)


def _show(sockaddr: tuple[object, ...]) -> str:
    host, port = str(sockaddr[0]), sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
