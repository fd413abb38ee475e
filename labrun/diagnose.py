"""`labrun why`: classify why a task's attempt ended, with the evidence and one next step.

Pure: the store gathers an `AttemptRecord`, `diagnose()` returns a `Diagnosis`. The
rules are one ordered table (`RULES`): the first rule whose `when` finds something wins,
so specific causes (a missing variable named in stderr) come before general ones (a
non-zero exit). A new cause is one new entry.
"""

from __future__ import annotations

import enum
import math
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from labrun.fit import plural
from labrun.logtail import STDERR_LINES
from labrun.outcome import signal_name
from labrun.stderr_patterns import (
    ADDRESS,
    COMMAND_PATTERNS,
    CONNECT,
    DISK_FULL,
    ENV_PATTERNS,
    MISSING_PATH,
    NOT_EXECUTABLE,
    PY_KEYERROR,
)
from labrun.units import format_duration, format_size


class Cause(str, enum.Enum):
    RESOURCE_EXHAUSTION = "resource_exhaustion"
    DEPENDENCY_FAILURE = "dependency_failure"
    MISCONFIGURATION = "misconfiguration"
    APPLICATION_ERROR = "application_error"
    LOST_NODE = "lost_node"
    MISSING_OUTPUT = "missing_output"
    SUCCEEDED = "succeeded"
    NOT_FINISHED = "not_finished"  # never ran, still running, or cancelled

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


@dataclass(frozen=True)
class AttemptRecord:
    """What the store knows about a task and the attempt being explained."""

    task: str
    state: str  # a labrun.states.TaskState value
    reason: str = ""  # why it was skipped / failed / could not start, as recorded
    attempt: int | None = None  # None: no attempt was ever started
    outcome: str | None = None  # a labrun.states.Outcome value; None while running
    exit_code: int | None = None
    signal: int | None = None
    oom_kills: int | None = None  # the kernel's counter; None: not measured by this runtime
    container_oom_killed: bool | None = None  # Docker's State.OOMKilled; None: not a container
    peak_memory: int | None = None
    memory_limit: int | None = None
    timeout: float | None = None  # seconds
    runtime: float | None = None  # seconds
    missing_outputs: Sequence[str] = ()
    stderr_tail: Sequence[str] = ()
    upstream_failed: Sequence[str] = ()
    node: str | None = None
    run: int | None = None  # the run's id, for commands in the next step
    job_file: str = ""
    latest: bool = True  # the task's latest attempt (else `reason` is this attempt's own)

    @property
    def run_ref(self) -> str:
        return str(self.run) if self.run is not None else "RUN"

    note: str = ""  # what the executor noted: Docker's State.Error, counters it could not read


@dataclass(frozen=True)
class Diagnosis:
    cause: Cause
    title: str
    evidence: tuple[str, ...]
    next_step: str

    def to_json(self) -> dict[str, object]:
        return {
            "cause": self.cause.value,
            "title": self.title,
            "evidence": list(self.evidence),
            "next_step": self.next_step,
        }

    def render_text(self) -> str:
        lines = [f"{self.cause.label}: {self.title}"]
        lines += [f"  {line}" for line in self.evidence]
        lines.append(f"next step: {self.next_step}")
        return "\n".join(lines)


Explain = Callable[[AttemptRecord, str], tuple[str, str]]  # -> (title, next step)


@dataclass(frozen=True)
class Rule:
    cause: Cause
    when: Callable[[AttemptRecord], str | None]  # a detail (name, path, line) or None
    explain: Explain


def diagnose(record: AttemptRecord) -> Diagnosis:
    for rule in RULES:
        detail = rule.when(record)
        if detail is not None:
            title, next_step = rule.explain(record, detail)
            return Diagnosis(rule.cause, title, tuple(evidence(record)), next_step)
    raise AssertionError("the last rule matches every record")  # pragma: no cover


# --- reading stderr -------------------------------------------------------------------


def _lines(r: AttemptRecord) -> list[str]:
    """The stderr tail, newest last, followed by the recorded reason (also free text)."""
    return [*r.stderr_tail[-STDERR_LINES:], *([r.reason] if r.reason else [])]


def _search(r: AttemptRecord, patterns: Sequence[re.Pattern[str]]) -> str | None:
    """The first group of the newest line that matches one of `patterns` (whole match if
    the pattern has no group)."""
    for line in reversed(_lines(r)):
        for pattern in patterns:
            match = pattern.search(line)
            if match:
                return match.group(1) if pattern.groups else line.strip()
    return None


def _env_var(r: AttemptRecord) -> str | None:
    found = _search(r, ENV_PATTERNS)
    if found:
        return found
    key = _search(r, [PY_KEYERROR])
    # A KeyError is about os.environ when the traceback passes through os, or the key
    # looks like an environment variable; a KeyError on some other dict is the app's own.
    from_os = any("environ" in line or "<frozen os>" in line for line in _lines(r))
    if key and (from_os or key.isupper()):
        return key
    return None


def _address(line: str) -> str:
    for pattern in ADDRESS:
        match = pattern.search(line)
        if match:
            return ":".join(g for g in match.groups() if g)
    return ""


# --- the rules, in order --------------------------------------------------------------

_UNFINISHED_STATES = {"waiting", "ready", "running"}


def _unfinished(r: AttemptRecord) -> str | None:
    if r.state == "cancelled" or r.outcome == "killed":
        return "cancelled"
    if r.state == "running" and r.outcome is None:
        return "running"
    if r.attempt is None and r.state in _UNFINISHED_STATES:
        return r.state
    return None


def _explain_unfinished(r: AttemptRecord, what: str) -> tuple[str, str]:
    job = shlex.quote(r.job_file) if r.job_file else "JOB.toml"
    if what == "cancelled" and r.state == "cancelled":
        return "cancelled: its run was cancelled (`labrun cancel`)", (
            f"a cancelled run is final; `labrun run {job}` starts a new run"
        )
    if what == "cancelled":
        return "stopped when its runner was interrupted (Ctrl-C, SIGTERM)", (
            f"`labrun run {job} --resume` finishes the run"
        )
    if what == "running":
        return f"still running (attempt {r.attempt})", "wait for it, or follow its log"
    waits = "waiting on the tasks it depends on" if what == "waiting" else "not started yet"
    return f"{waits}; no attempt has run", "wait for the run to reach it"


def oom_sources(r: AttemptRecord) -> list[str]:
    """Which sources said the attempt was OOM-killed; each is a separate fact."""
    sources = []
    if r.oom_kills:
        kills = "1 OOM kill" if r.oom_kills == 1 else f"{r.oom_kills} OOM kills"
        sources.append(f"the kernel counted {kills}")
    if r.container_oom_killed:
        sources.append("Docker reported OOMKilled")
    return sources


def _memory_advice(r: AttemptRecord, _detail: str) -> tuple[str, str]:
    peak, limit = r.peak_memory, r.memory_limit
    spec = r.task.split("[", 1)[0]
    if limit and (peak is None or peak >= limit * 0.9):  # stopped at the limit: the need is unknown
        value, why = f'"{nice_size(limit * 2)}"', f"it needed more than its limit of {format_size(limit)}"
    elif peak:
        value, why = f'"{nice_size(peak * 1.5)}"', f"1.5x its peak of {format_size(peak)}"
    else:
        value, why = "a larger value", "its use was not measured"
    step = f"set memory = {value} for task {spec} ({why}), or make it use less"
    if spec != r.task:
        step += (
            f'; memory applies to every item of {spec}: on_oom = "grow" (the default) retries '
            "just the item that ran out, with more"
        )
    said = " and ".join(oom_sources(r))
    said = f" ({said})" if said else ""
    if limit is None:
        return f"killed by the kernel's OOM killer: the machine ran out of memory{said}", step
    used = f"peak {format_size(peak)} reached" if peak else "it hit"
    return f"out of memory: {used} the limit of {format_size(limit)}{said}", step


def _timeout_advice(r: AttemptRecord, _detail: str) -> tuple[str, str]:
    if r.timeout is None:
        return "ran past its time limit", f"raise timeout for task {r.task}, or find where it hangs"
    longer = _duration_text(r.timeout * 2)
    return (
        f"ran past its time limit of {format_duration(r.timeout)}",
        f'if it needs longer, set timeout = "{longer}" for task {r.task}; '
        "if it hung, the stderr tail shows where",
    )


def _disk_advice(_r: AttemptRecord, line: str) -> tuple[str, str]:
    where = _search_path(line)
    place = f" for {where}" if where else ""
    return f"disk full: {line}", (
        f"free space on the filesystem{place} (df -h), or write elsewhere; add "
        '[preflight] disk_free = { "DIR" = "SIZE" } so `labrun check` catches it'
    )


def _env_advice(r: AttemptRecord, name: str) -> tuple[str, str]:
    return f"environment variable {name} is not set", (
        f"export {name}=... before `labrun run`, or add it to [defaults] env "
        f'(or task {r.task}\'s env); add env = ["{name}"] to [preflight]'
    )


def _command_found(r: AttemptRecord) -> str | None:
    found = _search(r, COMMAND_PATTERNS)
    return found if found else ("" if r.exit_code == 127 else None)


def _command_advice(r: AttemptRecord, command: str) -> tuple[str, str]:
    where = f" on {r.node}" if r.node else ""
    command = command.strip("'\"`‘’“”")  # shells quote the name they could not find
    if not command:
        return "a command was not found (exit 127)", f"check the task's command and PATH{where}"
    return f"command not found: {command}", (
        f"install {command}{where} or fix PATH / the command line; "
        f'add commands = ["{command}"] to [preflight]'
    )


def _not_executable(r: AttemptRecord) -> str | None:
    if r.exit_code != 126:
        return None
    return _search(r, NOT_EXECUTABLE) or ""


def _exec_advice(_r: AttemptRecord, path: str) -> tuple[str, str]:
    what = path or "the command"
    return (
        f"cannot execute {what} (exit 126)",
        f"chmod +x {what}, or run it through its interpreter",
    )


DOCKER_ERROR = "Docker State.Error: "  # how the Docker runtimes note the daemon's own error


def _docker_error(r: AttemptRecord) -> str | None:
    """Docker's error for the container (a mount, the network, the runtime): the exit code
    that comes with it is Docker's, not the task's, so it explains the end better."""
    _, found, error = r.note.partition(DOCKER_ERROR)
    return error.split("; ")[0] if found else None


def _docker_advice(_r: AttemptRecord, error: str) -> tuple[str, str]:
    return f"Docker could not run the container: {error}", (
        "fix what Docker reports (a mounted path, the network, the image) and rerun; "
        "`labrun check` tests the daemon and the image"
    )


def _config_error(r: AttemptRecord) -> str | None:
    return (r.reason or "could not start") if r.outcome == "config_error" else None


def _config_advice(_r: AttemptRecord, reason: str) -> tuple[str, str]:
    if "image" in reason.lower():
        return (
            reason,
            "load the image (docker load -i FILE) or set image_tar; `labrun check` tests it",
        )
    return reason, "fix the task's settings as the message says; `labrun check` tests this"


def _connect_advice(_r: AttemptRecord, line: str) -> tuple[str, str]:
    address = _address(line)
    target = address or "a service"
    entry = address if ":" in address else f"{address or 'HOST'}:PORT"
    return f"could not connect to {target}: {line}", (
        f"start {target} (or fix its address) before the run; add "
        f'tcp = ["{entry}"] to [preflight] so `labrun run` refuses to start without it'
    )


def _search_path(line: str) -> str:
    for pattern in MISSING_PATH:
        match = pattern.search(line)
        if match:
            return match.group(1)
    match = re.search(r"'(/[^']+)'", line)
    return match.group(1) if match else ""


def _path_advice(_r: AttemptRecord, path: str) -> tuple[str, str]:
    return f"no such file or directory: {path}", (
        f"create {path} or fix the path in the job file (relative paths start in the "
        f'task\'s workdir); add paths = ["{path}"] to [preflight]'
    )


def _no_output(r: AttemptRecord) -> str | None:
    if r.outcome == "no_output" or (r.missing_outputs and r.outcome in (None, "succeeded")):
        return ", ".join(r.missing_outputs) or "a declared output"
    return None


def _output_advice(r: AttemptRecord, missing: str) -> tuple[str, str]:
    return f"exited 0 but produced no output: {missing} is missing or empty", (
        f"make task {r.task} write {missing} (compare the path it writes with its outputs "
        "setting); its stderr is below"
    )


def _never_placed(r: AttemptRecord) -> str | None:
    return (r.reason or "failed before any attempt") if r.attempt is None else None


def _app_advice(r: AttemptRecord, _detail: str) -> tuple[str, str]:
    last = next((line.strip() for line in reversed(r.stderr_tail) if line.strip()), "")
    ending = _ending(r.exit_code, r.signal) or f"ended as {r.outcome or 'failed'}"
    if not last:
        logs = f"labrun logs {r.run_ref} {shlex.quote(r.task)}"
        return f"{ending} (stderr is empty)", f"its stdout may say why: `{logs}`; fix the program, then rerun"
    return (
        f"{ending}: {last}",
        "fix the program's error shown in stderr (full log: `labrun logs`), then rerun",
    )


def _outcome(*names: str) -> Callable[[AttemptRecord], str | None]:
    return lambda r: r.outcome if r.outcome in names else None


def _any(r: AttemptRecord) -> str | None:
    return ""


RULES: tuple[Rule, ...] = (
    Rule(Cause.NOT_FINISHED, _unfinished, _explain_unfinished),
    Rule(Cause.SUCCEEDED, _outcome("succeeded"), lambda r, _: ("it succeeded", "nothing to do")),
    Rule(
        Cause.SUCCEEDED,
        _outcome("superseded"),
        lambda r, _: (
            "another attempt of the task succeeded first; labrun stopped this one (not counted)",
            "nothing to do: `labrun why RUN TASK --attempt N` explains the other attempts",
        ),
    ),
    Rule(
        Cause.LOST_NODE,
        _outcome("lost"),
        lambda r, _: (
            f"lost contact with the attempt{f' on {r.node}' if r.node else ''}",
            "check that the node is up and reachable (ssh to it); labrun retries lost attempts",
        ),
    ),
    Rule(
        Cause.DEPENDENCY_FAILURE,
        lambda r: ", ".join(r.upstream_failed) or (r.reason if r.state == "skipped" else None),
        lambda r, up: (
            f"skipped: an upstream task did not succeed ({up})",
            f"fix the upstream task first: `labrun why {r.run_ref} {shlex.quote(up.split(', ')[0])}` "
            "says why it failed",
        ),
    ),
    Rule(
        Cause.RESOURCE_EXHAUSTION,
        lambda r: "oom" if r.outcome == "oom" or (r.oom_kills or 0) > 0 or r.container_oom_killed else None,
        _memory_advice,
    ),
    Rule(Cause.RESOURCE_EXHAUSTION, _outcome("timeout"), _timeout_advice),
    Rule(Cause.MISCONFIGURATION, _docker_error, _docker_advice),
    Rule(Cause.RESOURCE_EXHAUSTION, lambda r: _search(r, DISK_FULL), _disk_advice),
    Rule(Cause.MISCONFIGURATION, _env_var, _env_advice),
    Rule(Cause.MISCONFIGURATION, _command_found, _command_advice),
    Rule(Cause.MISCONFIGURATION, _not_executable, _exec_advice),
    Rule(Cause.MISCONFIGURATION, _config_error, _config_advice),
    Rule(Cause.DEPENDENCY_FAILURE, lambda r: _search(r, CONNECT), _connect_advice),
    Rule(Cause.MISCONFIGURATION, lambda r: _search(r, MISSING_PATH), _path_advice),
    Rule(Cause.MISSING_OUTPUT, _no_output, _output_advice),
    Rule(
        Cause.MISCONFIGURATION,
        _never_placed,
        lambda r, why: (why, "fix the task's settings (resources, workdir) and run again"),
    ),
    Rule(Cause.APPLICATION_ERROR, _any, _app_advice),
)


# --- evidence and formatting ----------------------------------------------------------


def evidence(r: AttemptRecord) -> list[str]:
    """Every known fact, whatever the cause: the reader can check the classification."""
    out: list[str] = []
    if r.attempt is not None:
        where = f" on {r.node}" if r.node else ""
        took = f" after {format_duration(r.runtime)}" if r.runtime is not None else ""
        out.append(f"attempt {r.attempt}{where}: {r.outcome or 'running'}{took}")
    if r.latest:
        out.append(f"task state: {r.state}" + (f" ({r.reason})" if r.reason else ""))
    else:  # an earlier attempt: its own detail, and the task's state kept apart
        if r.reason:
            out.append(f"attempt {r.attempt}: {r.reason}")
        out.append(f"task state now: {r.state} (attempt {r.attempt} is not its latest)")
    ending = _ending(r.exit_code, r.signal)
    if ending:
        out.append(ending)
    if r.timeout is not None:
        out.append(f"time limit: {format_duration(r.timeout)}")
    if r.oom_kills is not None:
        out.append(f"OOM kills (kernel counter): {r.oom_kills}")
    if r.container_oom_killed is not None:
        said = "reported OOMKilled" if r.container_oom_killed else "did not report OOMKilled"
        out.append(f"Docker {said}")
    if r.note and r.note not in r.reason:
        out.append(f"noted by the executor: {r.note}")
    if r.peak_memory is not None or r.memory_limit is not None:
        limit = format_size(r.memory_limit) if r.memory_limit is not None else "none"
        out.append(f"peak memory: {format_size(r.peak_memory)}, limit: {limit}")
    out += [f"upstream failed: {name}" for name in r.upstream_failed]
    out += [f"missing output: {path}" for path in r.missing_outputs]
    tail = list(r.stderr_tail[-STDERR_LINES:])
    if tail:
        many = len(tail) == STDERR_LINES
        out.append(f"stderr, last {len(tail)} lines:" if many else f"stderr ({plural(len(tail), 'line')}):")
        out += [f"| {line.rstrip()}" for line in tail]
    elif r.attempt is not None:
        out.append("stderr: empty")
    return out


def _ending(exit_code: int | None, sig: int | None) -> str:
    if sig is not None:
        return f"killed by signal {signal_name(sig)} ({sig})"
    if exit_code is None:
        return ""
    if exit_code > 128 and exit_code - 128 < 65:
        return f"exit code {exit_code} (128+{exit_code - 128}: {signal_name(exit_code - 128)})"
    return f"exit code {exit_code}"


def nice_size(n: float) -> str:
    """The smallest of 1, 1.5, 2, 3, 4, 6, 8, ... MiB or GiB that is at least `n` bytes."""
    mib = 1024**2
    step = mib
    while True:
        for size in (step, step * 3 // 2):
            if size >= n:
                unit, factor = ("GiB", 1024**3) if size >= 1024**3 else ("MiB", mib)
                return f"{size / factor:g}{unit}"
        step *= 2


def _duration_text(seconds: float) -> str:
    total = math.ceil(seconds)
    if total >= 3600 and total % 3600 == 0:
        return f"{total // 3600}h"
    if total >= 60 and total % 60 == 0:
        return f"{total // 60}m"
    return f"{total}s"
