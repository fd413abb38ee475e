"""What the isolating runtimes need from a task spec: launch options and preflight checks.

`launch_options` fills `Launch.options` with the typed options of the task's runtime
(`model.CgroupOptions`, `model.DockerOptions`). `isolation_checks` says, before a run,
whether each runtime a job uses can work here: a cgroup can be made, the Docker daemon
answers, the image is present or its tarball exists. The process runtime always works;
its check says plainly what it cannot do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from labrun.config.job import JobSpec, TaskSpec
from labrun.model import CgroupOptions, DockerOptions, ProcessOptions, Runtime, RuntimeOptions
from labrun.preflight.core import Check, Verdict, failed, passed


def launch_options(spec: TaskSpec, shared: str) -> RuntimeOptions:
    """The options of the task's runtime, from its spec and the run's shared directory."""
    if spec.runtime is Runtime.CGROUP:
        return CgroupOptions(cpuset=spec.cpuset.replace(" ", "") if spec.cpuset else None)
    if spec.runtime is Runtime.DOCKER:
        return DockerOptions(
            image=spec.image or "",
            image_tar=spec.image_tar or None,
            shared=shared,
            privileged=spec.privileged,
            network=spec.network or None,
        )
    return ProcessOptions()


def cgroup_check(detect: Callable[[], Any] | None = None) -> Check:
    def probe(_timeout: float) -> Verdict:
        from labrun.cgroup import detect as real_detect

        support = (detect or real_detect)()
        if support.ok:
            notes = "; ".join(support.notes)
            return passed(f"cgroup can be made: {support.mechanism}" + (f" ({notes})" if notes else ""))
        return failed(
            f"no cgroup can be made here: {support.reason}",
            'run as root, or on a systemd machine with cgroup v2, or use runtime = "process" '
            "(no limits; OOM detection best-effort)",
        )

    return Check("runtime cgroup", probe)


def process_check() -> Check:
    def probe(_timeout: float) -> Verdict:
        return passed(
            "runtime process: no memory or CPU limit is enforced and OOM kills are best-effort "
            "guesses (peak memory sampled about once a second); use runtime cgroup for certainty"
        )

    return Check("runtime process", probe)


def docker_daemon_check(base_url: str | None = None) -> Check:
    def probe(timeout: float) -> Verdict:
        from labrun.executors.docker_daemon import connect, daemon_url

        url = daemon_url(base_url)
        try:
            api = connect(base_url, timeout=max(1.0, timeout))
            api.ping()
            api.close()
        except Exception as exc:
            return failed(
                f"the Docker daemon at {url} does not answer: {exc}",
                "start it (`sudo systemctl start docker`) or set DOCKER_HOST to one that runs",
            )
        return passed(f"the Docker daemon at {url} answers")

    return Check("docker daemon", probe)


def docker_image_check(image: str, image_tar: str | None, base_url: str | None = None) -> Check:
    def probe(timeout: float) -> Verdict:
        import docker.errors

        from labrun.executors.docker_daemon import connect

        try:
            api = connect(base_url, timeout=max(1.0, timeout))
        except Exception as exc:
            return failed(f"cannot ask the Docker daemon about {image}: {exc}", "start the daemon")
        try:
            api.inspect_image(image)
            return passed(f"image {image} is present")
        except docker.errors.ImageNotFound:
            pass
        finally:
            api.close()
        if image_tar and os.path.isfile(image_tar):
            return passed(f"image {image} is missing; it will be loaded from {image_tar}")
        if image_tar:
            return failed(
                f"image {image} is missing and image_tar {image_tar} does not exist",
                f"fix the path, or make it with `docker save -o {image_tar} {image}`",
            )
        return failed(
            f"image {image} is not on the Docker daemon",
            f"run `docker load -i IMAGE.tar` or `docker pull {image}`, or set image_tar",
        )

    return Check(f"docker image {image}", probe)


def isolation_checks(job: JobSpec, base_url: str | None = None) -> list[Check]:
    """One check per runtime the job uses, and one per Docker image (each once)."""
    runtimes = {spec.runtime for spec in job.all_tasks}
    checks: list[Check] = []
    if Runtime.PROCESS in runtimes:
        checks.append(process_check())
    if Runtime.CGROUP in runtimes:
        checks.append(cgroup_check())
    if Runtime.DOCKER in runtimes:
        checks.append(docker_daemon_check(base_url))
        images: dict[str, str | None] = {}
        for spec in job.all_tasks:
            if spec.runtime is Runtime.DOCKER and spec.image:
                images.setdefault(spec.image, spec.image_tar)
        checks += [docker_image_check(image, tar, base_url) for image, tar in images.items()]
    return checks
