"""One long-lived conversation with the agent on a node, over the multiplexed connection.

`connect()` starts `python3 agent-<hash>.pyz serve` on the node (copying the agent there
first when that version is not cached yet) and probes it; `request()` sends one JSON line
and reads one back, with a time limit. A session that fails is closed; the caller
reconnects when it wants to, and learns from `SshError` why it could not.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import select
import subprocess
import time
import zipfile
from typing import Any

from labrun import attempt_facts, cgroup, docker_args, memseries, private
from labrun.ssh import agent, remote_docker
from labrun.ssh.transport import SshError, SshTarget, remote_path

REQUEST_TIMEOUT = 20.0
_NEED_INSTALL = "labrun-agent-missing"


def _shipped() -> list[tuple[str, str]]:
    """(name in the archive, file on the head): the agent, its docker runtime, the rules it
    shares with the head (attempt facts, memory series, Docker arguments, private files) and
    labrun.cgroup."""
    files = [("__main__.py", agent.__file__), ("labrun/__init__.py", ""), ("labrun/ssh/__init__.py", "")]
    files.append(("labrun/ssh/remote_docker.py", remote_docker.__file__))
    files.append(("labrun/attempt_facts.py", attempt_facts.__file__))
    files.append(("labrun/memseries.py", memseries.__file__))
    files.append(("labrun/docker_args.py", docker_args.__file__))
    files.append(("labrun/private.py", private.__file__))
    package = os.path.dirname(cgroup.__file__)
    for name in sorted(os.listdir(package)):
        if name.endswith(".py"):
            files.append((f"labrun/cgroup/{name}", os.path.join(package, name)))
    return files


@functools.lru_cache(maxsize=1)
def agent_source() -> bytes:
    """The agent as one zipapp, byte-identical for the same sources (so its hash is stable)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in _shipped():
            data = b""
            if path:
                with open(path, "rb") as handle:
                    data = handle.read()
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def agent_name(source: bytes) -> str:
    return f"agent-{hashlib.sha256(source).hexdigest()[:16]}.pyz"


class AgentSession:
    def __init__(self, target: SshTarget, workdir: str) -> None:
        self.target, self.workdir = target, workdir
        self.source = agent_source()
        self.proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self.probe: dict[str, Any] = {}

    @property
    def agent_path(self) -> str:
        return f"{self.workdir.rstrip('/')}/{agent_name(self.source)}"

    def connect(self, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
        """Start the agent on the node (installing it if needed); returns its probe."""
        self.close()
        path = remote_path(self.agent_path)
        serve = f"if [ -f {path} ]; then exec python3 {path} serve; else echo {_NEED_INSTALL}; fi"
        for _ in range(2):
            self.proc = self.target.open(serve)
            first = self._line(timeout)
            if _NEED_INSTALL not in first:
                break
            self.close()
            self.install(timeout)
        else:  # pragma: no cover - the install just succeeded
            raise SshError(f"node {self.target.node}: the agent could not be started at {self.agent_path}")
        answer = json.loads(first)
        if not answer.get("ok"):
            raise SshError(f"node {self.target.node}: the agent failed to start: {answer}")
        self.probe = self.request("probe", timeout)
        return self.probe

    def install(self, timeout: float) -> None:
        directory, path = remote_path(self.workdir), remote_path(self.agent_path)
        script = (
            f"umask 077 && mkdir -p {directory} && chmod 700 {directory} && cat > {path}.tmp.$$ "
            f"&& mv {path}.tmp.$$ {path} && command -v python3 >/dev/null"
        )
        try:
            self.target.run(script, stdin=self.source, timeout=timeout)
        except SshError as exc:
            if "failed (exit" in str(exc):
                raise SshError(
                    f"node {self.target.node}: cannot install labrun's agent in {self.workdir} or "
                    f"python3 is missing there ({exc}); set workdir in [nodes.{self.target.node}] "
                    "to a writable directory and install Python 3.8 or newer on the node"
                ) from None
            raise

    def request(self, op: str, timeout: float = REQUEST_TIMEOUT, **fields: Any) -> Any:
        self.send(op, **fields)
        return self.receive(timeout)

    def send(self, op: str, **fields: Any) -> None:
        """Send a request; its answer is read with `receive`, answers come in request order."""
        if self.proc is None or self.proc.stdin is None:
            raise SshError(self.target.unreachable("not connected"))
        line = json.dumps({"op": op, "workdir": self.workdir, **fields}) + "\n"
        try:
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._fail("the connection dropped")

    def receive(self, timeout: float = REQUEST_TIMEOUT) -> Any:
        answer = json.loads(self._line(timeout))
        if not answer.get("ok"):
            raise SshError(f"node {self.target.node}: the agent answered an error: {answer.get('error')}")
        return answer["result"]

    def ready(self) -> bool:
        """Whether `receive` would not wait: an answer (or the end of the connection) is there."""
        if b"\n" in self._buffer:
            return True
        if self.proc is None or self.proc.stdout is None:
            return False
        return bool(select.select([self.proc.stdout.fileno()], [], [], 0)[0])

    @property
    def fd(self) -> int | None:
        """What becomes readable when an answer arrives (for the runner's Waker)."""
        return self.proc.stdout.fileno() if self.proc is not None and self.proc.stdout else None

    def _line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self._fail(f"no answer within {timeout:g}s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                self._fail("the connection closed")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def _fail(self, why: str) -> None:
        stderr = b""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            stderr = self.proc.stderr.read() if self.proc.stderr else b""
            if self.proc.returncode == 255 and stderr:
                self.close()
                raise SshError(self.target.explain(stderr.decode("utf-8", "replace")))
        self.close()
        detail = stderr.decode("utf-8", "replace").strip().splitlines()
        raise SshError(self.target.unreachable(f"{why}{': ' + detail[-1] if detail else ''}"))

    @property
    def connected(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        if self.proc is not None:
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._buffer = b""
