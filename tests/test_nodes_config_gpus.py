"""[nodes.NAME] validation, GPU assignment through the inventory seam, and node-aware placement."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from labrun import gpus
from labrun.app import RunOptions, open_store, run_job
from labrun.config.lab import load_lab
from labrun.errors import ConfigError, PreflightFailed
from labrun.gpus import Gpu, assign, nvml_inventory, use_inventory
from labrun.model import Runtime
from labrun.scheduler import Demand, NodeCapacity, place
from labrun.ssh.config import SshNodeSpec
from labrun.ssh.transport import SshTarget
from labrun.states import RunState


def lab_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "labrun.toml"
    path.write_text(f'state_dir = "{tmp_path}/state"\n{text}')
    os.environ.pop("LABRUN_STATE_DIR", None)
    return str(path)


def test_ssh_nodes_are_read_with_their_defaults(tmp_path: Path) -> None:
    lab = load_lab(
        lab_file(
            tmp_path,
            '[nodes.gpu-box]\nssh = "alice@gpu-box"\ngpus = [0, 1]\ncpus = 8\nmemory = "32GiB"\n'
            'ssh_options = ["Port=2222"]\nlost_after = "90s"\n'
            '[nodes.ws2]\nssh = "ws2"\nssh_config = "cfg/ssh_config"\n',
        )
    )
    local, box, ws2 = lab.nodes
    assert isinstance(box, SshNodeSpec) and isinstance(ws2, SshNodeSpec) and local.backend == "local"
    assert (box.cpus, box.memory, box.gpus, box.lost_after) == (8.0, 32 * 1024**3, (0, 1), 90.0)
    assert box.ssh_options == ("Port=2222",) and not box.accept_new_host_keys
    assert (ws2.cpus, ws2.memory, ws2.gpus) == (None, None, None)  # "auto": from the probe
    assert ws2.ssh_config == str(tmp_path / "cfg/ssh_config") and ws2.workdir == "~/.cache/labrun"
    assert [n.name for n in lab.nodes] == ["local", "gpu-box", "ws2"]
    # runtimes are Runtime members from the registry on (a str enum: == would pass for strings)
    declared = [r for spec in lab.declared for r in spec.runtimes]
    assert declared and all(type(r) is Runtime for r in declared)
    assert box.runtimes[0] is Runtime.PROCESS and local.declared().runtimes == tuple(Runtime)


def test_bad_node_settings_are_reported_with_lines(tmp_path: Path) -> None:
    path = lab_file(
        tmp_path,
        '[nodes.a]\nssh = "a"\ncpus = -1\n'
        '[nodes.b]\nssh = "b"\ngpus = [0, 0]\nruntimes = ["podman"]\nprot = 22\n'
        "[nodes.c]\ncpus = 2\n",
    )
    with pytest.raises(ConfigError) as info:
        load_lab(path)
    text = str(info.value)
    assert f"{path}:4" in text and "positive number" in text  # cpus = -1
    assert "distinct GPU indices" in text
    assert "runtime 'podman' is not available on ssh nodes" in text
    assert "unknown key 'prot'" in text
    assert "nodes.c" in text and "user@host" in text


def test_control_socket_paths_stay_short() -> None:
    target = SshTarget("n", "n", "/" + "x" * 200)
    assert len(target.control_path) <= 84
    assert SshTarget("n", "n", "/s").control_path.startswith("/s/")


def test_two_state_directories_never_share_a_master_connection() -> None:
    """Long state paths fall back to one directory in /tmp: a node named alike in another
    state directory (another user's lab, a parallel test) must get its own socket there."""
    one = SshTarget("node-a", "node-a", "/" + "x" * 200)
    other = SshTarget("node-a", "node-a", "/" + "y" * 200)
    assert one.control_path != other.control_path
    configured = SshTarget("node-a", "node-a", "/" + "x" * 200, ssh_config="/lab2/ssh_config")
    assert configured.control_path != one.control_path


@pytest.fixture
def two_fake_gpus() -> Iterator[None]:
    previous = use_inventory(lambda: (Gpu(0, "fake A"), Gpu(1, "fake B")))
    yield
    use_inventory(previous)


def test_gpu_tasks_never_share_a_device(tmp_path: Path, two_fake_gpus: None) -> None:
    lab = load_lab(lab_file(tmp_path, '[nodes.local]\ncpus = 8\ngpus = "auto"\n'))
    assert lab.declared[0].gpus == (0, 1)
    log = tmp_path / "gpu.log"
    script = (
        f'echo "start $CUDA_VISIBLE_DEVICES $(date +%s.%N)" >> {log}; sleep 0.4; '
        f'echo "end $CUDA_VISIBLE_DEVICES $(date +%s.%N)" >> {log}'
    )
    job = tmp_path / "job.toml"
    job.write_text(
        f'[job]\nname = "gpus"\n[[tasks]]\nname = "train"\nitems = ["a", "b", "c"]\ngpus = 1\n'
        f"command = '{script}'\n"
    )
    result = run_job(str(job), lab, RunOptions(quiet=True))
    assert result.state is RunState.SUCCEEDED
    spans: dict[str, list[tuple[float, float]]] = {}
    opened: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        kind, device, when = line.split()
        if kind == "start":
            opened.setdefault(device, []).append(float(when))
        else:
            spans.setdefault(device, []).append((opened[device].pop(0), float(when)))
    assert set(spans) <= {"0", "1"} and sum(len(v) for v in spans.values()) == 3
    for device_spans in spans.values():
        device_spans.sort()
        for (_, end), (start, _) in itertools.pairwise(device_spans):
            assert start >= end, f"two attempts on one GPU at once: {device_spans}"
    store, _ = open_store(lab)
    assert len(list(store.run_attempts(result.run.id))) == 3


def test_a_task_asking_for_more_gpus_than_any_node_fails_with_the_reason(
    tmp_path: Path, two_fake_gpus: None
) -> None:
    lab = load_lab(lab_file(tmp_path, ""))
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "big"\n[[tasks]]\nname = "t"\ngpus = 3\ncommand = "true"\n')
    with pytest.raises(PreflightFailed, match="task t asks 3 GPUs; local has 2"):  # refused before it starts
        run_job(str(job), lab, RunOptions(quiet=True))
    result = run_job(str(job), lab, RunOptions(quiet=True, preflight=False))  # and if started anyway
    assert result.state is RunState.FAILED
    store, _ = open_store(lab)
    task = store.task_by_name(result.run.id, "t")
    assert task is not None and "needs 3 GPUs" in (task.reason or "")


def test_assign_gives_free_devices_lowest_first() -> None:
    assert assign(1, (0, 1), busy=[0]) == (1,)
    assert assign(2, (0, 1, 2, 3), busy=[1]) == (0, 2)
    assert assign(1, (0, 1), busy=[0, 1]) == ()


def test_the_nvml_inventory_answers_without_a_gpu() -> None:
    found = nvml_inventory()  # () here (no driver); the real devices where there is one
    assert all(isinstance(g, Gpu) for g in found)
    assert gpus.INVENTORY[0] is nvml_inventory


def node(name: str, cpus: float = 4, gpus: int = 0, used_gpus: int = 0) -> NodeCapacity:
    return NodeCapacity(name, cpus, 1 << 34, gpus=gpus, gpus_used=used_gpus)


def test_placement_honours_nodes_gpus_and_runtimes() -> None:
    nodes = [node("local"), node("gpu-box", gpus=2, used_gpus=1), node("ws")]
    plan = place(
        [
            Demand(1, 1, 1, nodes=("ws",)),
            Demand(2, 1, 1, gpus=1),
            Demand(3, 1, 1, gpus=1),  # the box's last GPU went to task 2
            Demand(4, 1, 1, runtime=Runtime.DOCKER),  # no node offers docker
        ],
        nodes,
        slots=10,
    )
    assert [(p.task_id, p.node) for p in plan.placements] == [(1, "ws"), (2, "gpu-box")]
    assert plan.never_fits == (4,)


def test_a_node_with_too_many_failures_is_avoided_unless_it_is_the_only_fit() -> None:
    nodes = [node("local", cpus=2), node("flaky", cpus=8, gpus=1)]
    plan = place([Demand(1, 1, 1), Demand(2, 1, 1, gpus=1)], nodes, slots=10, avoid=frozenset({"flaky"}))
    assert [(p.task_id, p.node) for p in plan.placements] == [(1, "local"), (2, "flaky")]


def test_the_agent_needs_only_the_standard_library() -> None:
    """Everything in the agent's zipapp: Python 3.8 syntax, imports of the stdlib or itself."""
    import ast
    import sys

    from labrun.ssh.session import _shipped

    files = _shipped()
    # what the archive holds: labrun.cgroup, labrun.attempt_facts, labrun.ssh.remote_docker, ...
    modules = {n.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for n, _ in files}
    shipped = tuple(m for m in modules if m.startswith("labrun."))
    assert {"labrun.attempt_facts", "labrun.docker_args", "labrun.cgroup"} <= set(shipped)
    for name, path in files:
        tree = ast.parse(Path(path).read_text() if path else "", feature_version=(3, 8))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        froms = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        names |= {f"{n.module}.{a.name}" for n in froms for a in n.names}
        outside = {n for n in names if n.split(".")[0] not in sys.stdlib_module_names}
        assert all(n.startswith(shipped) for n in outside), name
        # APIs newer than 3.8 that its syntax check cannot see
        newer = {"removeprefix", "removesuffix", "is_relative_to", "with_stem", "readlink"}
        used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} & newer
        assert not used, f"{name} uses {sorted(used)}, which Python 3.8 lacks"
