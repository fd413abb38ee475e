"""Per-task overhead of DockerExecutor against a plain `docker run --rm IMAGE true` loop.

Both run N trivial containers (`true`) of the same image, one at a time, interleaved
(one executor task, then one CLI run) so that drift in the daemon's speed hits both
equally. Prints seconds per task for each and the ratio; the target is <= 1.15x.

    python bench/docker_overhead.py [-n 50] [--url unix:///...] [--image labrun-test/busybox:1]

Without --url it uses a daemon that answers (DOCKER_HOST, the default socket, or the
test suite's private one), starting the private one as root if none does, and builds the
test image when missing: the same machinery as the tests (tests/dockerd.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import dockerd  # test infrastructure, found through the path above

from labrun.executors.base import Waker
from labrun.executors.docker import DockerExecutor
from labrun.model import DockerOptions, Launch


def one_executor_task(ex: DockerExecutor, waker: Waker, launch: Launch) -> float:
    begun = time.perf_counter()
    ex.start(launch)
    while not (ended := ex.finished()):
        waker.wait(30)
    ex.committed([attempt_id for attempt_id, _ in ended])  # as the runner does: removes it
    return time.perf_counter() - begun


def one_cli_run(docker_cli: str, url: str, image: str) -> float:
    begun = time.perf_counter()
    env = {**os.environ, "DOCKER_HOST": url}
    subprocess.run([docker_cli, "run", "--rm", image, "true"], env=env, check=True)
    return time.perf_counter() - begun


def launch_for(i: int, workdir: str, image: str, init: bool) -> Launch:
    return Launch(
        attempt_id=i, run_id=1, task_name="true", attempt=1, argv=("true",), env={},
        workdir=workdir, stdout_path=f"{workdir}/out", stderr_path=f"{workdir}/err",
        cpus=0, memory=0, options=DockerOptions(image=image, init=init),
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="containers per side (default 50)")
    parser.add_argument("--url", help="daemon address (default: find or start one)")
    parser.add_argument("--image", default=dockerd.TEST_IMAGE)
    parser.add_argument("--no-init", action="store_true", help="executor without docker-init")
    args = parser.parse_args()
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        print("the docker CLI is needed for the baseline loop; install docker.io", file=sys.stderr)
        return 2
    url = args.url or dockerd.find_or_start_daemon()
    image = dockerd.ensure_image(url, args.image)
    waker = Waker()
    ours = theirs = 0.0
    with tempfile.TemporaryDirectory() as workdir:
        ex = DockerExecutor(waker, base_url=url, state_dir=workdir)
        for i in range(-3, args.n):  # three warm-up rounds, not counted
            launch = launch_for(i + 10, workdir, image, init=not args.no_init)
            a, b = one_executor_task(ex, waker, launch), one_cli_run(docker_cli, url, image)
            if i >= 0:
                ours, theirs = ours + a, theirs + b
    for attempt_id in ex.running():
        ex.signal(attempt_id, signal.SIGKILL)
    ex.close()
    waker.close()
    per_ours, per_theirs = ours / args.n, theirs / args.n
    print(f"daemon {url}, image {image}, {args.n} containers each, interleaved")
    print(f"DockerExecutor      : {per_ours:.3f} s/task (init={not args.no_init})")
    print(f"docker run --rm loop: {per_theirs:.3f} s/task")
    print(f"ratio               : {per_ours / per_theirs:.2f}x (target <= 1.15x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
