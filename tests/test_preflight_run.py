"""Running checks: concurrency, time limits, order, and custom commands as real processes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from labrun.preflight import (
    Check,
    Verdict,
    custom_command,
    env_set,
    passed,
    path_readable,
    run_checks,
    tcp_reachable,
)


def alive(pid: int) -> bool:
    """True while `pid` runs. A zombie counts as dead: in a container pid 1 may never reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def gone_soon(pid: int, within: float = 2.0) -> bool:
    """SIGKILL is delivered at once, but the kernel may take a moment to finish the exit:
    the pipe closes (and the check returns) slightly before the process becomes a zombie."""
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_custom_command_failure_shows_exit_code_and_last_lines(tmp_path: Path) -> None:
    script = "for i in 1 2 3 4 5 6 7; do echo line $i; done; echo 'db: schema v3 missing' >&2; exit 1"
    (result,) = run_checks([custom_command("db schema", script, str(tmp_path))], 5.0)
    assert not result.ok
    assert result.found.startswith("exit 1: ")
    assert "db: schema v3 missing" in result.found  # stderr is captured too
    assert "line 7" in result.found and "line 1" not in result.found  # only the tail
    assert result.fix


def test_custom_command_runs_in_cwd_with_env(tmp_path: Path) -> None:
    (tmp_path / "marker").write_text("")
    check = custom_command(
        "ctx",
        'test -e marker && test "$LABRUN_X" = yes',
        str(tmp_path),
        {
            "LABRUN_X": "yes",
            "PATH": "/usr/bin:/bin",
        },
    )
    assert run_checks([check], 5.0)[0].ok
    other = custom_command("ctx", 'test "$LABRUN_X" = yes', str(tmp_path), {"PATH": "/bin"})
    assert run_checks([other], 5.0)[0].found == "exit 1 (no output)"


def test_custom_command_not_found_and_bad_cwd(tmp_path: Path) -> None:
    (missing,) = run_checks([custom_command("c", "no_such_cmd_xyz", str(tmp_path))], 5.0)
    assert missing.found.startswith("exit 127: ") and "no_such_cmd_xyz" in missing.found
    assert "not found" in missing.fix
    (bad,) = run_checks([custom_command("c", "true", str(tmp_path / "nope"))], 5.0)
    assert not bad.ok and "cannot start in" in bad.found and "create the directory" in bad.fix


def test_hanging_custom_command_is_killed_with_its_group(tmp_path: Path) -> None:
    script = "echo $$ > shell.pid; sleep 30 & echo $! > sleep.pid; echo started; wait"
    start = time.monotonic()
    (result,) = run_checks([custom_command("hang", script, str(tmp_path))], timeout=0.5)
    elapsed = time.monotonic() - start
    assert not result.ok
    assert result.found.startswith("no answer within 0.5s; killed: started")
    assert elapsed < 5
    shell = int((tmp_path / "shell.pid").read_text())
    sleeper = int((tmp_path / "sleep.pid").read_text())
    assert gone_soon(shell)
    assert gone_soon(sleeper)  # the grandchild went with the process group


def test_probe_that_never_answers_is_abandoned() -> None:
    never = threading.Event()

    def hang(_timeout: float) -> Verdict:
        never.wait(60)
        return passed("too late")

    start = time.monotonic()
    results = run_checks([Check("hangs", hang), env_set("A", {"A": "1"})], timeout=0.2)
    assert time.monotonic() - start < 3
    assert [r.ok for r in results] == [False, True]
    assert results[0].found == "no answer within 0.2s"
    never.set()


def test_probe_that_raises_is_a_failed_check() -> None:
    def boom(_timeout: float) -> Verdict:
        raise RuntimeError("kaput")

    (result,) = run_checks([Check("boom", boom)], 1.0)
    assert not result.ok and "RuntimeError: kaput" in result.found


def test_results_keep_input_order() -> None:
    def sleeper(seconds: float) -> Check:
        def probe(_timeout: float) -> Verdict:
            time.sleep(seconds)
            return passed(str(seconds))

        return Check(f"sleep {seconds}", probe)

    delays = [0.3, 0.0, 0.2, 0.1]
    results = run_checks([sleeper(d) for d in delays], 5.0)
    assert [r.found for r in results] == [str(d) for d in delays]


def test_twenty_checks_overlap() -> None:
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def probe(_timeout: float) -> Verdict:
        begin = time.monotonic()
        time.sleep(0.2)
        with lock:
            spans.append((begin, time.monotonic()))
        return passed("slept")

    start = time.monotonic()
    results = run_checks([Check(f"c{i}", probe) for i in range(20)], 5.0)
    assert all(r.ok for r in results) and len(spans) == 20
    # Every check started before any finished: they all ran at the same time.
    assert max(b for b, _ in spans) < min(e for _, e in spans)
    assert time.monotonic() - start < 20 * 0.2 / 2


def test_workers_bounds_concurrency() -> None:
    active = 0
    peak = 0
    lock = threading.Lock()

    def probe(_timeout: float) -> Verdict:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return passed("ok")

    results = run_checks([Check(f"c{i}", probe) for i in range(6)], 5.0, workers=2)
    assert len(results) == 6 and peak == 2


def test_twenty_real_passing_checks_are_quick(tmp_path: Path) -> None:
    """Twenty real checks of several kinds, custom commands included, well under 2 s."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(32)
        port = server.getsockname()[1]
        checks: list[Check] = []
        for i in range(5):
            checks.append(custom_command(f"custom {i}", "sleep 0.1", str(tmp_path)))
            checks.append(tcp_reachable(f"127.0.0.1:{port}"))
            checks.append(path_readable(str(tmp_path)))
            checks.append(env_set("X", {"X": "1"}))
        start = time.monotonic()
        results = run_checks(checks, 5.0)
        elapsed = time.monotonic() - start
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    assert elapsed < 2.0
