"""Checks, their results, running them concurrently under a time limit, and rendering.

A `Check` is a name and a probe. The probe gets the per-check time limit so that checks
that can stop themselves (a TCP connect, a custom command) do so and clean up; the
runner still stops waiting for any probe that does not answer in time, because some
calls (DNS, `statvfs` on a hung NFS mount) cannot be interrupted from Python.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Verdict:
    """What a probe observed: whether it passed, what it found, and what to do if not."""

    ok: bool
    found: str
    fix: str = ""
    warning: bool = False  # ok, but worth saying: e.g. an offline node the run can do without


def passed(found: str) -> Verdict:
    return Verdict(True, found, "")


def failed(found: str, fix: str) -> Verdict:
    return Verdict(False, found, fix)


def warned(found: str, fix: str = "") -> Verdict:
    return Verdict(True, found, fix, warning=True)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    found: str  # what was observed
    fix: str  # one concrete next step; empty when ok (a warning may have one)
    seconds: float
    warning: bool = False  # passed with a reservation: shown with `!`, does not stop a run


Probe = Callable[[float], Verdict]  # gets the time limit in seconds


@dataclass(frozen=True)
class Check:
    name: str
    probe: Probe

    def run(self, timeout: float) -> CheckResult:
        """Runs the probe in this thread; a probe that raises is a failed check, not a crash."""
        start = time.monotonic()
        try:
            verdict = self.probe(timeout)
        except Exception as exc:  # a bug in one probe must not hide the other results
            verdict = failed(
                f"the check itself raised {type(exc).__name__}: {exc}",
                "report this as a labrun bug, with the job file",
            )
        seconds = time.monotonic() - start
        return CheckResult(self.name, verdict.ok, verdict.found, verdict.fix, seconds, verdict.warning)


# Probes that enforce the limit themselves report slightly after it; this grace keeps the
# runner from answering "no answer" for them while they are still killing their process.
_GRACE = 1.0


def timed_out_result(name: str, timeout: float) -> CheckResult:
    return CheckResult(
        name,
        False,
        f"no answer within {timeout:g}s",
        "find out why it hangs (a network mount, a firewall, a slow service), "
        "or raise the preflight time limit",
        timeout,
    )


class _Slots:
    """The results of one `run_checks` call, filled in by worker threads as they finish."""

    def __init__(self, n: int) -> None:
        self.results: list[CheckResult | None] = [None] * n
        self.changed = threading.Condition()

    def fill(self, index: int, result: CheckResult) -> None:
        with self.changed:
            if self.results[index] is None:  # a check given up on stays given up on
                self.results[index] = result
            self.changed.notify_all()


def run_checks(checks: Sequence[Check], timeout: float, workers: int | None = None) -> list[CheckResult]:
    """Runs every check concurrently, each under `timeout` seconds; results in input order.

    A check that does not answer in time is reported as failed ("no answer within Ns")
    and abandoned: its thread is a daemon thread, so it cannot keep the process alive.
    """
    limit = workers if workers is not None else min(32, max(1, len(checks)))
    if limit < 1:
        raise ValueError(f"workers must be at least 1, got {limit}")
    slots = _Slots(len(checks))
    pending = list(range(len(checks)))
    pending.reverse()  # popped from the end: input order
    running: dict[int, float] = {}  # index -> deadline
    with slots.changed:
        while pending or running:
            while pending and len(running) < limit:
                index = pending.pop()
                running[index] = time.monotonic() + timeout + _GRACE
                _start(checks[index], index, timeout, slots)
            now = time.monotonic()
            for index, deadline in list(running.items()):
                if slots.results[index] is not None:
                    del running[index]
                elif now >= deadline:
                    slots.results[index] = timed_out_result(checks[index].name, timeout)
                    del running[index]
            if running and (not pending or len(running) >= limit):
                slots.changed.wait(max(0.0, min(running.values()) - now))
    return [r for r in slots.results if r is not None]


def _start(check: Check, index: int, timeout: float, slots: _Slots) -> None:
    thread = threading.Thread(
        target=lambda: slots.fill(index, check.run(timeout)),
        name=f"preflight-{check.name}",
        daemon=True,
    )
    thread.start()


def render_text(results: Sequence[CheckResult], name_cap: int = 40) -> str:
    """One line per check: ✓/!/✗, the name, what was found, and (failed or warned) the fix.

    Names are padded to the longest of them, up to `name_cap`; a longer name (a deep
    path) stands alone on its line, whole, and what was found goes on the next line in
    the same column, so the columns stay aligned and no path is cut."""
    width = min(max((len(r.name) for r in results), default=0), name_cap)
    lines = []
    for r in results:
        mark = "✗" if not r.ok else ("!" if r.warning else "✓")
        text = r.found
        if (not r.ok or r.warning) and r.fix:
            text += f" — fix: {r.fix}"
        if len(r.name) > width:
            lines += [f"{mark} {r.name}", f"  {'':<{width}}  {text}"]
        else:
            lines.append(f"{mark} {r.name:<{width}}  {text}")
    return "\n".join(lines)


def summary(results: Sequence[CheckResult]) -> str:
    bad = sum(1 for r in results if not r.ok)
    warned = sum(1 for r in results if r.ok and r.warning)
    note = f", {warned} with a warning" if warned else ""
    if bad == 0:
        return f"all {len(results)} check{'s' if len(results) != 1 else ''} passed{note}"
    return f"{bad} of {len(results)} checks failed{note}"


def to_json(results: Sequence[CheckResult]) -> dict[str, object]:
    """A JSON-serialisable report: overall ok, and every check with its fields."""
    return {
        "ok": all(r.ok for r in results),
        "checks": [{**asdict(r), "seconds": round(r.seconds, 4)} for r in results],
    }
