"""The executor contract: what every executor must do, run against each (contract_backends.py).

Real components only: processes, cgroup v1 files, the test dockerd, an sshd on loopback
whose "node" is this machine. A backend that fails a case for a reason tracked elsewhere
lists it in its `known_failures` (a strict xfail: it turns red the moment it is fixed).

The backends (contract_backends.BACKENDS): process, cgroup, docker, ssh with each of the
node's runtimes (process, cgroup, docker), and slurm (the test cluster, tests/slurm.py).
A new backend adds one entry there and must pass every case here, or say in
`known_failures` why not.

The stop policy is the runner's (`Runner._enforce_stops`): SIGTERM, then SIGKILL once the
task's grace has passed; `stop` below does the same against one executor.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from contract_backends import (
    SH,
    Backend,
    backend,
    collect,
    forget_launches,
    kill_leftover_processes,
    make_launch,
    processes_of,
    quiet_for,
    ssh_docker_node,
    ssh_node,
    wait_end,
    wait_ends,
    wait_until,
    waker,
)

from labrun.executors.base import Executor, Waker
from labrun.model import Facts, Launch, LaunchError, Started
from labrun.outcome import Stop, classify
from labrun.states import Outcome

__all__ = ["backend", "ssh_docker_node", "ssh_node", "waker"]  # fixtures, shared from contract_backends

MiB = 1024 * 1024
GRACE = 1.0  # seconds between SIGTERM and SIGKILL in `stop`, as a task's `grace`


@pytest.fixture
def executor(backend: Backend, waker: Waker) -> Iterator[Executor]:
    forget_launches()
    ex = backend.new_executor(waker)
    try:
        yield ex
        for attempt_id in ex.running():  # what a failed test left running
            ex.signal(attempt_id, signal.SIGKILL)
        wait_ends(ex, waker, set(ex.running()), limit=30)
    finally:
        ex.close()
        kill_leftover_processes()


def run(executor: Executor, waker: Waker, launch: Launch) -> Facts:
    executor.start(launch)
    return wait_end(executor, waker, launch)


def script(text: str, *args: str) -> tuple[str, ...]:
    return (SH, "-c", text, "sh", *args)


def wait_for_file(path: Path) -> None:
    wait_until(lambda: path.exists() and path.stat().st_size > 0, f"{path} written by the attempt")


def stop(executor: Executor, waker: Waker, launch: Launch, grace: float = GRACE) -> tuple[Facts, bool]:
    """The runner's stop: SIGTERM, SIGKILL after `grace`; (facts, whether SIGKILL was needed)."""
    executor.signal(launch.attempt_id, signal.SIGTERM)
    ended = collect(executor, waker, {launch.attempt_id}, grace)
    if launch.attempt_id in ended:
        return ended[launch.attempt_id], False
    executor.signal(launch.attempt_id, signal.SIGKILL)
    return wait_end(executor, waker, launch, limit=30), True


def killed_by(facts: Facts, signum: int) -> bool:
    """Ended by `signum`; a container also reports its init's exit code, 128 + the signal."""
    return facts.signal == signum and facts.exit_code in (None, 128 + signum) and not facts.lost


def assert_nothing_left(backend: Backend, launch: Launch, started: Started, closed: bool = False) -> None:
    wait_until(lambda: not processes_of(launch), f"no process of attempt {launch.attempt_id} left", 5)
    assert backend.leftovers(started, closed) == []


# --- start and finished --------------------------------------------------------------------


def test_exit_codes_are_reported(executor: Executor, waker: Waker, backend: Backend, tmp_path: Path) -> None:
    zero = make_launch(backend, tmp_path, script("exit 0"))
    three = make_launch(backend, tmp_path, script("exit 3"))
    for launch in (zero, three):
        executor.start(launch)
    facts = wait_ends(executor, waker, {zero.attempt_id, three.attempt_id})
    assert (facts[zero.attempt_id].exit_code, facts[zero.attempt_id].signal) == (0, None)
    assert (facts[three.attempt_id].exit_code, facts[three.attempt_id].signal) == (3, None)
    assert not any(f.lost or f.start_error for f in facts.values())
    assert executor.running() == []


def test_a_signal_labrun_did_not_send_is_a_signal_not_an_exit_code(
    executor: Executor, waker: Waker, backend: Backend, tmp_path: Path
) -> None:
    facts = run(executor, waker, make_launch(backend, tmp_path, script("kill -KILL $$")))
    assert (facts.exit_code, facts.signal) == (None, signal.SIGKILL)
    assert classify(facts, None, None)[0] is Outcome.FAILED


def test_logs_env_workdir_and_argv_reach_the_command(
    executor: Executor, waker: Waker, backend: Backend, tmp_path: Path
) -> None:
    body = 'for a in "$@"; do echo "[$a]"; done; echo "$GREETING"; pwd; echo to-stderr >&2'
    args = ("two  words", 'it\'s "quoted" $HOME `x`', "")
    launch = make_launch(backend, tmp_path, script(body, *args), env={"GREETING": "hello there"})
    assert run(executor, waker, launch).exit_code == 0
    expected = "".join(f"[{a}]\n" for a in args) + f"hello there\n{tmp_path}\n"
    assert Path(launch.stdout_path).read_text() == expected
    assert Path(launch.stderr_path).read_text() == "to-stderr\n"


def test_the_command_starts_with_no_signal_ignored_that_a_shell_pipeline_needs(
    executor: Executor, waker: Waker, backend: Backend, tmp_path: Path
) -> None:
    """Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across exec:
    inherited, `zcat big.gz | head` in a task ends in "Broken pipe" errors (a failure under
    `set -o pipefail`) instead of a quiet SIGPIPE."""
    body = 'while read -r k v; do [ "$k" = SigIgn: ] && echo "$v"; done < /proc/self/status; exit 0'
    launch = make_launch(backend, tmp_path, script(body))
    assert run(executor, waker, launch).exit_code == 0
    ignored = int(Path(launch.stdout_path).read_text().strip(), 16)
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (signum - 1)), f"{signum.name} is ignored in the attempt"


# --- signals and stops ------------------------------------------------------------------


def test_sigterm_reaches_the_main_process_and_its_child(
    executor: Executor, waker: Waker, backend: Backend, tmp_path: Path
) -> None:
    child = 'trap "echo child > child-term; exit 0" TERM; echo up > child-up; sleep 300 & wait'
    body = (
        f"sh -c '{child}' & "
        'trap "echo parent > parent-term; wait; exit 7" TERM; '
        "while [ ! -s child-up ]; do sleep 1; done; echo up > ready; wait"
    )
    launch = make_launch(backend, tmp_path, script(body))
    started = executor.start(launch)
    wait_for_file(tmp_path / "ready")
    executor.signal(launch.attempt_id, signal.SIGTERM)
    facts = wait_end(executor, waker, launch, limit=30)
    assert facts.exit_code == 7, facts  # the main process ran its trap after its child's
    assert (tmp_path / "parent-term").read_text() == "parent\n"
    assert (tmp_path / "child-term").read_text() == "child\n"
    assert_nothing_left(backend, launch, started)


def test_a_timeout_ends_an_attempt_that_obeys_sigterm(
    executor: Executor, waker: Waker, backend: Backend, tmp_path: Path
) -> None:
    launch = make_launch(backend, tmp_path, ("sleep", "300"))
    started = executor.start(launch)
    wait_until(lambda: bool(processes_of(launch)), "the attempt is running")
    facts, needed_kill = stop(executor, waker, launch, grace=20)
    assert not needed_kill and killed_by(facts, signal.SIGTERM), facts
    outcome, detail = classify(facts, Stop.TIMEOUT, 1.0)
    assert outcome is Outcome.TIMEOUT and "timeout" in detail
    assert_nothing_left(backend, launch, started)


def test_a_timeout_kills_after_the_grace_when_sigterm_is_ignored(
    executor: Executor, waker: Waker, backend: Backend, tmp_path: Path
) -> None:
    launch = make_launch(backend, tmp_path, script("trap '' TERM; sleep 300 & echo up > ready; wait"))
    started = executor.start(launch)
    wait_for_file(tmp_path / "ready")
    facts, needed_kill = stop(executor, waker, launch)
    assert needed_kill and killed_by(facts, signal.SIGKILL), facts
    assert classify(facts, Stop.TIMEOUT, 1.0)[0] is Outcome.TIMEOUT
    assert_nothing_left(backend, launch, started)


def test_a_signal_right_after_start_is_not_lost(
    executor: Executor, waker: Waker, backend: Backend, tmp_path: Path
) -> None:
    """A cancel, or a runner shutting down, may come while the attempt is still launching."""
    launch = make_launch(backend, tmp_path, ("sleep", "300"))
    started = executor.start(launch)
    executor.signal(launch.attempt_id, signal.SIGTERM)
    facts = wait_end(executor, waker, launch, limit=30)
    # the point here is that SIGTERM arrived: how a runtime spells it is the cases above
    assert facts.signal == signal.SIGTERM or facts.exit_code == 128 + signal.SIGTERM, facts
    assert_nothing_left(backend, launch, started)


def test_a_signal_to_a_finished_attempt_is_ignored(
    executor: Executor, waker: Waker, backend: Backend, tmp_path: Path
) -> None:
    launch = make_launch(backend, tmp_path, script("echo x > ended; exit 4"))
    executor.start(launch)
    wait_for_file(tmp_path / "ended")
    wait_until(lambda: not processes_of(launch), "the attempt's process exited")
    executor.signal(launch.attempt_id, signal.SIGTERM)  # ended, not collected yet
    facts = wait_end(executor, waker, launch)
    assert (facts.exit_code, facts.signal) == (4, None)
    executor.signal(launch.attempt_id, signal.SIGKILL)  # collected
    assert quiet_for(executor, waker, 0.3) == {} and executor.running() == []


def test_cancel_leaves_nothing_of_the_attempt(
    executor: Executor, waker: Waker, backend: Backend, tmp_path: Path
) -> None:
    """labrun cancel sends SIGTERM; a second cancel (or the grace's end) SIGKILL."""
    body = "sleep 300 & sleep 300 & echo up > {}; wait"
    term = make_launch(backend, tmp_path, script(body.format("term-ready")))
    kill = make_launch(backend, tmp_path, script(body.format("kill-ready")))
    started = {launch.attempt_id: executor.start(launch) for launch in (term, kill)}
    wait_for_file(tmp_path / "term-ready")
    wait_for_file(tmp_path / "kill-ready")
    executor.signal(term.attempt_id, signal.SIGTERM)
    executor.signal(kill.attempt_id, signal.SIGKILL)
    facts = wait_ends(executor, waker, {term.attempt_id, kill.attempt_id}, limit=30)
    assert killed_by(facts[term.attempt_id], signal.SIGTERM), facts
    assert killed_by(facts[kill.attempt_id], signal.SIGKILL), facts
    for launch in (term, kill):
        assert classify(facts[launch.attempt_id], Stop.CANCEL, None)[0] is Outcome.KILLED
        assert_nothing_left(backend, launch, started[launch.attempt_id])
    assert executor.running() == []


# --- outputs, memory, launch errors --------------------------------------------------------


def test_a_declared_output_missing_after_exit_0_is_reported(
    executor: Executor, waker: Waker, backend: Backend, tmp_path: Path
) -> None:
    made, absent = str(tmp_path / "made.txt"), str(tmp_path / "absent.txt")
    partial = make_launch(backend, tmp_path, script("echo x > made.txt"), outputs=(made, absent))
    complete = make_launch(backend, tmp_path, script("echo y > made.txt2"), outputs=(made + "2",))
    for launch in (partial, complete):
        executor.start(launch)
    facts = wait_ends(executor, waker, {partial.attempt_id, complete.attempt_id})
    assert (facts[partial.attempt_id].exit_code, facts[partial.attempt_id].missing_outputs) == (0, (absent,))
    assert (facts[complete.attempt_id].exit_code, facts[complete.attempt_id].missing_outputs) == (0, ())
    assert classify(facts[partial.attempt_id], None, None)[0] is Outcome.NO_OUTPUT


def test_a_task_over_its_memory_limit_is_oom_killed(
    executor: Executor, waker: Waker, backend: Backend, tmp_path: Path
) -> None:
    if not backend.enforces_memory:
        pytest.skip(f"runtime {backend.name} enforces no memory limit")
    hog = ("dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1")
    facts = run(executor, waker, make_launch(backend, tmp_path, hog, memory=64 * MiB))
    assert facts.oom_kills > 0 or facts.oom_killed, facts
    assert classify(facts, None, None)[0] is Outcome.OOM


@pytest.mark.parametrize(
    "argv", [("no-such-program-xyz", "an arg"), script("no-such-program-xyz")], ids=["exec", "shell"]
)
def test_a_command_that_cannot_start_is_a_config_error(
    executor: Executor, waker: Waker, backend: Backend, tmp_path: Path, argv: tuple[str, ...]
) -> None:
    launch = make_launch(backend, tmp_path, argv)
    try:
        executor.start(launch)
    except LaunchError as exc:
        outcome, detail = Outcome.CONFIG_ERROR, str(exc)
    else:
        outcome, detail = classify(wait_end(executor, waker, launch), None, None)
    assert outcome is Outcome.CONFIG_ERROR, detail
    # named where the user reads it: the message, or the attempt's stderr that `why` shows
    stderr = Path(launch.stderr_path).read_text() if Path(launch.stderr_path).exists() else ""
    assert "no-such-program-xyz" in detail + stderr, (detail, stderr)
    assert executor.running() == []


# --- a runner that restarts, and what is left behind --------------------------------------


@pytest.mark.parametrize("shell", [SH, "sh"], ids=["shell", "exec"])
def test_an_attempt_is_adopted_after_a_runner_restart_with_its_real_end(
    backend: Backend, waker: Waker, tmp_path: Path, shell: str
) -> None:
    """`shell`: labrun runs a command with shell syntax as `/bin/sh -c`; any other argv
    (here `sh -c`, as it would `python3 train.py`) is exec'd as it is."""
    forget_launches()
    wait_go = "echo waiting; while [ ! -e go ]; do sleep 1; done; echo done; exit 5"
    running = make_launch(backend, tmp_path, (shell, "-c", wait_go))
    early = make_launch(backend, tmp_path, (shell, "-c", "echo early > early; exit 6"))
    dead_waker = Waker()
    first = backend.new_executor(dead_waker)
    # what the runner commits: `identified` is called at the commit, while both still run
    started = {launch.attempt_id: first.start(launch) for launch in (running, early)}
    started = {attempt_id: first.identified(attempt_id, s) for attempt_id, s in started.items()}
    wait_for_file(tmp_path / "early")
    wait_until(lambda: not processes_of(early), "the early attempt exited")
    first.close()  # the runner died: its attempts are not stopped
    dead_waker.close()
    second = backend.new_executor(waker)
    try:
        for launch in (running, early):
            assert second.adopt(launch.attempt_id, launch, started[launch.attempt_id]), launch
        (tmp_path / "go").write_text("go")
        facts = wait_ends(second, waker, {running.attempt_id, early.attempt_id}, limit=30)
        assert facts[running.attempt_id].exit_code == 5, facts
        assert facts[early.attempt_id].exit_code == 6, facts
        assert Path(running.stdout_path).read_text().endswith("done\n")
        for launch in (running, early):
            assert_nothing_left(backend, launch, started[launch.attempt_id])
    finally:
        second.close()
        kill_leftover_processes()
    for launch in (running, early):
        assert backend.leftovers(started[launch.attempt_id], True) == []


def test_an_attempt_spawned_but_never_recorded_is_found_and_adopted(
    backend: Backend, waker: Waker, tmp_path: Path
) -> None:
    """The runner died between the spawn and the commit of what it started (pid, container,
    remote record): a resume knows only the attempt's id, and must find it by that, so the
    task is neither lost nor run a second time while this one still runs."""
    forget_launches()
    launch = make_launch(backend, tmp_path, ("sh", "-c", "while [ ! -e go ]; do sleep 0.2; done; exit 4"))
    dead_waker = Waker()
    first = backend.new_executor(dead_waker)
    started = first.start(launch)
    wait_until(lambda: bool(processes_of(launch)), "the attempt is running")
    first.close()
    dead_waker.close()
    second = backend.new_executor(waker)
    try:
        assert second.adopt(launch.attempt_id, launch, Started(mechanism=started.mechanism)), "not found"
        (tmp_path / "go").write_text("go")
        facts = wait_end(second, waker, launch, limit=30)
        assert facts.exit_code == 4, facts
        assert_nothing_left(backend, launch, started)
    finally:
        second.close()
        kill_leftover_processes()


def test_nothing_is_left_after_a_normal_end(backend: Backend, waker: Waker, tmp_path: Path) -> None:
    forget_launches()
    ex = backend.new_executor(waker)
    launch = make_launch(backend, tmp_path, script("sleep 300 & echo started"))
    try:
        started = ex.start(launch)
        facts = wait_end(ex, waker, launch)
        assert facts.exit_code == 0 and Path(launch.stdout_path).read_text() == "started\n"
        assert_nothing_left(backend, launch, started)
    finally:
        ex.close()
        kill_leftover_processes()
    assert backend.leftovers(started, True) == []


def test_a_child_that_leaves_the_process_group_ends_with_the_attempt(
    executor: Executor, waker: Waker, backend: Backend, tmp_path: Path
) -> None:
    if "setsid" in backend.lacks:
        pytest.skip(f"no setsid where {backend.name} attempts run")
    escape = "setsid sh -c 'echo up > escaped; exec sleep 300' & while [ ! -s escaped ]; do sleep 1; done"
    launch = make_launch(backend, tmp_path, script(escape + "; echo started"))
    started = executor.start(launch)
    assert wait_end(executor, waker, launch).exit_code == 0
    assert_nothing_left(backend, launch, started)
    executor.close()  # the process runtime's policy at close, too
    assert_nothing_left(backend, launch, started, closed=True)
