"""runtime = "docker" through `labrun run`, against a real dockerd (tests/dockerd.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from e2e import MiB, attempts, labrun, status, write_job

from labrun.isolation import docker_daemon_check, docker_image_check


@pytest.fixture
def api(docker_url: str) -> Iterator[Any]:
    client = docker.APIClient(base_url=docker_url, version="auto")
    yield client
    client.close()


def run(tmp_path: Path, url: str, body: str, *flags: str) -> tuple[int, list[dict[str, Any]]]:
    write_job(tmp_path, body)
    done = labrun(tmp_path, "run", *flags, "job.toml", env={"DOCKER_HOST": url})
    return done.returncode, attempts(tmp_path, env={"DOCKER_HOST": url})


def test_container_oom_is_oom(tmp_path: Path, docker_url: str, docker_image: str) -> None:
    body = (
        f'[[tasks]]\nname = "t"\nruntime = "docker"\nimage = "{docker_image}"\nmemory = "64MiB"\n'
        'on_oom = "fail"\ncommand = "dd if=/dev/zero of=/dev/null bs=200M count=1"\n'
    )
    code, got = run(tmp_path, docker_url, body)
    assert code != 0
    (only,) = got
    assert only["outcome"] == "oom" and only["oom_killed"]
    assert only["runtime"] == "docker" and only["memory_limit"] == 64 * MiB


def test_grown_memory_reaches_the_container(tmp_path: Path, docker_url: str, docker_image: str) -> None:
    body = (
        f'[[tasks]]\nname = "t"\nruntime = "docker"\nimage = "{docker_image}"\nmemory = "64MiB"\n'
        'memory_growth = 4\ncommand = "dd if=/dev/zero of=/dev/null bs=200M count=1"\n'
    )
    code, got = run(tmp_path, docker_url, body)
    assert code == 0
    assert [a["outcome"] for a in got] == ["oom", "succeeded"]
    assert got[1]["memory_limit"] == 256 * MiB


def test_exit_codes_pass_through(tmp_path: Path, docker_url: str, docker_image: str) -> None:
    body = (
        f'[[tasks]]\nname = "t"\nruntime = "docker"\nimage = "{docker_image}"\nretries = 0\n'
        'command = ["sh", "-c", "exit 3"]\n'
    )
    code, got = run(tmp_path, docker_url, body)
    assert code != 0
    (only,) = got
    assert only["outcome"] == "failed" and only["exit_code"] == 3


def test_workdir_is_mounted_and_output_lands_there(
    tmp_path: Path, docker_url: str, docker_image: str
) -> None:
    body = (
        f'[[tasks]]\nname = "t"\nruntime = "docker"\nimage = "{docker_image}"\n'
        'command = "echo hi > out.txt"\n'
    )
    code, got = run(tmp_path, docker_url, body)
    assert code == 0 and got[0]["outcome"] == "succeeded"
    assert (tmp_path / "out.txt").read_text() == "hi\n"


def test_missing_image_is_config_error_naming_it(tmp_path: Path, docker_url: str) -> None:
    body = '[[tasks]]\nname = "t"\nruntime = "docker"\nimage = "labrun-test/absent:404"\ncommand = "true"\n'
    # preflight refuses such a job before it starts ...
    write_job(tmp_path, body)
    refused = labrun(tmp_path, "run", "job.toml", env={"DOCKER_HOST": docker_url})
    assert refused.returncode == 3 and "labrun-test/absent:404" in refused.stderr
    # ... and past preflight, the executor says the same as the attempt's outcome
    code, got = run(tmp_path, docker_url, body, "--no-preflight")
    assert code != 0
    (only,) = got
    assert only["outcome"] == "config_error"
    assert "labrun-test/absent:404" in only["detail"] and "docker load" in only["detail"]
    assert "retrying cannot help" in status(tmp_path)["tasks"][0]["reason"]


def test_image_tar_is_loaded(tmp_path: Path, docker_url: str, docker_image: str, api: Any) -> None:
    tag = f"labrun-test/tarred:{uuid.uuid4().hex[:8]}"
    repo, _, version = tag.partition(":")
    api.tag(docker_image, repo, version)
    (tmp_path / "images").mkdir()
    with (tmp_path / "images" / "bb.tar").open("wb") as out:
        for chunk in api.get_image(tag):
            out.write(chunk)
    api.remove_image(tag)
    try:
        body = (
            f'[[tasks]]\nname = "t"\nruntime = "docker"\nimage = "{tag}"\n'
            'image_tar = "images/bb.tar"\ncommand = "true"\n'
        )
        code, got = run(tmp_path, docker_url, body)
        assert code == 0 and got[0]["outcome"] == "succeeded"
    finally:
        api.remove_image(tag, force=True)


def test_daemon_and_image_checks(tmp_path: Path, docker_url: str, docker_image: str) -> None:
    assert docker_daemon_check(docker_url).run(10).ok
    dead = docker_daemon_check(f"unix://{tmp_path}/none.sock").run(10)
    assert not dead.ok and "does not answer" in dead.found
    assert docker_image_check(docker_image, None, docker_url).run(10).ok
    missing = docker_image_check("labrun-test/absent:404", None, docker_url).run(10)
    assert not missing.ok and "docker load" in missing.fix
    tar = tmp_path / "x.tar"
    assert not docker_image_check("labrun-test/absent:404", str(tar), docker_url).run(10).ok
    tar.write_bytes(b"x")
    assert docker_image_check("labrun-test/absent:404", str(tar), docker_url).run(10).ok
