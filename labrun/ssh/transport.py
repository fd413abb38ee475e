"""The user's own OpenSSH client, one multiplexed master connection per node.

Everything goes through `ssh` so that the user's ~/.ssh/config, agent and jump hosts
keep working. Options labrun adds: BatchMode (never a prompt), ConnectTimeout, a
ControlMaster whose socket lives in the state directory (named by a hash: unix socket
paths are limited to ~104 bytes), and StrictHostKeyChecking=accept-new only where the
node's `accept_new_host_keys = true`; otherwise host keys are checked as the user's
configuration says.

Failures (exit 255 from ssh) become `SshError`, whose message names the node, what
went wrong (host key unknown or changed, authentication denied, unreachable) and the fix.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass

from labrun import private
from labrun.errors import LabrunError

CONNECT_TIMEOUT = 10
MAX_SOCKET_PATH = 84  # sun_path holds 104-108 bytes, and ssh appends a 17-byte temporary suffix


class SshError(LabrunError):
    """A node could not be reached or refused us; the message says which and what to do."""


@dataclass(frozen=True)
class SshTarget:
    node: str
    destination: str
    control_dir: str
    ssh_config: str | None = None
    options: tuple[str, ...] = ()
    accept_new_host_keys: bool = False
    connect_timeout: int = CONNECT_TIMEOUT

    @property
    def control_path(self) -> str:
        # Everything that picks the server: two state directories (two users' runs, tests
        # in parallel) whose nodes share a name must never share a master connection,
        # above all where long paths fall back to one directory in /tmp.
        key = "\0".join((self.node, self.destination, self.control_dir, self.ssh_config or "", *self.options))
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        path = os.path.join(self.control_dir, f"{digest}.sock")
        if len(path) > MAX_SOCKET_PATH:
            path = os.path.join(tempfile.gettempdir(), f"labrun-{os.getuid()}", f"{digest}.sock")
        return path

    def user_command(self, *command: str) -> str:
        """The ssh command line a user types to reach the node as labrun does (its -F and
        -o options included: a node on another port is reached only with them)."""
        args = ["ssh"] + (["-F", self.ssh_config] if self.ssh_config else [])
        for option in self.options:
            args += ["-o", option]
        return shlex.join([*args, self.destination, *command])

    def argv(self, remote: str) -> list[str]:
        """ssh argv running `remote` (a shell command line) on the node."""
        args = ["ssh"]
        if self.ssh_config:
            args += ["-F", self.ssh_config]
        for option in self.options:
            args += ["-o", option]
        args += [
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={self.control_path}",
            "-o",
            "ControlPersist=120",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
        ]
        if self.accept_new_host_keys:
            args += ["-o", "StrictHostKeyChecking=accept-new"]
        return [*args, "--", self.destination, remote]

    def prepare(self) -> None:
        private.makedirs(os.path.dirname(self.control_path))

    def run(self, remote: str, stdin: bytes = b"", timeout: float = 60.0) -> bytes:
        """Run `remote` on the node; its stdout, or SshError when ssh itself failed."""
        self.prepare()
        try:
            done = subprocess.run(
                self.argv(remote),
                input=stdin,
                capture_output=True,
                timeout=timeout,
                start_new_session=True,  # a Ctrl-C meant for the runner must not cut the link
            )
        except subprocess.TimeoutExpired:
            raise SshError(self.unreachable(f"no answer within {timeout:g}s")) from None
        except FileNotFoundError:
            raise SshError("the `ssh` program is not installed here: install openssh-client") from None
        if done.returncode == 255:
            raise SshError(self.explain(done.stderr.decode("utf-8", "replace")))
        if done.returncode != 0:
            text = done.stderr.decode("utf-8", "replace").strip()
            raise SshError(f"node {self.node}: `{remote[:80]}` failed (exit {done.returncode}): {text}")
        return done.stdout

    def open(self, remote: str) -> subprocess.Popen[bytes]:
        """A long-lived session: pipes to `remote`'s stdin and stdout."""
        self.prepare()
        return subprocess.Popen(
            self.argv(remote),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def close(self) -> None:
        """End the master connection (`ssh -O exit`), if there is one."""
        if os.path.exists(self.control_path):
            args = ["ssh", "-o", f"ControlPath={self.control_path}", "-O", "exit", self.destination]
            if self.ssh_config:
                args[1:1] = ["-F", self.ssh_config]
            subprocess.run(args, capture_output=True, timeout=10, check=False)

    def unreachable(self, why: str) -> str:
        return (
            f"node {self.node} ({self.destination}) is unreachable: {why}; check that it is up and "
            f"that `{self.user_command('true')}` works from here"
        )

    def explain(self, stderr: str) -> str:
        """ssh's stderr → what went wrong for the user, naming the node and the fix."""
        text = stderr.lower()
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "ssh failed"
        where = f"[nodes.{self.node}]"
        if "remote host identification has changed" in text:
            return (
                f"node {self.node}: the host key of {self.destination} has CHANGED since it was "
                "recorded in known_hosts; this may be an attack or a reinstalled machine. Verify the "
                "new fingerprint with its administrator, then `ssh-keygen -R HOST` and connect once by hand"
            )
        if "host key verification failed" in text or ("no " in text and "host key is known" in text):
            return (
                f"node {self.node}: the host key of {self.destination} is not known (not in "
                f"known_hosts) and labrun never accepts one silently; connect once with "
                f"`{self.user_command()}` and check the fingerprint, or set accept_new_host_keys = true "
                f"in {where} of labrun.toml"
            )
        if "permission denied" in text or "too many authentication failures" in text:
            return (
                f"node {self.node}: {self.destination} refused authentication ({last}); labrun "
                "runs ssh with BatchMode=yes, so it needs a key that works without a prompt: "
                "load it into ssh-agent or set IdentityFile in your ssh config"
            )
        return self.unreachable(last)


def remote_path(path: str) -> str:
    """A path for the remote shell: `~/x` expands to the remote home, the rest is quoted."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)
