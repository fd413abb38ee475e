"""The `labrun` commands that read a state directory and change nothing: status, runs,
nodes, logs, why, report, serve (registered on the app of `cli_base`)."""

# No `from __future__ import annotations` here: typer would evaluate every command's string
# annotations at each start (eval and compile, 20-40 ms of every labrun command).

import os
import shlex
import shutil
import sys
import time
from typing import Annotated, Optional

import typer

from labrun.cli_base import RUN_HELP, AttemptOpt, ConfigOpt, RunArg, TaskArg, _columns, _lab, app
from labrun.errors import ExitCode


@app.command()
def status(
    run_ref: Annotated[str, typer.Argument(help=RUN_HELP)] = "last",
    task: Annotated[
        Optional[str],  # noqa: UP045 - typer reads the annotation at run time on 3.10
        typer.Argument(help="Only this task: `0` or `setup` (task 0), `report`, `resize[3]`."),
    ] = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable, streamed.")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="List every task, also on large runs.")] = False,
    events: Annotated[
        bool,
        typer.Option("--events", help="Every transition with its time and cause: the run's, or TASK's."),
    ] = False,
) -> int:
    """What happened in a run, per task and attempt. Example: labrun status --events last 'resize[3]'"""
    from labrun.app import find_run, find_task, open_reader
    from labrun.backends.view import queued
    from labrun.views import build
    from labrun.views.json import write_events_json, write_status_json
    from labrun.views.text import write_events, write_status_table

    lab = _lab(config)
    reader, _ = open_reader(lab)
    with reader.snapshot() as snap:  # one consistent view: counts agree with rows mid-run
        found = find_run(snap, run_ref)
        row = None if task is None else find_task(snap, found, task)
        if events:
            story = build.events_view(snap, found, row)
            (write_events_json if as_json else write_events)(story, sys.stdout)
        else:
            view = (
                build.status_view(snap, found, show_all or as_json)
                if row is None
                else build.one_task_status(snap, found, row)
            )
            if as_json:
                write_status_json(view, sys.stdout)
            else:
                write_status_table(view, sys.stdout, _columns())
                # attempts a cluster still holds in its queue, with its reason
                for waiting, attempt, why in queued(lab, snap, found.id, row):
                    print(f"{waiting.name} #{attempt.n} on {attempt.node}: {why}")
    return ExitCode.OK


@app.command()
def runs(
    config: ConfigOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many of the latest runs.")] = 20,
    job: Annotated[Optional[str], typer.Option("--job", help="Only the runs of this job.")] = None,  # noqa: UP045
) -> int:
    """List the latest runs. Example: labrun runs -n 5 --job hello"""
    from labrun.app import open_reader
    from labrun.views.build import runs_view
    from labrun.views.text import write_runs_table

    reader, _ = open_reader(_lab(config))
    with reader.snapshot() as snap:
        write_runs_table(runs_view(snap, limit, job), sys.stdout, _columns())
    return ExitCode.OK


@app.command()
def nodes(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> int:
    """Each node's state, resources, GPUs, runtimes and running attempts. Example: labrun nodes"""
    import json

    from labrun.app import open_store
    from labrun.backends.view import node_states, render_nodes

    lab = _lab(config)
    store, _ = open_store(lab)
    rows = node_states(lab, store)
    print(json.dumps(rows, indent=2) if as_json else render_nodes(rows))
    return ExitCode.OK


@app.command()
def logs(
    run_ref: RunArg,
    task: TaskArg,
    attempt: AttemptOpt = None,
    stderr: Annotated[bool, typer.Option("--stderr", help="Show stderr instead of stdout.")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing while the attempt runs.")
    ] = False,
    config: ConfigOpt = None,
) -> int:
    """Print the stdout (or stderr) of an attempt. Example: labrun logs last 'resize[3]' --stderr"""
    from labrun.app import find_run, find_task, open_reader, wait_for_attempt
    from labrun.errors import UsageError

    reader, paths = open_reader(_lab(config))
    with reader.snapshot() as snap:
        found = find_run(snap, run_ref)
        row = find_task(snap, found, task)
        attempts = snap.attempts(row.id)
    if not attempts and follow:
        print(
            f"labrun: task {row.name} of run {found.id} has not started yet ({row.state.value}); "
            "waiting for its first attempt (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )
        attempts = wait_for_attempt(reader, row.id)
    if not attempts:
        with reader.snapshot() as snap:
            row = snap.task(row.id)
        if row.state.terminal:
            raise UsageError(
                f"task {row.name} of run {found.id} ended {row.state.value} without an attempt: no log"
            )
        raise UsageError(
            f"task {row.name} of run {found.id} has not started yet ({row.state.value}): no log yet; "
            f"`labrun logs -f {found.id} {shlex.quote(row.name)}` waits for it"
        )
    chosen = attempts[-1] if attempt is None else next((a for a in attempts if a.n == attempt), None)
    if chosen is None:
        raise UsageError(f"task {row.name} has attempts 1 to {attempts[-1].n}, not {attempt}")
    path = paths.log(found.id, row.name, chosen.n, "stderr" if stderr else "stdout")

    def ended() -> bool:
        with reader.snapshot() as snap:
            return snap.attempt(chosen.id).outcome is not None

    _print_log(path, follow, ended)
    return ExitCode.OK


def _print_log(path: str, follow: bool, ended: object) -> None:
    out = sys.stdout.buffer
    while follow and not os.path.exists(path) and not (callable(ended) and ended()):
        time.sleep(0.2)  # the attempt is being launched: its log appears in a moment
    if not os.path.exists(path):
        print(f"(no log at {path})", file=sys.stderr)
        return
    with open(path, "rb") as handle:
        while True:
            shutil.copyfileobj(handle, out)
            out.flush()
            if not follow or (callable(ended) and ended()):
                shutil.copyfileobj(handle, out)
                return
            time.sleep(0.2)


@app.command()
def why(
    run_ref: RunArg,
    task: TaskArg,
    attempt: AttemptOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
    config: ConfigOpt = None,
) -> int:
    """Why a task failed: the cause, the evidence, and the next step. Example: labrun why last 0"""
    import json

    from labrun.app import find_run, find_task, job_of, open_reader
    from labrun.backends.view import queued
    from labrun.diagnose import diagnose
    from labrun.fit import task_with_item
    from labrun.masking import masker
    from labrun.views.build import task_view
    from labrun.why import record_for

    lab = _lab(config)
    reader, paths = open_reader(lab)
    with reader.snapshot() as snap:
        found = find_run(snap, run_ref)
        row = find_task(snap, found, task)
        view = task_view(snap, row)
        waits = queued(lab, snap, found.id, row) if attempt is None else []
    if waits and not as_json:  # it has not started: the queue's reason is the answer
        for _, waiting, why in waits:
            print(f"run {found.id}, task {task_with_item(row.name, row.item)} attempt {waiting.n}: {why}")
        return ExitCode.OK
    job = job_of(found)
    mask = masker(job.secret_names)
    diagnosis = diagnose(record_for(paths, found, view, job.task(row.spec).timeout, attempt, mask))
    if as_json:
        print(
            json.dumps({"run": found.id, "task": row.name, "item": row.item, **diagnosis.to_json()}, indent=2)
        )
    else:
        name = task_with_item(row.name, row.item)
        print(f"run {found.id}, task {'0 ' if row.seq == 0 else ''}{name}: {diagnosis.render_text()}")
    return ExitCode.OK


@app.command()
def report(
    run_ref: Annotated[str, typer.Argument(help=RUN_HELP)] = "last",
    config: ConfigOpt = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="html (one self-contained file), or tsv or json: one row per attempt (task, item, "
            "attempt, node, runtime, outcome, exit, signal, start, end, duration, cpu, peak, limit).",
        ),
    ] = "html",
    output: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--output",
            "-o",
            help="Write to this file (0600); `-` the standard output. Default: "
            "labrun-report-RUN.html here for html, the standard output for tsv and json.",
        ),
    ] = None,
) -> int:
    """A run as one HTML file (why, timeline, memory, suggested requests, tasks), or its attempts
    as TSV/JSON like Nextflow's trace. Example: labrun report last -o run.html"""
    from labrun.app import open_reader
    from labrun.report import FORMATS, write_report

    if fmt not in FORMATS:
        from labrun.errors import UsageError

        raise UsageError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    reader, paths = open_reader(_lab(config))
    wrote = write_report(reader, paths, run_ref, fmt, output)
    if wrote is not None:
        print(f"wrote {wrote} ({os.path.getsize(wrote)} bytes)")
    return ExitCode.OK


@app.command()
def serve(
    port: Annotated[int, typer.Option("--port", help="The port (0: any free one).")] = 8765,
    host: Annotated[
        str, typer.Option("--host", help="A loopback address: 127.0.0.1 (default), ::1 or localhost.")
    ] = "127.0.0.1",
    state_dir: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--state-dir", help="The state directory to show (default: labrun.toml's state_dir)."),
    ] = None,
    config: ConfigOpt = None,
) -> int:
    """A read-only dashboard on this machine: the runs, each run's report, live while it runs.
    Loopback only (no login); Ctrl-C stops it. Example: labrun serve --port 8765"""
    from labrun.paths import StatePaths
    from labrun.serve import serve as serve_forever

    root = state_dir if state_dir is not None else _lab(config).state_dir
    return serve_forever(StatePaths(os.path.abspath(root)), host, port, sys.stdout)
