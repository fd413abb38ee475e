"""Jobs on the test Slurm cluster (tests/slurm.py), driven through the real CLI.

Each test writes a labrun.toml with one Slurm node, `hpc`, on the cluster's partition,
and runs `labrun` as a user would; Slurm's own commands (squeue, sacct, scontrol) are the
witnesses of what reached the cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helpers
import pytest
from slurm import Cluster

MiB = 1 << 20
SECRET = "s3cret-value-4711"


@pytest.fixture
def cluster(slurm_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    monkeypatch.setenv("SLURM_CONF", slurm_cluster.conf)  # labrun's subprocesses find the cluster
    return slurm_cluster


@pytest.fixture
def lab(tmp_path: Path, cluster: Cluster) -> Iterator[Path]:
    (tmp_path / "labrun.toml").write_text(
        f'[nodes.hpc]\nslurm = {{ partition = "{cluster.partition}" }}\npoll = "1s"\n'
    )
    yield tmp_path
    if (tmp_path / "state" / "state-id").exists():  # what a failed test left queued or running
        left = [j[0] for j in our_jobs(cluster, tmp_path, active_only=True)]
        if left:
            cluster.command("scancel", *left, check=False)


def labrun(lab: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return helpers.labrun(lab / "state", *args, cwd=lab, timeout=timeout)


def start(lab: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "labrun", *args],
        cwd=lab,
        env=helpers.cli_env(lab / "state"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def job(lab: Path, tasks: str, defaults: str = "") -> str:
    head = f'[job]\nname = "j"\n[defaults]\nretry_delay = 0\nmemory = "64MiB"\n{defaults}\n'
    helpers.write_job(lab, head + tasks)
    return "job.toml"


def attempts(lab: Path) -> dict[str, list[dict[str, Any]]]:
    done = labrun(lab, "status", "last", "--json")
    assert done.returncode == 0, done.stderr
    return {t["id"]: t["attempts"] for t in json.loads(done.stdout)["tasks"]}


def prefix(lab: Path) -> str:
    return "labrun-" + (lab / "state" / "state-id").read_text().strip() + "-"


def our_jobs(cluster: Cluster, lab: Path, active_only: bool = False) -> list[tuple[str, str, str]]:
    """(job id, name, state) of this test's jobs that squeue still shows."""
    out = cluster.command("squeue", "-h", "-t", "all", "-o", "%i|%j|%T")
    jobs = [tuple(line.split("|")) for line in out.splitlines()]
    mine = [(j[0], j[1], j[2]) for j in jobs if len(j) == 3 and j[1].startswith(prefix(lab))]
    ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")
    return [j for j in mine if not active_only or j[2] not in ended]


def pending_reasons(cluster: Cluster, lab: Path) -> list[str]:
    """Slurm's reasons for this test's pending jobs. A job just submitted reads "None" until
    the scheduler's next pass has looked at it (seen in CI between sbatch and that pass)."""
    out = cluster.command("squeue", "-h", "-t", "PENDING", "-o", "%j|%r")
    return [r for n, _, r in (line.partition("|") for line in out.splitlines()) if n.startswith(prefix(lab))]


def accounted(cluster: Cluster, lab: Path) -> list[str]:
    """Job ids sacct knows of this test's jobs (one per sbatch)."""
    out = cluster.command("sacct", "-n", "-X", "-P", "-S", "now-1hours", "-o", "JobIDRaw,JobName")
    return [line.split("|")[0] for line in out.splitlines() if line.split("|")[-1].startswith(prefix(lab))]


def wait_for(condition: Callable[[], bool], what: str, limit: float = 90.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit:g}s: {what}")
        time.sleep(0.2)


def running_jobs(cluster: Cluster, lab: Path, count: int) -> Callable[[], bool]:
    def check() -> bool:
        if not (lab / "state" / "state-id").exists():
            return False
        return sum(1 for j in our_jobs(cluster, lab) if j[2] == "RUNNING") >= count

    return check


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# --- end to end --------------------------------------------------------------------------


def test_tasks_run_as_slurm_jobs_beside_local_ones_and_secrets_stay_off_slurm(
    lab: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABRUN_TEST_SECRET", SECRET)
    name = job(
        lab,
        """
[[tasks]]
name = "prep"
command = "echo prepared > prep.txt"
outputs = ["prep.txt"]
[[tasks]]
name = "work"
nodes = ["hpc"]
items = [1, 2]
depends_on = ["prep"]
secret_env = ["LABRUN_TEST_SECRET"]
outputs = ["out-{item}.txt"]
command = "echo item {item} $LABRUN_TEST_SECRET $(cat prep.txt) > out-{item}.txt"
""",
    )
    done = labrun(lab, "run", name)
    assert done.returncode == 0, done.stdout + done.stderr
    found = attempts(lab)
    assert [(a["node"], a["mechanism"]) for a in found["prep"]] == [("local", "process")]
    for item in (1, 2):
        assert (lab / f"out-{item}.txt").read_text() == f"item {item} {SECRET} prepared\n"
        assert [(a["node"], a["mechanism"], a["outcome"]) for a in found[f"work[{item - 1}]"]] == [
            ("hpc", "slurm", "succeeded")
        ]
    wait_for(lambda: len(accounted(cluster, lab)) >= 2, "both jobs in Slurm's accounting", 30)
    ids = accounted(cluster, lab)
    assert len(ids) == 2, ids  # one sbatch per attempt
    for job_id in ids:  # the secret reached the task through its 0600 file, never Slurm's records
        script = cluster.command("scontrol", "write", "batch_script", job_id, "-")
        submitted = cluster.command("sacct", "-n", "-P", "-j", job_id, "-o", "SubmitLine,WorkDir")
        assert "labrun: attempt" in script and SECRET not in script + submitted
    assert not list((lab / "state").rglob("slurm-env.json")), "the env files are removed once read"


def test_oom_under_mem_grows_and_a_child_oom_with_exit_0_is_oom(lab: Path, cluster: Cluster) -> None:
    name = job(
        lab,
        """
[[tasks]]
name = "hog"
nodes = ["hpc"]
memory = "50MiB"
memory_growth = 4
command = "head -c 100000000 /dev/zero | dd of=/dev/null bs=100M count=1 iflag=fullblock"
[[tasks]]
name = "child"
nodes = ["hpc"]
memory = "50MiB"
on_oom = "fail"
command = "sh -c 'head -c 100000000 /dev/zero | dd of=/dev/null bs=100M count=1 iflag=fullblock'; exit 0"
""",
    )
    done = labrun(lab, "run", name)
    assert done.returncode == 1, done.stdout + done.stderr  # the child task fails
    found = attempts(lab)
    hog = found["hog"]
    assert [a["outcome"] for a in hog] == ["oom", "succeeded"], hog
    assert hog[1]["memory_limit"] > hog[0]["memory_limit"] >= 50 * MiB
    child = found["child"]
    assert [(a["outcome"], a["exit_code"]) for a in child] == [("oom", 0)], child


def test_timeout_exit_codes_and_signals(lab: Path, cluster: Cluster) -> None:
    name = job(
        lab,
        """
[[tasks]]
name = "slow"
nodes = ["hpc"]
timeout = "2s"
grace = "2s"
command = "sleep 300"
[[tasks]]
name = "three"
nodes = ["hpc"]
command = "echo oops >&2; exit 3"
[[tasks]]
name = "killed"
nodes = ["hpc"]
command = "kill -KILL $$"
""",
        defaults="retries = 0",
    )
    done = labrun(lab, "run", name)
    assert done.returncode == 1, done.stdout + done.stderr
    found = attempts(lab)
    outcome = {task: [(a["outcome"], a["exit_code"], a["signal"]) for a in found[task]] for task in found}
    assert outcome["slow"] == [("timeout", None, "SIGTERM")], outcome
    assert outcome["three"] == [("failed", 3, None)], outcome
    assert outcome["killed"] == [("failed", None, "SIGKILL")], outcome
    assert our_jobs(cluster, lab, active_only=True) == []
    why = labrun(lab, "why", "last", "three")
    assert "oops" in why.stdout, why.stdout


# --- a runner that dies, cancel, a node that fails ------------------------------------------


def test_sigkill_of_the_runner_then_resume_adopts_without_submitting_again(
    lab: Path, cluster: Cluster
) -> None:
    name = job(
        lab,
        """
[[tasks]]
name = "long"
nodes = ["hpc"]
command = "echo started; while [ ! -e go ]; do sleep 0.2; done; echo finished"
[[tasks]]
name = "quick"
nodes = ["hpc"]
command = "while [ ! -e go-quick ]; do sleep 0.2; done; exit 0"
""",
    )
    runner = start(lab, "run", name)
    try:
        wait_for(running_jobs(cluster, lab, 2), "both jobs running")
    finally:
        runner.kill()
        runner.wait()
    (lab / "go-quick").write_text("go")  # ends while no runner lives
    wait_for(lambda: any(j[2] == "COMPLETED" for j in our_jobs(cluster, lab)), "quick's job completed")
    said = lab / "resume.out"
    with open(said, "w") as err_file:
        resumed = subprocess.Popen(
            [sys.executable, "-m", "labrun", "run", "--resume", name],
            cwd=lab,
            env=helpers.cli_env(lab / "state"),
            stdout=err_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_for(lambda: "adopted" in said.read_text() or resumed.poll() is not None, "the resume began")
        assert "2 running attempt(s) adopted" in said.read_text(), said.read_text()
        assert any(j[2] == "RUNNING" for j in our_jobs(cluster, lab)), "long's job runs while adopted"
        (lab / "go").write_text("go")
        code = resumed.wait(timeout=120)
    finally:
        if resumed.poll() is None:
            resumed.kill()
    assert code == 0, said.read_text()
    found = attempts(lab)
    assert [a["outcome"] for a in found["long"]] == ["succeeded"], found
    assert [a["outcome"] for a in found["quick"]] == ["succeeded"], found
    wait_for(lambda: len(accounted(cluster, lab)) >= 2, "both jobs in Slurm's accounting", 30)
    assert len(accounted(cluster, lab)) == 2  # adopted, not submitted again
    stdout = next((lab / "state").rglob("long.1.stdout")).read_text()
    assert stdout == "started\nfinished\n"


@pytest.mark.parametrize("how", ["cancel", "ctrl-c", "cancel-after-sigkill"])
def test_cancel_and_ctrl_c_leave_nothing_in_squeue(
    lab: Path, cluster: Cluster, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cancel-after-sigkill`: the runner is gone; `labrun cancel` finds its jobs by name.
    `queued` cannot start beside the others: cancelled while it waits in the queue."""
    name = job(
        lab,
        f"""
[[tasks]]
name = "sleepy"
nodes = ["hpc"]
items = [1, 2]
grace = "2s"
command = "sleep 300"
[[tasks]]
name = "queued"
nodes = ["hpc"]
memory = "{cluster.memory_mb}MiB"
secret_env = ["LABRUN_TEST_SECRET"]
command = "true"
""",
    )
    monkeypatch.setenv("LABRUN_TEST_SECRET", SECRET)
    runner = start(lab, "run", name)
    try:
        wait_for(running_jobs(cluster, lab, 2), "both jobs running")
        wait_for(lambda: any(j[2] == "PENDING" for j in our_jobs(cluster, lab)), "the big job queued")
        if how == "cancel-after-sigkill":
            runner.kill()
            runner.wait()
        if how.startswith("cancel"):
            done = labrun(lab, "cancel", "last")
            assert done.returncode == 0, done.stdout + done.stderr
        else:
            runner.send_signal(signal.SIGINT)
        code, out, err = finish(runner)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert code == (-signal.SIGKILL if how == "cancel-after-sigkill" else 130), out + err
    wait_for(lambda: our_jobs(cluster, lab, active_only=True) == [], "no job of the run in squeue", 30)
    assert [a["outcome"] for a in attempts(lab)["sleepy[0]"]] == ["killed"]
    if how != "cancel-after-sigkill":  # the runner saw the ends: no secrets file is left
        assert not list((lab / "state").rglob("slurm-env.json"))
    assert [a["outcome"] for a in attempts(lab)["queued"]] == ["killed"]


@pytest.fixture
def node_back_up(cluster: Cluster) -> Iterator[None]:
    yield
    cluster.command("scontrol", "update", f"nodename={cluster.node}", "state=resume", check=False)


def test_a_node_set_down_during_a_run_gives_lost_and_a_rerun(
    lab: Path, cluster: Cluster, node_back_up: None
) -> None:
    name = job(
        lab,
        """
[[tasks]]
name = "victim"
nodes = ["hpc"]
command = "while [ ! -e go ]; do sleep 0.2; done"
""",
    )
    runner = start(lab, "run", name)
    try:
        wait_for(running_jobs(cluster, lab, 1), "the job running")
        cluster.command("scontrol", "update", f"nodename={cluster.node}", "state=down", "reason=labrun-test")
        wait_for(lambda: [a["outcome"] for a in attempts(lab)["victim"]][:1] == ["lost"], "attempt 1 lost")
        # back in service (ReturnToService may have done it already: then this is refused)
        cluster.command("scontrol", "update", f"nodename={cluster.node}", "state=resume", check=False)
        (lab / "go").write_text("go")
        code, out, err = finish(runner)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert code == 0, out + err
    found = attempts(lab)["victim"]
    assert [a["outcome"] for a in found] == ["lost", "succeeded"], found
    assert "NODE_FAIL" in found[0]["detail"] or "CANCELLED" in found[0]["detail"], found[0]


def test_check_refuses_a_task_no_node_of_the_partition_can_hold(lab: Path, cluster: Cluster) -> None:
    name = job(
        lab,
        """
[[tasks]]
name = "huge"
nodes = ["hpc"]
memory = "64GiB"
command = "true"
[[tasks]]
name = "small"
nodes = ["hpc"]
command = "true"
""",
    )
    done = labrun(lab, "check", name)
    assert done.returncode == 3, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if "task huge" in line)
    assert "cannot run on node hpc" in line and cluster.node in line, line
    assert "Requested node configuration is not available" in line or "Memory" in line, line
    assert any("task small fits" in line and "✓" in line for line in done.stdout.splitlines()), done.stdout
    # Slurm isolates these tasks (--mem is enforced there): no word about this machine's runtimes
    assert "runtime process" not in done.stdout, done.stdout
    assert not os.path.exists(lab / "state" / "labrun.db") or labrun(lab, "status", "last").returncode != 0


# --- what waits in the queue; what dead runners left ----------------------------------------


def test_a_job_waiting_in_slurms_queue_says_why_in_status_nodes_and_why(lab: Path, cluster: Cluster) -> None:
    big = cluster.memory_mb * 2 // 3  # two of them do not fit the node at once
    name = job(
        lab,
        f"""
[[tasks]]
name = "first"
nodes = ["hpc"]
memory = "{big}MiB"
command = "while [ ! -e go ]; do sleep 0.2; done"
[[tasks]]
name = "second"
nodes = ["hpc"]
memory = "{big}MiB"
command = "true"
""",
    )
    runner = start(lab, "run", name)
    try:
        wait_for(running_jobs(cluster, lab, 1), "the first job running")
        wait_for(
            lambda: pending_reasons(cluster, lab) == ["Resources"], "the second job queued for Resources"
        )
        status = labrun(lab, "status", "last").stdout
        assert "second #1 on hpc: queued in Slurm as job" in status and "Resources" in status, status
        why = labrun(lab, "why", "last", "second").stdout
        assert "attempt 1: queued in Slurm" in why and "Resources" in why, why
        nodes = labrun(lab, "nodes").stdout
        assert "queued: 1 (Resources)" in nodes, nodes
        (lab / "go").write_text("go")
        code, out, err = finish(runner)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert code == 0, out + err


def test_gc_cancels_jobs_of_this_state_directory_that_no_open_attempt_owns(
    lab: Path, cluster: Cluster
) -> None:
    name = job(lab, '[[tasks]]\nname = "one"\nnodes = ["hpc"]\ncommand = "true"\n')
    assert labrun(lab, "run", name).returncode == 0
    script = lab / "orphan.sh"
    script.write_text("#!/bin/sh\nsleep 300\n")
    orphan = cluster.command(
        "sbatch",
        "--parsable",
        "--mem=32M",
        f"--job-name={prefix(lab)}r1-a999",
        "-o",
        "/dev/null",
        str(script),
    ).strip()
    other = cluster.command(  # another state directory's: never touched
        "sbatch",
        "--parsable",
        "--mem=32M",
        "--job-name=labrun-0123456789abcdef-r1-a999",
        "-o",
        "/dev/null",
        str(script),
    ).strip()
    try:
        done = labrun(lab, "gc")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"removed Slurm job {orphan} ({prefix(lab)}r1-a999) of attempt 999" in done.stdout, done.stdout
        wait_for(lambda: our_jobs(cluster, lab, active_only=True) == [], "the orphan cancelled", 30)
        state = cluster.command("squeue", "-h", "-j", other, "-o", "%T").strip()
        assert state in ("PENDING", "RUNNING"), state
    finally:
        cluster.command("scancel", orphan, other, check=False)
