"""Facts about an ended attempt → its one outcome, in one ordered table.

Pure: no I/O. The order matters and encodes the design's rules: a stop labrun asked for
(cancel, shutdown, timeout) explains the exit better than the exit code does; an OOM kill
anywhere in the attempt's cgroup is `oom` even when the main process exited 0; 126/127
mean the command could not run at all.
"""

from __future__ import annotations

import enum
import signal as _signal
from collections.abc import Callable

from labrun.model import Facts
from labrun.states import Outcome
from labrun.units import format_duration


class Stop(str, enum.Enum):
    """Why labrun itself stopped an attempt, if it did."""

    TIMEOUT = "timeout"
    CANCEL = "cancel"
    SHUTDOWN = "shutdown"
    SUPERSEDE = "supersede"  # another attempt of the task succeeded first


def signal_name(signum: int | None) -> str:
    if signum is None:
        return ""
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_exit(facts: Facts) -> str:
    if facts.signal is not None:
        return f"killed by {signal_name(facts.signal)}"
    return f"exited {facts.exit_code}"


Rule = tuple[Callable[[Facts, "Stop | None"], bool], Outcome, Callable[[Facts, float | None], str]]

_RULES: tuple[Rule, ...] = (
    (lambda f, s: bool(f.start_error), Outcome.CONFIG_ERROR, lambda f, t: f.start_error),
    (
        lambda f, s: s is Stop.SUPERSEDE,
        Outcome.SUPERSEDED,
        lambda f, t: f"stopped by labrun: another attempt succeeded first ({describe_exit(f)})",
    ),
    (lambda f, s: f.lost, Outcome.LOST, lambda f, t: f.detail or "the attempt vanished"),
    (
        lambda f, s: s in (Stop.CANCEL, Stop.SHUTDOWN),
        Outcome.KILLED,
        lambda f, t: f"stopped by labrun ({describe_exit(f)})",
    ),
    (
        lambda f, s: s is Stop.TIMEOUT,
        Outcome.TIMEOUT,
        lambda f, t: f"ran past its {format_duration(t)} timeout and was stopped",
    ),
    (
        lambda f, s: f.timed_out,
        Outcome.TIMEOUT,
        lambda f, t: f.detail or "the cluster stopped it at its time limit",
    ),
    (
        lambda f, s: f.oom_kills > 0 or f.oom_killed,
        Outcome.OOM,
        lambda f, t: f"the kernel killed a process for memory ({describe_exit(f)})",
    ),
    (
        lambda f, s: f.exit_code in (126, 127),
        Outcome.CONFIG_ERROR,
        lambda f, t: (
            f"exited {f.exit_code}: "
            + ("command not found" if f.exit_code == 127 else "command cannot be executed")
        ),
    ),
    (
        lambda f, s: f.exit_code == 0 and bool(f.missing_outputs),
        Outcome.NO_OUTPUT,
        lambda f, t: (
            "exited 0 but produced no output: "
            + ", ".join(f"{p} is missing or empty" for p in f.missing_outputs)
        ),
    ),
    (lambda f, s: f.exit_code == 0, Outcome.SUCCEEDED, lambda f, t: "exited 0"),
)


def classify(facts: Facts, stop: Stop | None = None, timeout: float | None = None) -> tuple[Outcome, str]:
    """The outcome of an attempt and a one-line description of why."""
    for applies, outcome, describe in _RULES:
        if applies(facts, stop):
            return outcome, describe(facts, timeout)
    return Outcome.FAILED, describe_exit(facts)
