"""A real dockerd and a tiny image for the Docker tests; nothing is pulled from a registry.

`docker_url` (session): the address of a daemon that answers. It uses DOCKER_HOST or the
default socket when a daemon answers there; otherwise, as root, it starts a private
dockerd (own socket, data root and exec root under STATE_DIR) and LEAVES IT RUNNING, so
later sessions and concurrent ones (the lead's and a helper's) share it and the image
cache instead of paying for a start each time. A start begins from empty roots: a data
root left by a daemon that was killed (a machine reused between sessions and CI) holds
one stale network sandbox per container it ever ran, and dockerd removes them one by one
before it answers — over a thousand of them kept it silent for more than 150 s in CI.
The private daemon touches no host networking: no iptables rules, no docker0 bridge.
Stop it with `kill $(cat /tmp/labrun-test-dockerd/docker.pid)`.

`docker_image` (session): `labrun-test/busybox:1`, imported from Debian's busybox-static
with `docker import` when missing.

When a daemon cannot be had (not root, not installed), the tests skip and the reason says
exactly why and how to fix it; a daemon we may start that does not come up fails them,
with its log's tail, so CI never passes with the Docker tests silently skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
import signal
import struct
import subprocess
import tarfile
import time
from typing import Any

import pytest
from procs import pids_where

STATE_DIR = "/tmp/labrun-test-dockerd"
PRIVATE_URL = f"unix://{STATE_DIR}/docker.sock"
TEST_IMAGE = "labrun-test/busybox:1"
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "true", "false", "sleep", "dd", "cat", "echo", "id", "ls", "touch", "kill")
# Flags this sandbox needs: none beyond private paths. These keep the daemon off the host's
# networking (tests need none); vfs is the fallback where overlay2 cannot mount.
DOCKERD_FLAGS = ("--iptables=false", "--ip6tables=false", "--bridge=none")
STORAGE_FALLBACKS: tuple[tuple[str, ...], ...] = ((), ("--storage-driver=vfs",))
# A first start on a fresh, loaded CI machine (containerd creating its databases) has
# taken longer than 30 s; waiting for the socket costs nothing when the start is fast.
START_TIMEOUT_S = 150.0
STOP_TIMEOUT_S = 20.0
SETUP_HINT = "run `sudo tests/setup-system.sh` (installs docker.io and busybox-static)"


class Unavailable(Exception):
    """Docker cannot be used here; the message is the skip reason."""


class StartFailed(Exception):
    """dockerd is installed and we may start it, but it did not come up: a real failure."""


def answers(url: str) -> bool:
    import docker

    try:
        client = docker.APIClient(base_url=url, version="auto", timeout=5)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def find_or_start_daemon() -> str:
    public = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    for url in (public, PRIVATE_URL):
        if answers(url):
            return url
    if os.geteuid() != 0:
        raise Unavailable(
            f"no Docker daemon answers at {public}, and only root may start one for the tests; "
            "start it with `sudo systemctl start docker`"
        )
    dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/usr/bin")
    if dockerd is None:
        raise Unavailable(f"no Docker daemon answers at {public} and dockerd is not installed; " + SETUP_HINT)
    os.makedirs(STATE_DIR, exist_ok=True)
    with open(f"{STATE_DIR}/lock", "w") as lock:
        # Two sessions starting at once must not start two daemons on one data root.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if answers(PRIVATE_URL):
            return PRIVATE_URL
        return start_private(dockerd)


def start_private(dockerd: str) -> str:
    log_path = f"{STATE_DIR}/dockerd.log"
    tried: list[str] = []
    for extra in STORAGE_FALLBACKS:
        clear_leftovers()
        argv = [
            dockerd,
            f"--data-root={STATE_DIR}/data",
            f"--exec-root={STATE_DIR}/exec",
            f"--pidfile={STATE_DIR}/docker.pid",
            f"--host={PRIVATE_URL}",
            *DOCKERD_FLAGS,
            *extra,
        ]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        started = time.monotonic()
        while time.monotonic() - started < START_TIMEOUT_S and proc.poll() is None:
            if answers(PRIVATE_URL):
                return PRIVATE_URL
            time.sleep(0.2)
        state = f"exited {proc.returncode}" if proc.returncode is not None else process_state(proc.pid)
        stop(proc)
        tried.append(f"`{' '.join(extra) or 'default storage'}`: {state}")
    with open(log_path, errors="replace") as log:
        tail = "".join(log.readlines()[-15:]).strip()
    raise StartFailed(
        f"started `{dockerd}` ({' '.join(DOCKERD_FLAGS)}) but it did not answer at "
        f"{PRIVATE_URL} within {START_TIMEOUT_S:.0f}s; tried {'; '.join(tried)}. "
        f"{log_path} ends with:\n{tail}"
    )


def clear_leftovers() -> None:
    """End what a killed private daemon left (containerd and shims run in sessions of their
    own and outlive it), unmount its mounts, and empty its roots."""
    for pid in pids_using(STATE_DIR):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while pids_using(STATE_DIR) and time.monotonic() < deadline:
        time.sleep(0.1)
    for mount_point in sorted(mounts_under(STATE_DIR), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mount_point], check=False, capture_output=True)
    for name in ("docker.pid", "docker.sock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{STATE_DIR}/{name}")
    for root in ("data", "exec"):
        path = f"{STATE_DIR}/{root}"
        shutil.rmtree(path, ignore_errors=True)
        if os.path.exists(path):
            raise StartFailed(f"could not empty {path} before starting a test dockerd; remove it by hand")


def pids_using(directory: str) -> list[int]:
    """Processes whose command line names the directory (a daemon's roots are its flags)."""
    needle = directory.encode()
    return pids_where("cmdline", lambda cmdline: needle in cmdline)


def mounts_under(directory: str) -> list[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    return [point for point in points if point.startswith(directory + "/")]


def process_state(pid: int) -> str:
    """How the daemon stood when we gave up on it: exited, or its state and kernel wait."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
        with open(f"/proc/{pid}/wchan") as wchan:
            return f"pid {pid} in state {state}, waiting in {wchan.read() or '-'}"
    except OSError:
        return f"pid {pid} had exited"


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL to its whole session (containerd with it)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def is_static(path: str) -> bool:
    """True when the ELF file has no program interpreter (so it runs in an empty rootfs)."""
    with open(path, "rb") as elf:
        head = elf.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only; that is all Debian ships here
            return False
        phoff = struct.unpack_from("<Q", head, 0x20)[0]
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        elf.seek(phoff)
        table = elf.read(phentsize * phnum)
    pt_interp = 3
    types = (struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum))
    return pt_interp not in types


def rootfs_tar(busybox: str = BUSYBOX) -> bytes:
    """/bin/busybox, a symlink per applet, and a world-writable /tmp."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, mode in (("bin", 0o755), ("tmp", 0o1777), ("etc", 0o755)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buf.getvalue()


def ensure_image(url: str, tag: str = TEST_IMAGE) -> str:
    import docker

    client: Any = docker.APIClient(base_url=url, version="auto")
    try:
        client.inspect_image(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    if not os.path.exists(BUSYBOX) or not is_static(BUSYBOX):
        raise Unavailable(
            f"test image {tag} is missing and {BUSYBOX} is not a static "
            f"busybox to build it from; {SETUP_HINT}"
        )
    repo, _, version = tag.partition(":")
    client.import_image_from_data(rootfs_tar(), repository=repo, tag=version)
    client.close()
    return tag


@pytest.fixture(scope="session")
def docker_url() -> str:
    try:
        return find_or_start_daemon()
    except Unavailable as exc:
        pytest.skip(f"docker tests skipped: {exc}")
    except StartFailed as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def docker_image(docker_url: str) -> str:
    try:
        return ensure_image(docker_url)
    except Unavailable as exc:
        pytest.skip(f"docker tests skipped: {exc}")
