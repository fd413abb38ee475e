"""Preflight: checks that need the world, run before anything starts.

Each check is a `Check` (a name and a probe); `run_checks` runs a list of them
concurrently, each under a time limit, and returns one `CheckResult` per check in the
order given. Turning a job file into a list of checks is the caller's job; this package
reads no configuration.
"""

from labrun.preflight.checks import (
    command_on_path,
    disk_free,
    env_set,
    nearest_existing,
    path_readable,
    path_writable,
)
from labrun.preflight.core import (
    Check,
    CheckResult,
    Probe,
    Verdict,
    failed,
    passed,
    render_text,
    run_checks,
    summary,
    timed_out_result,
    to_json,
    warned,
)
from labrun.preflight.custom import custom_command
from labrun.preflight.network import parse_address, tcp_reachable

__all__ = [
    "Check",
    "CheckResult",
    "Probe",
    "Verdict",
    "command_on_path",
    "custom_command",
    "disk_free",
    "env_set",
    "failed",
    "nearest_existing",
    "parse_address",
    "passed",
    "path_readable",
    "path_writable",
    "render_text",
    "run_checks",
    "summary",
    "tcp_reachable",
    "timed_out_result",
    "to_json",
    "warned",
]
