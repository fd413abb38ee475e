"""The Slurm backend's pure parts: the state mapping, sacct's fields, sbatch's arguments and
environment, the batch script's source, the lab keys, and queue nodes in the scheduler.
No cluster needed (tests/test_slurm_runs.py has the real one)."""

from __future__ import annotations

import ast
import json
import os
import signal
from pathlib import Path

import pytest
from test_runner import FakeExecutor, make_runner

from labrun.backends.slurm import SlurmNode
from labrun.config.lab import NodeSpec, load_lab
from labrun.errors import ConfigError
from labrun.executors.slurm_query import (
    Job,
    final_record,
    job_facts,
    parse_cpu,
    parse_exit,
    parse_size_k,
    record_facts,
)
from labrun.executors.slurm_submit import (
    SlurmOptions,
    attempt_of,
    batch_script,
    job_name,
    managed,
    sbatch_args,
    sbatch_env,
)
from labrun.model import Launch, Runtime
from labrun.outcome import Stop, classify
from labrun.scheduler import Demand, NodeCapacity, place
from labrun.states import Outcome

MiB = 1 << 20
WHERE = "node hpc"


def job(state: str, code: int | None = 0, sig: int | None = None, reason: str = "", nodes: str = "n1") -> Job:
    return Job("42", "labrun-x-r1-a1", state, reason, nodes, code, sig, 300 * MiB, 1.5)


RECORD_EXIT_0 = {"exit": 0, "signal": None, "ended": 100.0, "max_rss": 10 * MiB}


@pytest.mark.parametrize(
    ("found", "record", "sent", "outcome", "stop"),
    [
        (job("COMPLETED"), RECORD_EXIT_0, [], Outcome.SUCCEEDED, None),
        (job("FAILED", 3), {"exit": 3, "signal": None, "ended": 1.0}, [], Outcome.FAILED, None),
        (job("FAILED", None, 9), None, [], Outcome.FAILED, None),  # no record: Slurm's ExitCode
        (job("OUT_OF_MEMORY", 0, 125), {"exit": None, "signal": 9, "ended": 1.0}, [], Outcome.OOM, None),
        (job("OUT_OF_MEMORY", 0, 125), RECORD_EXIT_0, [], Outcome.OOM, None),  # only a child was killed
        (job("OUT_OF_MEMORY", 0, 125), None, [], Outcome.OOM, None),  # 0:125 is not success
        (job("TIMEOUT", 0, 15), None, [], Outcome.TIMEOUT, None),
        (job("CANCELLED", 0, 15, "by 0"), None, [15], Outcome.KILLED, Stop.CANCEL),  # labrun's scancel
        (job("CANCELLED", 0, 15, "by 1234"), None, [], Outcome.LOST, None),  # someone else's
        (job("NODE_FAIL", 0, 0), None, [], Outcome.LOST, None),
        (job("PREEMPTED", 0, 0), None, [], Outcome.LOST, None),
        (job("BOOT_FAIL", 0, 0), None, [], Outcome.LOST, None),
        (None, None, [], Outcome.LOST, None),  # in neither squeue nor sacct: never success
        (None, RECORD_EXIT_0, [], Outcome.SUCCEEDED, None),  # purged, but its record tells
    ],
    ids=[
        "completed",
        "failed-exit",
        "failed-signal-no-record",
        "oom",
        "child-oom-exit-0",
        "oom-no-record",
        "slurm-timeout",
        "cancelled-by-labrun",
        "cancelled-by-another",
        "node-fail",
        "preempted",
        "boot-fail",
        "vanished",
        "purged-with-record",
    ],
)
def test_the_state_mapping(
    found: Job | None, record: dict[str, object] | None, sent: list[int], outcome: Outcome, stop: Stop | None
) -> None:
    facts = job_facts(found, record, sent, 200.0, WHERE)
    assert classify(facts, stop, None)[0] is outcome, facts
    if outcome is Outcome.LOST and found is not None:
        assert found.state in facts.detail and WHERE in facts.detail


def test_an_oom_without_a_record_is_not_read_as_signal_125() -> None:
    facts = job_facts(job("OUT_OF_MEMORY", 0, 125), None, [], 1.0, WHERE)
    assert (facts.exit_code, facts.signal, facts.oom_kills) == (None, signal.SIGKILL, 1)


def test_peak_is_the_larger_of_maxrss_and_the_records() -> None:
    assert job_facts(job("COMPLETED"), RECORD_EXIT_0, [], 1.0, WHERE).peak_memory == 300 * MiB
    sampled_nothing = Job("1", "n", "COMPLETED", exit_code=0)
    assert job_facts(sampled_nothing, RECORD_EXIT_0, [], 1.0, WHERE).peak_memory == 10 * MiB
    assert job_facts(sampled_nothing, {"exit": 0, "ended": 1.0}, [], 1.0, WHERE).peak_memory is None


def test_sacct_fields_are_parsed() -> None:
    assert (
        parse_exit("3:0") == (3, None) and parse_exit("0:9") == (None, 9) and parse_exit("") == (None, None)
    )
    assert parse_size_k("328K") == 328 * 1024 and parse_size_k("1.5G") == 3 * (1 << 29)
    assert parse_size_k("0") is None and parse_size_k("") is None
    assert parse_cpu("00:00.052") == pytest.approx(0.052)
    assert parse_cpu("01:02:03") == 3723 and parse_cpu("1-00:00:01") == 86401


def launch(**changes: object) -> Launch:
    base: dict[str, object] = {
        "attempt_id": 7,
        "run_id": 3,
        "task_name": "t",
        "attempt": 1,
        "argv": ("python3", "train.py", "it's"),
        "env": {"SECRET": "v", "X": "1"},
        "workdir": "/shared/work",
        "stdout_path": "/shared/state/runs/3/t/1/stdout",
        "stderr_path": "/shared/state/runs/3/t/1/stderr",
        "cpus": 1.5,
        "memory": 100 * MiB + 1,
        "withheld": ("OTHER_SECRET",),
        "time_limit": 61.0,
    }
    base.update(changes)
    return Launch(**base)  # type: ignore[arg-type]


def test_sbatch_gets_the_attempts_resources_rounded_up_and_a_time_with_margin() -> None:
    options = SlurmOptions("gpu", "lab", "normal", ("--constraint=a100",))
    argv = sbatch_args(options, "labrun-x-r3-a7", launch(gpus=(0, 1)), exclude=["bad1"])
    for wanted in (
        "--job-name=labrun-x-r3-a7",
        "--mem=101M",
        "--cpus-per-task=2",
        "--gpus=2",
        "--partition=gpu",
        "--account=lab",
        "--qos=normal",
        "--time=4",  # 61 s -> 2 minutes, + 2 minutes margin
        "--exclude=bad1",
        "--no-requeue",
        "--chdir=/shared/work",
        "--output=/shared/state/runs/3/t/1/stdout",
        "--error=/shared/state/runs/3/t/1/stderr",
        "--constraint=a100",
    ):
        assert wanted in argv, (wanted, argv)
    assert not any("SECRET" in a or "train.py" in a for a in argv)  # env and command are in files
    assert not any(a.startswith("--time") for a in sbatch_args(options, "n", launch(time_limit=None)))


def test_sbatch_runs_without_the_jobs_secrets_or_slurms_input_variables() -> None:
    environ = {
        "PATH": "/bin",
        "SECRET": "v",
        "OTHER_SECRET": "w",
        "SBATCH_PARTITION": "x",
        "SLURM_JOB_ID": "9",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
    }
    assert sbatch_env(launch(), environ) == {"PATH": "/bin", "SLURM_CONF": "/etc/slurm/slurm.conf"}


def test_the_batch_script_is_python_38_with_the_attempt_in_it() -> None:
    spec = {"argv": ["echo", 'it\'s "x"'], "env_file": "/e", "record": "/r", "marker": "/m", "attempt_id": 7}
    text = batch_script(spec)
    assert text.startswith("#!/usr/bin/env python3\n")
    tree = ast.parse(text, feature_version=(3, 8))
    assigned = next(n for n in tree.body if isinstance(n, ast.AnnAssign) and ast.unparse(n.target) == "SPEC")
    assert isinstance(assigned.value, ast.Call)
    assert json.loads(ast.literal_eval(assigned.value.args[0])) == spec
    imported = [
        a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names
    ]
    assert not any(name.startswith("labrun") for name in imported), imported


def test_job_names_identify_state_run_and_attempt() -> None:
    name = job_name("abc", 3, 7)
    assert attempt_of(name, "abc") == (3, 7)
    assert attempt_of(name, "abd") is None and attempt_of(name + "x", "abc") is None


@pytest.mark.parametrize("option", ["--mem=4G", "-c4", "--time=10", "-J", "--output=x", "--wrap=true"])
def test_options_labrun_sets_itself_are_recognised(option: str) -> None:
    assert managed(option)
    assert not managed("--constraint=a100") and not managed("--exclusive")


# --- labrun.toml --------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> SlurmNode:
    path = tmp_path / "labrun.toml"
    path.write_text(text)
    os.environ.pop("LABRUN_STATE_DIR", None)
    node = load_lab(str(path)).node("hpc")
    assert isinstance(node, SlurmNode)
    return node


def errors(tmp_path: Path, text: str) -> tuple[str, str]:
    path = tmp_path / "labrun.toml"
    path.write_text(text)
    os.environ.pop("LABRUN_STATE_DIR", None)
    with pytest.raises(ConfigError) as info:
        load_lab(str(path))
    return str(path), str(info.value)


def test_a_slurm_node_is_read_with_its_keys_and_defaults(tmp_path: Path) -> None:
    node = load(tmp_path, '[nodes.hpc]\nslurm = { partition = "gpu", options = ["--constraint=a100"] }\n')
    assert node.slurm == SlurmOptions("gpu", None, None, ("--constraint=a100",))
    assert (node.max_jobs, node.poll) == (100, 30.0)
    assert node.declared().max_jobs == 100
    node = load(tmp_path, '[nodes.hpc]\nslurm = {}\nmax_jobs = 5\npoll = "2m"\n')
    assert (node.slurm, node.max_jobs, node.poll) == (SlurmOptions(), 5, 120.0)


def test_slurm_key_errors_say_file_line_and_key(tmp_path: Path) -> None:
    path, text = errors(
        tmp_path,
        '[nodes.hpc]\nslurm = { partiton = "gpu" }\nmax_jobs = 0\npoll = "0.1s"\n',
    )
    assert f"{path}:2:1: nodes.hpc.slurm: unknown key slurm.partiton; did you mean 'partition'?" in text
    assert f"{path}:3:1: nodes.hpc.max_jobs: must be at least 1" in text
    assert f"{path}:4:1: nodes.hpc.poll: must be at least 1s" in text
    path, text = errors(tmp_path, '[nodes.hpc]\nslurm = { options = ["--mem=4G"] }\n')
    assert f"{path}:2:1: nodes.hpc.slurm: slurm.options: '--mem=4G' is set by labrun" in text
    assert "remove it" in text


# --- the scheduler: a queue node ----------------------------------------------------------


def test_a_queue_node_takes_max_jobs_attempts_each_up_to_one_nodes_size() -> None:
    queue = NodeCapacity("hpc", 8, 16 << 30, max_jobs=3, jobs_used=1)
    ready = [Demand(i, 8, 16 << 30, nodes=("hpc",)) for i in range(5)]
    plan = place(ready, [queue], slots=100)
    assert [p.task_id for p in plan.placements] == [0, 1]  # 3 jobs at most, 1 already there
    assert place([Demand(9, 9, 1, nodes=("hpc",))], [queue], 100).never_fits == (9,)  # more than a node


def test_a_full_queue_takes_nothing_and_an_idle_machine_is_preferred() -> None:
    full = NodeCapacity("hpc", 8, 16 << 30, max_jobs=2, jobs_used=2)
    assert place([Demand(1, 1, 1)], [full], 10).placements == ()
    idle = NodeCapacity("local", 4, 8 << 30)
    queue = NodeCapacity("hpc", 8, 16 << 30, max_jobs=2)
    assert place([Demand(1, 1, 1)], [queue, idle], 10).placements[0].node == "local"


def test_an_exit_record_alone_ends_an_attempt_only_when_it_says_everything() -> None:
    exited = {"exit": 0, "signal": None, "ended": 5.0, "oom_kills": 0, "cgroup_peak": 7 * MiB, "cpu": 0.5}
    assert final_record(exited, [])
    facts = record_facts(exited, ("/out",))
    assert (facts.exit_code, facts.peak_memory, facts.cpu_seconds, facts.missing_outputs) == (
        0,
        7 * MiB,
        0.5,
        ("/out",),
    )
    assert classify(record_facts({**exited, "oom_kills": 1}), None, None)[0] is Outcome.OOM  # a child's OOM
    signalled = {**exited, "exit": None, "signal": 15}
    assert final_record(signalled, [15])  # labrun sent it
    assert not final_record(signalled, [])  # Slurm's time limit, or someone's scancel: Slurm says
    assert final_record({**signalled, "signal": 9, "oom_kills": 1}, [])  # the OOM killer's
    assert not final_record({**exited, "oom_kills": None}, [])  # no counter read: Slurm says
    assert not final_record(None, [])


def test_the_cgroup_peak_beats_sampled_figures() -> None:
    record = {**RECORD_EXIT_0, "cgroup_peak": 20 * MiB}
    assert job_facts(job("COMPLETED"), record, [], 1.0, WHERE).peak_memory == 20 * MiB


def test_a_runner_keeps_max_jobs_attempts_on_a_queue_node_and_gives_each_its_gpu_count(
    tmp_path: Path,
) -> None:
    """A partition whose largest node has 1 GPU and 2 cpus takes 3 one-GPU, two-cpu
    attempts at once (max_jobs = 3): sizes are per attempt, the count is max_jobs."""
    executor = FakeExecutor()
    body = '[job]\nname = "q"\n[[tasks]]\nname = "t"\nitems = [1, 2, 3, 4, 5]\n'
    body += 'cpus = 2\ngpus = 1\ncommand = "true"\n'
    runner, _ = make_runner(tmp_path, body, executor)
    queue = NodeSpec("hpc", 2.0, 8 << 30, (Runtime.PROCESS,), (0,), max_jobs=3)
    runner.nodes = [queue]
    runner.executors = {("hpc", Runtime.PROCESS): executor}
    runner.room.nodes, runner.room.executors = runner.nodes, runner.executors
    runner.tick(1.0)
    assert len(executor.launches) == 3
    assert all(launch.gpus == (0,) for launch in executor.launches.values())
    first = next(iter(executor.launches.values()))
    executor.finish(first, 0)
    runner.tick(2.0)
    assert len(executor.launches) == 3  # one ended, one more submitted


def test_a_pending_job_says_slurms_reason_or_that_the_scheduler_has_not_looked_yet() -> None:
    assert job("PENDING", None, reason="Resources").why_pending == "Resources"
    # squeue's "None" (read as ""): queued, not yet looked at; never a bare "waiting"
    assert job("PENDING", None, reason="").why_pending == "not yet looked at by Slurm's scheduler"
