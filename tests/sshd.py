"""Real `sshd` servers on loopback ports, with throw-away keys, for the SSH tests.

`sshd_lab` (function scope) is a factory: `sshd_lab.start("node-a")` starts an sshd on a
free 127.0.0.1 port with a fresh host key and lets in one fresh user key (as the current
user: root here, which the server's config allows with a key only). Every server gets a
`Host node-a` block in one ssh_config file that the tests pass to ssh with `-F`, because
OpenSSH reads ~/.ssh from the passwd entry's home, not from $HOME. known_hosts is written
by the fixture (`trust=False` leaves a host out, for the unknown-host-key test).

`server.stop()` ends the listener and every session it forked, as a node that goes away
would; processes that detached from their session (labrun's attempts) keep running.

When sshd cannot run here, the tests skip and say why and how to fix it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

SSHD = "/usr/sbin/sshd"
SETUP_HINT = "run `sudo tests/setup-system.sh` (installs openssh-server)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "labrun-test", "-f", path],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    with open(path + ".pub", encoding="utf-8") as handle:
        return handle.read().strip()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class SshdServer:
    name: str
    port: int
    directory: str
    host_public_key: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = os.path.join(self.directory, "sshd_config")
        log = open(os.path.join(self.directory, "sshd.log"), "ab")  # noqa: SIM115 - kept by Popen
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", config], stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on port {self.port}: {self.log()}")

    def log(self) -> str:
        with open(os.path.join(self.directory, "sshd.log"), encoding="utf-8", errors="replace") as handle:
            return handle.read()[-2000:]

    def freeze(self) -> None:
        """The node stops answering but its attempts go on (a partition, a hung sshd): the
        listener and its sessions (the agent among them) are stopped with SIGSTOP; the
        attempts' monitors, detached from the session, are not."""
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, signum: int) -> None:
        if self.proc is None:
            return
        for pid in [self.proc.pid, *_descendants(self.proc.pid)]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """The node goes away: the listener and all its sessions end at once."""
        if self.proc is None:
            return
        victims = [self.proc.pid, *_descendants(self.proc.pid)]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.proc = None


@dataclass
class SshdLab:
    root: str
    user_key: str = ""
    user_public_key: str = ""
    servers: list[SshdServer] = field(default_factory=list)

    @property
    def ssh_config(self) -> str:
        return os.path.join(self.root, "ssh_config")

    @property
    def known_hosts(self) -> str:
        return os.path.join(self.root, "known_hosts")

    def start(self, name: str, trust: bool = True, env: dict[str, str] | None = None) -> SshdServer:
        """`env`: set in every session on that node (sshd's SetEnv), e.g. its DOCKER_HOST."""
        directory = os.path.join(self.root, name)
        os.makedirs(directory)
        host_key = os.path.join(directory, "host_ed25519")
        server = SshdServer(name, _free_port(), directory, _keygen(host_key))
        with open(os.path.join(directory, "authorized_keys"), "w", encoding="utf-8") as handle:
            handle.write(self.user_public_key + "\n")
        with open(os.path.join(directory, "sshd_config"), "w", encoding="utf-8") as handle:
            handle.write(
                f"Port {server.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
                f"PidFile {directory}/sshd.pid\nAuthorizedKeysFile {directory}/authorized_keys\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPrintMotd no\n"
                "LogLevel ERROR\nMaxSessions 100\nMaxStartups 100\n"
            )
            if env:
                handle.write("SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()) + "\n")
        with open(self.ssh_config, "a", encoding="utf-8") as handle:
            handle.write(
                f"Host {name}\n  HostName 127.0.0.1\n  Port {server.port}\n"
                f"  User {_user()}\n  IdentityFile {self.user_key}\n  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile {self.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
                "  StrictHostKeyChecking yes\n  LogLevel ERROR\n\n"
            )
        if trust:
            self.trust(server)
        server.start()
        self.servers.append(server)
        return server

    def trust(self, server: SshdServer) -> None:
        with open(self.known_hosts, "a", encoding="utf-8") as handle:
            handle.write(f"[127.0.0.1]:{server.port} {server.host_public_key}\n")

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _unavailable() -> str | None:
    if not os.path.exists(SSHD):
        return f"{SSHD} is missing: {SETUP_HINT}"
    if os.geteuid() != 0:
        return "the sshd tests run sshd as root (it must switch users); run them as root"
    for tool in ("ssh", "ssh-keygen"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            return f"{tool} is missing: install openssh-client"
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    return None


def new_lab(tmp_path_factory: pytest.TempPathFactory) -> SshdLab:
    """A lab with a fresh user key and no server yet; skips the test when sshd cannot run here.

    For fixtures of any scope (the contract suite shares one node per module); the caller
    calls `stop_all()` when done."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    # a short root: sshd and ssh put unix sockets under it, limited to ~104 bytes
    root = str(tmp_path_factory.mktemp("sshd"))
    lab = SshdLab(root)
    lab.user_key = os.path.join(root, "id_ed25519")
    lab.user_public_key = _keygen(lab.user_key)
    open(lab.known_hosts, "w").close()
    return lab


@pytest.fixture
def sshd_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdLab]:
    lab = new_lab(tmp_path_factory)
    try:
        yield lab
    finally:
        lab.stop_all()
