"""SSH nodes against real sshd servers on loopback ports (tests/sshd.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sshd import SshdLab, SshdServer

from labrun.app import RunOptions, open_store, run_job
from labrun.backends.view import node_states
from labrun.cli import main
from labrun.config.lab import LabConfig, load_lab
from labrun.executors.ssh import SshExecutor
from labrun.model import Launch
from labrun.preflight.core import run_checks
from labrun.ssh.config import SshNodeSpec
from labrun.ssh.nodes import target_of
from labrun.ssh.report import node_checks
from labrun.ssh.session import AgentSession
from labrun.ssh.transport import SshError
from labrun.states import Outcome, RunState, TaskState


def write_lab(tmp_path: Path, sshd: SshdLab, nodes: dict[str, str], local_cpus: int = 2) -> LabConfig:
    """labrun.toml with the given ssh nodes (name → extra TOML lines)."""
    text = f'state_dir = "{tmp_path}/state"\n[nodes.local]\ncpus = {local_cpus}\n'
    for name, extra in nodes.items():
        text += (
            f'[nodes.{name}]\nssh = "{name}"\nssh_config = "{sshd.ssh_config}"\n'
            f'workdir = "{tmp_path}/remote-{name}"\n{extra}\n'
        )
    path = tmp_path / "labrun.toml"
    path.write_text(text)
    os.environ.pop("LABRUN_STATE_DIR", None)
    return load_lab(str(path))


def ssh_node(lab: LabConfig) -> SshNodeSpec:
    """The lab's first ssh node."""
    return next(n for n in lab.nodes if isinstance(n, SshNodeSpec))


def write_job(tmp_path: Path, body: str) -> str:
    path = tmp_path / "job.toml"
    path.write_text(f'[job]\nname = "spread"\n[defaults]\nretry_delay = 0\n{body}')
    return str(path)


def launch(tmp_path: Path, argv: tuple[str, ...], attempt_id: int = 1) -> Launch:
    logs = tmp_path / "logs" / str(attempt_id)
    return Launch(
        attempt_id=attempt_id,
        run_id=1,
        task_name="t",
        attempt=1,
        argv=argv,
        env={"GREETING": "hello"},
        workdir=str(tmp_path),
        stdout_path=str(logs / "stdout"),
        stderr_path=str(logs / "stderr"),
        cpus=1,
        memory=1 << 20,
    )


def node_executor(tmp_path: Path, sshd: SshdLab, lost_after: float) -> tuple[SshdServer, SshExecutor]:
    """node-a started, and an executor connected to it that polls every 0.1 s."""
    server = sshd.start("node-a")
    lab = write_lab(tmp_path, sshd, {"node-a": ""})
    session = AgentSession(target_of(lab, ssh_node(lab)), ssh_node(lab).workdir)
    session.connect()
    return server, SshExecutor(session, lost_after=lost_after, poll_interval=0.1)


def wait_for(executor: SshExecutor, count: int, limit: float = 30.0) -> dict[int, object]:
    found: dict[int, object] = {}
    deadline = time.monotonic() + limit
    while len(found) < count and time.monotonic() < deadline:
        found.update(executor.finished())
        time.sleep(0.05)
    return found


def test_an_attempt_runs_on_the_node_and_its_logs_come_back(tmp_path: Path, sshd_lab: SshdLab) -> None:
    sshd_lab.start("node-a")
    lab = write_lab(tmp_path, sshd_lab, {"node-a": ""})
    session = AgentSession(target_of(lab, ssh_node(lab)), ssh_node(lab).workdir)
    probe = session.connect()
    assert probe["cpus"] >= 1 and probe["python"].startswith("3.")
    executor = SshExecutor(session, poll_interval=0.1)
    try:
        script = 'echo "$GREETING out"; echo err >&2; exit 3'
        executor.start(launch(tmp_path, ("sh", "-c", script), 1))
        executor.start(launch(tmp_path, ("no-such-program-xyz",), 2))
        facts = wait_for(executor, 2)
    finally:
        executor.close()
    assert facts[1].exit_code == 3  # type: ignore[attr-defined]
    assert (tmp_path / "logs/1/stdout").read_text() == "hello out\n"
    assert (tmp_path / "logs/1/stderr").read_text() == "err\n"
    assert "command not found" in facts[2].start_error  # type: ignore[attr-defined]
    # the agent is cached on the node by content hash
    assert any(p.name.startswith("agent-") for p in (tmp_path / "remote-node-a").iterdir())


def test_logs_arrive_live_and_a_dropped_connection_does_not_kill_the_attempt(
    tmp_path: Path, sshd_lab: SshdLab
) -> None:
    sshd_lab.start("node-a")
    lab = write_lab(tmp_path, sshd_lab, {"node-a": ""})
    session = AgentSession(target_of(lab, ssh_node(lab)), ssh_node(lab).workdir)
    session.connect()
    executor = SshExecutor(session, poll_interval=0.1)
    out = tmp_path / "logs/1/stdout"
    try:
        executor.start(launch(tmp_path, ("sh", "-c", "echo first; sleep 1.5; echo second"), 1))
        deadline = time.monotonic() + 20
        while "first" not in (out.read_text() if out.exists() else "") and time.monotonic() < deadline:
            assert not executor.finished()
            time.sleep(0.05)
        assert out.read_text() == "first\n"  # live, while the attempt still runs
        assert session.proc is not None
        session.proc.kill()  # the connection drops; the attempt runs on, detached
        facts = wait_for(executor, 1)
    finally:
        executor.close()
    assert facts[1].exit_code == 0  # type: ignore[attr-defined]
    assert out.read_text() == "first\nsecond\n"


def test_a_job_spreads_over_two_ssh_nodes_and_local(tmp_path: Path, sshd_lab: SshdLab) -> None:
    sshd_lab.start("node-a")
    sshd_lab.start("node-b")
    lab = write_lab(tmp_path, sshd_lab, {"node-a": "cpus = 2", "node-b": "cpus = 2"})
    job = write_job(
        tmp_path,
        '[[tasks]]\nname = "w"\nitems = { range = [0, 12] }\ncommand = "sleep 0.3; echo done {item}"\n',
    )
    result = run_job(job, lab, RunOptions(quiet=True))
    assert result.state is RunState.SUCCEEDED, result.counts
    store, paths = open_store(lab)
    attempts = list(store.run_attempts(result.run.id))
    assert {a.node for a in attempts} == {"local", "node-a", "node-b"}
    assert all(a.outcome is Outcome.SUCCEEDED for a in attempts)
    task = store.task_by_name(result.run.id, "w[7]")
    assert task is not None
    node = next(a.node for a in attempts if a.task_id == task.id)
    assert Path(paths.log(result.run.id, "w[7]", 1, "stdout")).read_text() == "done 7\n", node


def test_a_node_that_goes_away_loses_its_attempts_and_they_finish_elsewhere(
    tmp_path: Path, sshd_lab: SshdLab
) -> None:
    sshd_lab.start("node-a")
    server_b = sshd_lab.start("node-b")
    lab = write_lab(
        tmp_path, sshd_lab, {"node-a": "cpus = 2", "node-b": 'cpus = 2\nlost_after = "2s"'}, local_cpus=2
    )
    job = write_job(
        tmp_path,
        '[[tasks]]\nname = "w"\nitems = { range = [0, 12] }\ncommand = "sleep 2; echo ok"\nretries = 0\n',
    )
    open_store(lab)  # create the database here: two first openers would both migrate it

    def stop_when_b_runs() -> None:
        watcher, _ = open_store(lab)  # its own connection: SQLite objects stay in their thread
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            run = watcher.latest_run()
            if run is not None and any(a.node == "node-b" and a.ref for a in watcher.open_attempts(run.id)):
                server_b.stop()  # the listener and all its sessions
                return
            time.sleep(0.05)

    stopper = threading.Thread(target=stop_when_b_runs)
    stopper.start()
    result = run_job(job, lab, RunOptions(quiet=True))
    stopper.join()
    store, _ = open_store(lab)
    assert result.state is RunState.SUCCEEDED, result.counts
    attempts = list(store.run_attempts(result.run.id))
    lost = [a for a in attempts if a.outcome is Outcome.LOST]
    assert lost and all(a.node == "node-b" for a in lost)
    assert "node node-b did not answer" in (lost[0].detail or "")
    for task in store.tasks(result.run.id):
        assert task.state is TaskState.SUCCEEDED and task.failures == 0
        assert store.attempts(task.id)[-1].node != "node-b" or task.attempts == 1


def test_an_unknown_host_key_is_refused_with_a_clear_message(tmp_path: Path, sshd_lab: SshdLab) -> None:
    sshd_lab.start("stranger", trust=False)
    lab = write_lab(tmp_path, sshd_lab, {"stranger": ""})
    session = AgentSession(target_of(lab, ssh_node(lab)), ssh_node(lab).workdir)
    with pytest.raises(SshError) as info:
        session.connect()
    message = str(info.value)
    assert "node stranger" in message and "host key" in message and "not known" in message
    assert "accept_new_host_keys = true" in message
    # opting in for that node trusts the first key, and records it
    lab = write_lab(tmp_path, sshd_lab, {"stranger": "accept_new_host_keys = true"})
    session = AgentSession(target_of(lab, ssh_node(lab)), ssh_node(lab).workdir)
    assert session.connect()["cpus"] >= 1
    session.close()
    assert "127.0.0.1" in Path(sshd_lab.known_hosts).read_text()


def test_an_unreachable_node_fails_its_check_naming_it(tmp_path: Path, sshd_lab: SshdLab) -> None:
    sshd_lab.start("node-a")
    gone = sshd_lab.start("node-gone")
    gone.stop()
    lab = write_lab(tmp_path, sshd_lab, {"node-a": "", "node-gone": ""})
    results = {
        r.name: r
        for r in run_checks(
            node_checks(lab, [n for n in lab.nodes if isinstance(n, SshNodeSpec)]), timeout=30
        )
    }
    assert results["node node-a reachable"].ok
    assert results["node node-a python"].ok
    assert results["node node-a free disk"].ok
    bad = results["node node-gone reachable"]
    assert not bad.ok and "node-gone" in bad.found and "Connection refused" in bad.found
    assert f"ssh -F {sshd_lab.ssh_config} node-gone true" in bad.fix  # the command labrun uses
    rows = {row["name"]: row for row in node_states(lab, None)}
    assert rows["node-a"]["state"] == "online" and rows["node-gone"]["state"] == "offline"


def test_labrun_nodes_lists_each_node(
    tmp_path: Path, sshd_lab: SshdLab, capsys: pytest.CaptureFixture[str]
) -> None:
    sshd_lab.start("node-a")
    write_lab(tmp_path, sshd_lab, {"node-a": 'cpus = 3\ngpus = []\nssh_options = ["ServerAliveInterval=7"]'})
    with pytest.raises(SystemExit) as code:
        main(["nodes", "--json", "--config", str(tmp_path / "labrun.toml")])
    assert code.value.code == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"local", "node-a"}
    assert rows["node-a"]["state"] == "online" and rows["node-a"]["cpus"] == 3.0
    assert rows["node-a"]["runtimes"] == ["process"] and rows["node-a"]["running"] == []
    with pytest.raises(SystemExit):
        main(["nodes", "--config", str(tmp_path / "labrun.toml")])
    assert "node-a" in capsys.readouterr().out


def test_a_node_that_returns_is_used_again_and_its_given_up_attempts_are_killed(
    tmp_path: Path, sshd_lab: SshdLab
) -> None:
    server, executor = node_executor(tmp_path, sshd_lab, lost_after=1.0)
    try:
        executor.start(launch(tmp_path, ("sleep", "60"), 1))
        assert not wait_for(executor, 1, limit=1.0)
        server.stop()
        facts = wait_for(executor, 1, limit=20)
        assert facts[1].lost and "node-a did not answer" in facts[1].detail  # type: ignore[attr-defined]
        assert not executor.online
        server.start()  # the node is back: reconnected and probed on the next poll
        deadline = time.monotonic() + 20
        while not executor.online and time.monotonic() < deadline:
            executor.finished()
            time.sleep(0.1)
        assert executor.online and not executor.orphans
        status = tmp_path / "remote-node-a/attempts/r1-a1/status.json"
        deadline = time.monotonic() + 10
        while '"signal": 9' not in status.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert '"signal": 9' in status.read_text()  # re-run elsewhere, so ended here
    finally:
        executor.close()


def test_two_state_directories_sharing_a_node_workdir_keep_their_attempts_apart(
    tmp_path: Path, sshd_lab: SshdLab
) -> None:
    """Both have a run 1 with an attempt 1 on the same node and workdir (two projects of one
    user): each records its own attempt's end and logs, never the other's."""
    sshd_lab.start("node-a")
    procs = {}
    for name, command in (("a", "echo from-a; sleep 3"), ("b", "echo from-b; exit 3")):
        home = tmp_path / name
        home.mkdir()
        (home / "labrun.toml").write_text(
            f'state_dir = "{home}/state"\n[nodes.local]\ncpus = 1\n'
            f'[nodes.node-a]\nssh = "node-a"\nssh_config = "{sshd_lab.ssh_config}"\n'
            f'workdir = "{tmp_path}/shared-remote"\n'
        )
        (home / "job.toml").write_text(
            f'[job]\nname = "j{name}"\n[[tasks]]\nname = "t"\nnodes = ["node-a"]\ncommand = "{command}"\n'
            "retries = 0\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "LABRUN_STATE_DIR"}
        argv = [sys.executable, "-m", "labrun", "run", "job.toml", "--config", "labrun.toml", "--plain"]
        procs[name] = subprocess.Popen(
            argv, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        if name == "a":  # b starts while a's attempt runs on the node
            deadline = time.monotonic() + 60
            while not list((tmp_path / "shared-remote" / "attempts").glob("*")):
                assert time.monotonic() < deadline and procs["a"].poll() is None, procs["a"].communicate()
                time.sleep(0.05)
    out_b = procs["b"].communicate(timeout=120)[0]
    out_a = procs["a"].communicate(timeout=120)[0]
    assert procs["a"].returncode == 0, out_a
    assert procs["b"].returncode == 1, out_b
    for name, text in (("a", "from-a\n"), ("b", "from-b\n")):
        (log,) = (tmp_path / name / "state" / "runs" / "1").glob("t.1.stdout")
        assert log.read_text() == text
    assert len(list((tmp_path / "shared-remote" / "attempts").glob("*r1-a1"))) == 2
