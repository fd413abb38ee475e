"""`[notify]`: tell someone how a run ended: a command with the summary on stdin, or a mail.

Which runs are worth a word is `event_of`'s decision (pure): a failed run is a
`failure`; a succeeded run is a `recovery` when the job's previous finished run did not
succeed, else a `success`. Interrupted and cancelled runs were stopped by a person or a
crash and say nothing. A notifier that fails is reported on stderr and never changes
the run's exit code: the run's result is what it is.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Mapping
from itertools import islice
from typing import Any

from labrun.config.job import JobSpec
from labrun.config.preflight import NotifySpec
from labrun.rows import RunRow
from labrun.states import RunState, TaskState
from labrun.store import Store
from labrun.views.build import failed_views, run_view, unmade_names
from labrun.views.text import summary_line

LISTED = 50  # failed tasks named in the summary; the rest are counted
_NOT_OK = (TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED)


def event_of(state: RunState, previous: RunState | None) -> str | None:
    """The notify event for a run that ended `state` after a previous finished run."""
    if state is RunState.FAILED:
        return "failure"
    if state is RunState.SUCCEEDED:
        return "recovery" if previous in (RunState.FAILED, RunState.CANCELLED) else "success"
    return None


def summary(store: Store, run: RunRow, event: str) -> dict[str, Any]:
    """The JSON a notifier gets on stdin."""
    counts = store.counts(run.id)
    bad = islice((t for t in store.tasks(run.id, list(_NOT_OK))), LISTED + 1)
    listed = [{"task": t.name, "item": t.item, "state": t.state.value, "reason": t.reason} for t in bad]
    not_ok = sum(counts.get(s, 0) for s in _NOT_OK)
    return {
        "event": event,
        "job": run.job,
        "job_file": run.job_file,
        "run": run.id,
        "state": run.state.value,
        "host": run.host or socket.gethostname(),
        "created": run.created,
        "ended": run.ended,
        "counts": {s.value: n for s, n in counts.items() if n},
        "tasks": sum(counts.values()),
        "not_succeeded": listed[:LISTED],
        "not_succeeded_unlisted": max(0, not_ok - LISTED),
        "summary": summary_line(
            run_view(store, run), run.state, failed_views(store, run.id, 3), unmade_names(store, run.id)
        ),
        "next_step": f"labrun status {run.id}" if event == "failure" else "",
    }


def notify(job: JobSpec, store: Store, run: RunRow) -> list[str]:
    """Send what `[notify]` asks for about `run`; the problems met, one line each."""
    spec = job.notify
    if spec is None:
        return []
    previous = store.previous_finished_run(run.job, run.id)
    event = event_of(run.state, previous.state if previous is not None else None)
    if event is None or event not in spec.on:
        return []
    payload = summary(store, run, event)
    problems = []
    if spec.command:
        problems += _run_command(spec, job.workdir, payload)
    if spec.email:
        problems += _send_mail(spec, spec.email, payload)
    return problems


def _run_command(spec: NotifySpec, workdir: str, payload: Mapping[str, Any]) -> list[str]:
    assert spec.command is not None
    env = {**os.environ, "LABRUN_EVENT": str(payload["event"]), "LABRUN_RUN": str(payload["run"])}
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", spec.command],
            cwd=workdir,
            env=env,
            input=json.dumps(payload, indent=2).encode(),
            capture_output=True,
            timeout=spec.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return [f"[notify] command did not finish within {spec.timeout:g}s and was killed: {spec.command}"]
    except OSError as exc:
        return [f"[notify] command could not start ({exc.strerror}): {spec.command}"]
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no stderr"]
        return [f"[notify] command exited {done.returncode} ({tail[0][:200]}): {spec.command}"]
    return []


def _send_mail(spec: NotifySpec, address: str, payload: Mapping[str, Any]) -> list[str]:
    sendmail = shutil.which("sendmail") or shutil.which("sendmail", path="/usr/sbin:/usr/lib")
    if sendmail is None:
        return [
            f"[notify] cannot mail {address}: no sendmail on this machine; install a mail transfer "
            "agent (e.g. `apt-get install msmtp-mta`) or use `command`"
        ]
    subject = f"labrun: job {payload['job']} run {payload['run']} {payload['state']} ({payload['event']})"
    lines = [f"To: {address}", f"Subject: {subject}", "Content-Type: text/plain; charset=utf-8", ""]
    lines.append(str(payload["summary"]))
    for task in payload["not_succeeded"]:
        lines.append(f"  {task['task']}: {task['state']}: {task['reason'] or ''}")
    if payload["not_succeeded_unlisted"]:
        lines.append(f"  and {payload['not_succeeded_unlisted']} more")
    if payload["next_step"]:
        lines.append(f"\nNext: {payload['next_step']}, then `labrun why {payload['run']} TASK`")
    message = "\n".join(lines) + "\n"
    try:  # -t: the recipient comes from the To: header, never from an argument
        done = subprocess.run(
            [sendmail, "-t", "-oi"],
            input=message.encode(),
            capture_output=True,
            timeout=spec.timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"[notify] sendmail failed for {address}: {exc}"]
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()[:200]
        return [f"[notify] sendmail exited {done.returncode} for {address}: {err}"]
    return []
