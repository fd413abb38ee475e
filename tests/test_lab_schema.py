"""labrun.toml keys come from one table per backend: errors with file:line:col and
did-you-mean, and `labrun schema --lab` (a JSON Schema) from the same declarations."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import jsonschema
import pytest
from helpers import REPO, labrun

from labrun.backends.local import LocalNode
from labrun.config.lab import load_lab
from labrun.errors import ConfigError
from labrun.ssh.config import SshNodeSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def lab_errors(tmp_path: Path, text: str) -> tuple[str, str]:
    path = tmp_path / "labrun.toml"
    path.write_text(text)
    os.environ.pop("LABRUN_STATE_DIR", None)
    with pytest.raises(ConfigError) as info:
        load_lab(str(path))
    return str(path), str(info.value)


def test_a_misspelt_local_key_says_where_and_what_was_meant(tmp_path: Path) -> None:
    path, text = lab_errors(tmp_path, '[nodes.local]\ncpus = 2\n  memroy = "4GiB"\n')
    assert f"{path}:3:3: nodes.local.memroy: unknown key 'memroy' (did you mean 'memory'?)" in text


def test_a_misspelt_ssh_key_and_a_bad_value_each_point_at_their_line(tmp_path: Path) -> None:
    path, text = lab_errors(
        tmp_path,
        '[nodes.box]\nssh = "alice@box"\nlost_afer = "90s"\nworkdir = "relative/dir"\n',
    )
    assert f"{path}:3:1: nodes.box.lost_afer: unknown key 'lost_afer' (did you mean 'lost_after'?)" in text
    assert f"{path}:4:1: nodes.box.workdir: expected an absolute path on the node" in text


def test_a_table_no_backend_claims_gets_a_hint(tmp_path: Path) -> None:
    path, text = lab_errors(tmp_path, '[nodes.box]\nshh = "alice@box"\n')
    assert f"{path}:1:1: nodes.box: [nodes.box] does not say which backend runs it" in text
    assert "did you mean 'ssh'?" in text
    path, text = lab_errors(tmp_path, '[nodes.box]\nbackend = "sssh"\n')
    assert f"{path}:2:1: nodes.box.backend: unknown backend 'sssh' (did you mean 'ssh'?)" in text
    _, text = lab_errors(tmp_path, '[nodes.box]\nbackend = "pbs"\n')
    assert "unknown backend 'pbs' (the backends are: local, ssh" in text


def test_the_local_backend_owns_only_the_local_node(tmp_path: Path) -> None:
    _, text = lab_errors(tmp_path, '[nodes.other]\nbackend = "local"\ncpus = 2\n')
    assert "the local backend has only [nodes.local]" in text


def test_lab_keys_are_checked_too(tmp_path: Path) -> None:
    path, text = lab_errors(tmp_path, "node_max_failure = 3\nnode_max_failures = 0\n")
    assert (
        f"{path}:1:1: node_max_failure: unknown key 'node_max_failure' (did you mean 'node_max_failures'?)"
        in text
    )
    assert f"{path}:2:1: node_max_failures: must be at least 1" in text


def test_an_explicit_backend_key_picks_the_backend(tmp_path: Path) -> None:
    path = tmp_path / "labrun.toml"
    path.write_text('[nodes.box]\nbackend = "ssh"\nssh = "box"\ncpus = 3\n[nodes.local]\ncpus = 1\n')
    os.environ.pop("LABRUN_STATE_DIR", None)
    lab = load_lab(str(path))
    local, box = lab.nodes  # the local node first, whatever the file's order
    assert isinstance(local, LocalNode) and local.cpus == 1.0
    assert isinstance(box, SshNodeSpec) and box.cpus == 3.0 and box.runtimes == ("process",)


@pytest.fixture(scope="module")
def lab_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    done = labrun(tmp_path_factory.mktemp("schema") / "state", "schema", "--lab")
    assert done.returncode == 0, done.stderr
    schema: dict[str, object] = json.loads(done.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _example_with_nodes_uncommented() -> str:
    text = (REPO / "labrun.toml").read_text()
    head, _, commented = text.partition("# Uncomment and adapt:")
    return head + re.sub(r"(?m)^# ?", "", commented)


def test_schema_lab_accepts_the_example_lab_file(tmp_path: Path, lab_schema: dict[str, object]) -> None:
    schema = lab_schema
    jsonschema.validate(tomllib.loads((REPO / "labrun.toml").read_text()), schema)
    full = tomllib.loads(_example_with_nodes_uncommented())
    assert set(full["nodes"]) == {"local", "gpu-box", "ws2", "hpc"}
    jsonschema.validate(full, schema)
    # and labrun itself accepts what the schema accepts
    (tmp_path / "labrun.toml").write_text(_example_with_nodes_uncommented())
    assert {n.name for n in load_lab(str(tmp_path / "labrun.toml")).nodes} == {
        "local",
        "gpu-box",
        "ws2",
        "hpc",
    }


@pytest.mark.parametrize(
    "bad",
    [
        "[nodes.local]\ncpu = 4\n",
        '[nodes.local]\nmemory = "lots"\n',
        '[nodes.local]\nssh = "x"\n',
        '[nodes.box]\nssh = "box"\nruntimes = ["podman"]\n',
        '[nodes.box]\nssh = "box"\nlost_after = 5\ngpus = [0, 0]\n',
        "[nodes.box]\ncpus = 2\n",
        'state_dirr = "/tmp/x"\n',
    ],
    ids=["local-typo", "local-size", "local-ssh", "ssh-runtime", "ssh-gpus", "no-backend", "top-typo"],
)
def test_schema_lab_rejects_mistakes(bad: str, lab_schema: dict[str, object]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(tomllib.loads(bad), lab_schema)
