"""`labrun why` classification, fed with the stderr and exit status of real processes.

Each case runs the failing thing for real (a Python traceback, dash, bash, cat, psql,
curl, /dev/full) and passes what it printed to `diagnose`, so the patterns are checked
against what the tools really say, not against what we remember they say.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from labrun.diagnose import AttemptRecord, Cause, Diagnosis, diagnose, nice_size

GiB = 1024**3


@dataclass(frozen=True)
class Ran:
    exit_code: int | None
    signal: int | None
    stderr: tuple[str, ...]


def run(argv: list[str], cwd: Path | None = None, timeout: float | None = None) -> Ran:
    """Runs `argv` for real; a timeout kills it with SIGKILL, as the runner would."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    code = proc.returncode
    lines = tuple(err.decode(errors="replace").splitlines())
    return Ran(code if code >= 0 else None, -code if code < 0 else None, lines)


def failed_attempt(ran: Ran, outcome: str = "failed", **more: object) -> AttemptRecord:
    fields: dict[str, object] = {
        "task": "resize",
        "state": "failed",
        "attempt": 1,
        "outcome": outcome,
        "exit_code": ran.exit_code,
        "signal": ran.signal,
        "oom_kills": 0,
        "stderr_tail": ran.stderr,
        "node": "local",
        **more,
    }
    return AttemptRecord(**fields)  # type: ignore[arg-type]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- misconfiguration -----------------------------------------------------------------


def test_python_reading_unset_environment_variable() -> None:
    ran = run([sys.executable, "-c", "import os; os.environ['DATA_DIRECTORY']"])
    assert ran.exit_code == 1
    d = diagnose(failed_attempt(ran))
    assert d.cause is Cause.MISCONFIGURATION
    assert d.title == "environment variable DATA_DIRECTORY is not set"
    assert "export DATA_DIRECTORY=..." in d.next_step and "[defaults] env" in d.next_step
    assert "KeyError: 'DATA_DIRECTORY'" in "\n".join(d.evidence)


@pytest.mark.parametrize(
    "argv",
    [
        ["bash", "-uc", 'echo "$DATA_DIRECTORY"'],  # exits 127, like a missing command
        ["sh", "-c", ': "${DATA_DIRECTORY:?}"'],
    ],
)
def test_shell_reading_unset_environment_variable(argv: list[str]) -> None:
    ran = run(argv)
    d = diagnose(failed_attempt(ran))
    assert (d.cause, d.title) == (
        Cause.MISCONFIGURATION,
        "environment variable DATA_DIRECTORY is not set",
    )


def test_keyerror_on_an_ordinary_dict_is_the_applications_own() -> None:
    ran = run([sys.executable, "-c", "d = {}; d['width']"])
    d = diagnose(failed_attempt(ran))
    assert d.cause is Cause.APPLICATION_ERROR
    assert "KeyError: 'width'" in d.title


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_command_not_found(shell: str) -> None:
    ran = run([shell, "-c", "nonexistent_cmd --fast"])
    assert ran.exit_code == 127
    d = diagnose(failed_attempt(ran, outcome="config_error"))
    assert d.cause is Cause.MISCONFIGURATION
    assert d.title == "command not found: nonexistent_cmd"
    assert "install nonexistent_cmd on local" in d.next_step
    assert "exit code 127" in d.evidence


def test_script_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "prepare.sh"
    script.write_text("echo hi\n")
    script.chmod(0o644)
    ran = run(["sh", "-c", str(script)])
    assert ran.exit_code == 126
    d = diagnose(failed_attempt(ran))
    assert d.cause is Cause.MISCONFIGURATION
    assert d.next_step.startswith(f"chmod +x {script}")


def test_missing_input_file_named(tmp_path: Path) -> None:
    missing = tmp_path / "data" / "in.csv"
    for argv in (["cat", str(missing)], [sys.executable, "-c", f"open({str(missing)!r})"]):
        d = diagnose(failed_attempt(run(argv)))
        assert d.cause is Cause.MISCONFIGURATION, argv
        assert d.title == f"no such file or directory: {missing}"
        assert f"create {missing}" in d.next_step


def test_missing_script_named() -> None:
    d = diagnose(failed_attempt(run([sys.executable, "/nonexistent/train.py"])))
    assert d.title == "no such file or directory: /nonexistent/train.py"


def test_missing_image_is_a_configuration_error() -> None:
    record = AttemptRecord(
        task="render",
        state="failed",
        attempt=1,
        outcome="config_error",
        reason="image labrun-test:1 is not present on local and no image_tar is set",
    )
    d = diagnose(record)
    assert d.cause is Cause.MISCONFIGURATION
    assert "labrun-test:1" in d.title and "docker load" in d.next_step


# --- dependency failure ---------------------------------------------------------------


def test_python_connect_to_closed_port() -> None:
    port = closed_port()
    code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    ran = run([sys.executable, "-c", code])
    d = diagnose(failed_attempt(ran))
    assert d.cause is Cause.DEPENDENCY_FAILURE
    assert "Connection refused" in d.title
    assert "tcp = [" in d.next_step


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_curl_to_closed_port_names_the_address() -> None:
    port = closed_port()
    d = diagnose(failed_attempt(run(["curl", "-sS", f"http://127.0.0.1:{port}/"])))
    assert d.cause is Cause.DEPENDENCY_FAILURE
    assert f'tcp = ["127.0.0.1:{port}"]' in d.next_step


@pytest.mark.skipif(not shutil.which("psql"), reason="psql is not installed")
def test_psql_refused_and_unresolvable() -> None:
    port = closed_port()
    refused = diagnose(failed_attempt(run(["psql", "-h", "127.0.0.1", "-p", str(port)])))
    assert refused.cause is Cause.DEPENDENCY_FAILURE
    assert refused.title.startswith(f"could not connect to 127.0.0.1:{port}")
    unknown = diagnose(failed_attempt(run(["psql", "-h", "db.invalid", "-p", str(port)])))
    assert unknown.cause is Cause.DEPENDENCY_FAILURE
    assert 'tcp = ["db.invalid:PORT"]' in unknown.next_step


def test_upstream_failure_skips() -> None:
    record = AttemptRecord(
        task="merge",
        state="skipped",
        reason="an upstream task did not succeed",
        upstream_failed=("resize[2]",),
    )
    d = diagnose(record)
    assert d.cause is Cause.DEPENDENCY_FAILURE
    assert "resize[2]" in d.title
    assert "upstream failed: resize[2]" in d.evidence


# --- resource exhaustion --------------------------------------------------------------


def test_oom_suggests_a_nice_memory_value() -> None:
    # No cgroup runtime exists yet to OOM-kill a real process; these are the facts it reports.
    record = AttemptRecord(
        task="train",
        state="failed",
        attempt=2,
        outcome="oom",
        signal=signal.SIGKILL,
        oom_kills=1,
        peak_memory=GiB,
        memory_limit=GiB,
    )
    d = diagnose(record)
    assert d.cause is Cause.RESOURCE_EXHAUSTION
    assert d.title == "out of memory: peak 1.0GiB reached the limit of 1.0GiB (the kernel counted 1 OOM kill)"
    # the peak is the cap, not the need: the advice says so and asks for more than 1.5x
    assert 'set memory = "2GiB" for task train (it needed more than its limit of 1.0GiB)' in d.next_step
    assert "killed by signal SIGKILL (9)" in d.evidence
    assert "OOM kills (kernel counter): 1" in d.evidence
    assert "peak memory: 1.0GiB, limit: 1.0GiB" in d.evidence


def test_oom_counter_wins_over_exit_code() -> None:
    ran = run([sys.executable, "-c", "raise SystemExit(1)"])
    d = diagnose(failed_attempt(ran, oom_kills=2, peak_memory=600 * 1024**2))
    assert d.cause is Cause.RESOURCE_EXHAUSTION
    assert "1.5GiB" not in d.next_step and '"1GiB"' in d.next_step  # 1.5 x 600MiB = 900MiB


def test_timeout_of_a_real_process() -> None:
    ran = run(["sleep", "5"], timeout=0.2)
    assert ran.signal == signal.SIGKILL
    d = diagnose(failed_attempt(ran, outcome="timeout", timeout=0.2, runtime=0.2))
    assert d.cause is Cause.RESOURCE_EXHAUSTION
    assert d.title == "ran past its time limit of 0.2s"
    assert "killed by signal SIGKILL (9)" in d.evidence


def test_timeout_suggests_double() -> None:
    d = diagnose(failed_attempt(Ran(None, 9, ()), outcome="timeout", timeout=3600))
    assert 'timeout = "2h"' in d.next_step


def test_disk_full_from_dev_full() -> None:
    code = "f = open('/dev/full', 'w'); f.write('x'); f.close()"
    d = diagnose(failed_attempt(run([sys.executable, "-c", code])))
    assert d.cause is Cause.RESOURCE_EXHAUSTION
    assert "No space left on device" in d.title and "df -h" in d.next_step


# --- application error, lost node, missing output, and the rest -----------------------


def test_plain_application_error_shows_last_stderr_line() -> None:
    ran = run([sys.executable, "-c", "raise ValueError('bad value in row 3')"])
    d = diagnose(failed_attempt(ran))
    assert d.cause is Cause.APPLICATION_ERROR
    assert d.title == "exit code 1: ValueError: bad value in row 3"


def test_crash_by_signal_is_named() -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    d = diagnose(failed_attempt(run([sys.executable, "-c", code])))
    assert d.cause is Cause.APPLICATION_ERROR
    assert d.title.startswith("killed by signal SIGSEGV (11)")


def test_shell_reported_signal_exit_code() -> None:
    ran = run(["sh", "-c", "sh -c 'kill -9 $$'; exit $?"])
    assert ran.exit_code == 137
    d = diagnose(failed_attempt(ran))
    assert "exit code 137 (128+9: SIGKILL)" in d.evidence


def test_task0_exits_zero_without_its_output(tmp_path: Path) -> None:
    ran = run(["sh", "-c", "echo partitioning >&2"], cwd=tmp_path)
    manifest = str(tmp_path / "parts.txt")
    record = failed_attempt(
        ran, outcome="no_output", task="setup", missing_outputs=(manifest,), oom_kills=None
    )
    d = diagnose(record)
    assert d.cause is Cause.MISSING_OUTPUT
    assert d.title == f"exited 0 but produced no output: {manifest} is missing or empty"
    assert f"missing output: {manifest}" in d.evidence
    assert not any(line.startswith("OOM kills") for line in d.evidence)  # not measured


def test_lost_node() -> None:
    d = diagnose(AttemptRecord("resize", "ready", attempt=1, outcome="lost", node="gpu2"))
    assert d.cause is Cause.LOST_NODE and "gpu2" in d.title


def test_succeeded_and_not_finished() -> None:
    ok = AttemptRecord("resize", "succeeded", attempt=1, outcome="succeeded", exit_code=0)
    assert diagnose(ok).cause is Cause.SUCCEEDED
    for record in (
        AttemptRecord("merge", "waiting"),
        AttemptRecord("merge", "running", attempt=1),
        AttemptRecord("merge", "cancelled", attempt=1, outcome="killed", signal=15),
    ):
        assert diagnose(record).cause is Cause.NOT_FINISHED, record


def test_ready_task_explains_its_last_failed_attempt() -> None:
    ran = run([sys.executable, "-c", "raise SystemExit('boom')"])
    d = diagnose(failed_attempt(ran, state="ready"))  # a retry is pending
    assert d.cause is Cause.APPLICATION_ERROR and "task state: ready" in d.evidence


def test_evidence_keeps_the_last_twenty_stderr_lines() -> None:
    lines = [f"line {i}" for i in range(30)]
    code = "import sys; [print(f'line {i}', file=sys.stderr) for i in range(30)]; sys.exit(3)"
    ran = run([sys.executable, "-c", code])
    assert list(ran.stderr) == lines
    d = diagnose(failed_attempt(ran))
    shown = [e for e in d.evidence if e.startswith("| ")]
    assert shown == [f"| {line}" for line in lines[-20:]]
    assert "stderr, last 20 lines:" in d.evidence


def test_json_and_text_forms() -> None:
    ran = run(["sh", "-c", "nonexistent_cmd"])
    d = diagnose(failed_attempt(ran))
    data = d.to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["cause"] == "misconfiguration"
    text = d.render_text()
    assert text.startswith("misconfiguration: command not found: nonexistent_cmd")
    assert text.splitlines()[-1].startswith("next step: install nonexistent_cmd")
    assert isinstance(d, Diagnosis)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (1, "1MiB"),
        (900 * 1024**2, "1GiB"),
        (1050 * 1024**2, "1.5GiB"),
        (1.5 * GiB, "1.5GiB"),
        (2.5 * GiB, "3GiB"),
    ],
)
def test_nice_size(n: float, text: str) -> None:
    assert nice_size(n) == text


def test_oom_advice_from_a_real_peak_and_for_one_item() -> None:
    under = AttemptRecord(
        task="resize[3]",
        state="failed",
        attempt=1,
        outcome="oom",
        peak_memory=300 * 1024**2,
        memory_limit=GiB,
    )
    d = diagnose(under)  # killed well under its limit (another process of the attempt): the peak is real
    assert 'set memory = "512MiB" for task resize (1.5x its peak of 300.0MiB)' in d.next_step
    assert 'memory applies to every item of resize: on_oom = "grow"' in d.next_step


def test_next_steps_name_the_real_run_and_job() -> None:
    skipped = AttemptRecord(task="report", state="skipped", upstream_failed=("broken",), run=7)
    assert "`labrun why 7 broken`" in diagnose(skipped).next_step
    cancelled = AttemptRecord(
        task="t", state="cancelled", attempt=1, outcome="killed", run=7, job_file="/lab/my job.toml"
    )
    d = diagnose(cancelled)
    assert "resume" not in d.next_step and "`labrun run '/lab/my job.toml'` starts a new run" in d.next_step
    interrupted = AttemptRecord(
        task="t", state="ready", attempt=1, outcome="killed", run=7, job_file="/j.toml"
    )
    assert "`labrun run /j.toml --resume` finishes the run" in diagnose(interrupted).next_step
    silent = AttemptRecord(task="t[1]", state="failed", attempt=1, outcome="failed", exit_code=3, run=7)
    d = diagnose(silent)
    assert d.title == "exit code 3 (stderr is empty)"
    assert "`labrun logs 7 't[1]'`" in d.next_step and "shown in stderr" not in d.next_step


def test_an_earlier_attempt_keeps_its_detail_apart_from_the_task_state() -> None:
    first = AttemptRecord(
        task="t", state="succeeded", reason="the kernel killed it", attempt=1, outcome="oom", latest=False
    )
    lines = diagnose(first).evidence
    assert "attempt 1: the kernel killed it" in lines
    assert "task state now: succeeded (attempt 1 is not its latest)" in lines
    assert not [line for line in lines if line.startswith("task state: succeeded (")]


def test_a_short_stderr_is_not_called_the_last_lines() -> None:
    short = AttemptRecord(task="t", state="failed", attempt=1, outcome="failed", stderr_tail=("a", "b"))
    assert "stderr (2 lines):" in diagnose(short).evidence
    full = replace(short, stderr_tail=tuple(str(i) for i in range(30)))
    assert "stderr, last 20 lines:" in diagnose(full).evidence


def test_a_quoted_missing_command_is_named_without_its_quotes() -> None:
    record = AttemptRecord(
        task="t",
        state="failed",
        attempt=1,
        outcome="failed",
        exit_code=127,
        stderr_tail=("sh: 1: 'no_such_program': not found",),
    )
    assert 'add commands = ["no_such_program"] to [preflight]' in diagnose(record).next_step


def test_a_superseded_attempt_is_not_an_application_error() -> None:
    """Killed by labrun's SIGTERM because a sibling attempt succeeded first."""
    record = AttemptRecord(
        "t[0]",
        "succeeded",
        "stopped by labrun: another attempt succeeded first (killed by SIGTERM)",
        attempt=1,
        outcome="superseded",
        signal=signal.SIGTERM,
    )
    d = diagnose(record)
    assert d.cause is Cause.SUCCEEDED and "another attempt of the task succeeded first" in d.title
