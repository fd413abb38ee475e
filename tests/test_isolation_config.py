"""Isolation keys in job files, launch options, and the isolation preflight checks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from labrun.cgroup import Support
from labrun.config.job import parse_job
from labrun.errors import ConfigError
from labrun.isolation import cgroup_check, isolation_checks, launch_options, process_check
from labrun.model import CgroupOptions, DockerOptions, ProcessOptions, Runtime


def job(body: str, file: str = "/jobs/j.toml") -> str:
    return '[job]\nname = "j"\n\n' + textwrap.dedent(body)


def problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as err:
        parse_job(text, "/jobs/j.toml")
    return [(p.line, p.key, p.message) for p in err.value.problems]


def test_docker_without_image_is_an_error_at_the_task() -> None:
    text = job(
        '[[tasks]]\nname = "a"\ncommand = "true"\n\n'
        '[[tasks]]\nname = "b"\nruntime = "docker"\ncommand = "true"\n'
    )
    ((line, key, message),) = problems(text)
    assert line == 8 and key == "tasks[1]" and "needs an image" in message


def test_bad_choices_and_cpuset_are_errors() -> None:
    text = job(
        '[[tasks]]\nname = "a"\ncommand = "x"\nruntime = "podman"\non_oom = "explode"\ncpuset = "0-a"\n'
    )
    messages = " | ".join(m for _, _, m in problems(text))
    assert "process, cgroup, docker" in messages
    assert "grow, retry, fail" in messages
    assert "not a CPU list" in messages


def test_memory_max_below_memory_is_an_error() -> None:
    text = job('[[tasks]]\nname = "a"\ncommand = "x"\nmemory = "1GiB"\nmemory_max = "512MiB"\n')
    assert any("memory_max is below memory" in m for _, _, m in problems(text))


def test_docker_task_spec_and_launch_options() -> None:
    text = job(
        """
        [defaults]
        runtime = "docker"
        image = "busybox:1"

        [[tasks]]
        name = "a"
        command = "true"
        image_tar = "images/bb.tar"
        gpus = 2
        network = "none"
        memory_growth = 3
        on_oom = "retry"
        memory_max = "4GiB"
        """
    )
    spec = parse_job(text, "/jobs/j.toml").tasks[0]
    assert spec.image == "busybox:1" and spec.image_tar == "/jobs/images/bb.tar"
    assert (spec.gpus, spec.memory_growth, spec.on_oom, spec.memory_max) == (2, 3.0, "retry", 4 * 1024**3)
    options = launch_options(spec, "/state/runs/1/shared")
    assert spec.runtime is Runtime.DOCKER
    assert options == DockerOptions(
        image="busybox:1",
        image_tar="/jobs/images/bb.tar",
        shared="/state/runs/1/shared",
        privileged=False,
        network="none",
    )


def test_cgroup_and_process_launch_options() -> None:
    text = job(
        '[[tasks]]\nname = "a"\ncommand = "x"\nruntime = "cgroup"\ncpuset = "0, 1"\n'
        '[[tasks]]\nname = "b"\ncommand = "x"\n'
    )
    cg, plain = parse_job(text, "/jobs/j.toml").tasks
    assert (cg.runtime, plain.runtime) == (Runtime.CGROUP, Runtime.PROCESS)
    assert launch_options(cg, "/s") == CgroupOptions(cpuset="0,1")
    assert launch_options(plain, "/s") == ProcessOptions()


def test_cgroup_check_says_which_mechanism_or_why_not() -> None:
    ok = cgroup_check(lambda: Support("cgroup-v1", "root, v1 hierarchies")).run(5)
    assert ok.ok and ok.found.startswith("cgroup can be made: cgroup-v1")
    no = cgroup_check(lambda: Support("none", "not root and no systemd user manager")).run(5)
    assert not no.ok and "not root and no systemd user manager" in no.found
    assert 'runtime = "process"' in no.fix


def test_process_check_says_limits_are_best_effort() -> None:
    result = process_check().run(5)
    assert result.ok and "best-effort" in result.found


def test_checks_follow_the_runtimes_a_job_uses(tmp_path: Path) -> None:
    text = job(
        '[[tasks]]\nname = "a"\ncommand = "x"\nruntime = "cgroup"\n'
        '[[tasks]]\nname = "b"\ncommand = "x"\nruntime = "docker"\nimage = "i:1"\n'
        '[[tasks]]\nname = "c"\ncommand = "x"\nruntime = "docker"\nimage = "i:1"\n'
    )
    names = [c.name for c in isolation_checks(parse_job(text, str(tmp_path / "j.toml")))]
    assert names == ["runtime cgroup", "docker daemon", "docker image i:1"]
