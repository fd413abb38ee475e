"""The `labrun` command: a thin layer over `labrun.app`. Every error exits with its code.

This module holds the commands that run or change things and the entry point; the
read-only ones are in `cli_views`, the app and shared options in `cli_base`."""

# No `from __future__ import annotations` here: typer would evaluate every command's string
# annotations at each start (eval and compile, 20-40 ms of every labrun command).

import os
import sys
import time
from typing import Annotated, Optional

import typer

from labrun.cli_base import ConfigOpt, RunArg, _lab, app
from labrun.errors import ExitCode, LabrunError


@app.command()
def run(
    job_file: Annotated[str, typer.Argument(help="The job file (TOML).")],
    config: ConfigOpt = None,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="If the job is already running, wait for it (= --if-running wait)."),
    ] = False,
    if_running: Annotated[
        str,
        typer.Option(
            "--if-running",
            help="If the job is already running: fail (exit 75, the default), wait for it, or skip "
            "(exit 0, print nothing: for cron).",
        ),
    ] = "fail",
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only errors and the summary line.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print every attempt's start and end.")
    ] = False,
    plain: Annotated[
        bool, typer.Option("--plain", help="Plain lines even on a terminal (no live bar).")
    ] = False,
    no_preflight: Annotated[
        bool, typer.Option("--no-preflight", help="Start without running the preflight checks.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue the latest unfinished run of the job (if any)."),
    ] = False,
    rerun_failed: Annotated[
        bool,
        typer.Option(
            "--rerun-failed",
            help="Run only the failed, skipped and cancelled tasks of the job's latest finished run "
            "(a new run that keeps its {shared} and its succeeded tasks).",
        ),
    ] = False,
    as_recorded: Annotated[
        bool,
        typer.Option(
            "--as-recorded",
            help="With --resume: keep the job as the run started, not the job file as now written.",
        ),
    ] = False,
) -> int:
    """Run a job to completion. Example: labrun run examples/hello.toml"""
    from labrun.app import IfRunning, RunOptions, run_job
    from labrun.errors import LockHeld, UsageError
    from labrun.states import RunState

    choices = [c.value for c in IfRunning]
    if if_running not in choices:
        raise UsageError(f"--if-running {if_running!r}: expected one of {', '.join(choices)}")
    when_running = IfRunning.WAIT if wait else IfRunning(if_running)
    lab = _lab(config)
    options = RunOptions(
        if_running=when_running,
        quiet=quiet,
        verbose=verbose,
        live=False if plain else None,
        preflight=not no_preflight,
        resume=resume,
        rerun_failed=rerun_failed,
        as_recorded=as_recorded,
    )
    if as_recorded and not resume:
        raise UsageError("--as-recorded goes with --resume: `labrun run --resume --as-recorded JOB.toml`")
    if resume and rerun_failed:
        raise UsageError("--resume continues an unfinished run, --rerun-failed a finished one: pick one")
    try:
        result = run_job(job_file, lab, options)
    except LockHeld:
        if when_running is IfRunning.SKIP:
            return ExitCode.OK  # the running copy does the work; cron mails nothing
        raise
    print(_summary(lab, result.run.id, result.state), flush=True)
    if result.state in (RunState.INTERRUPTED, RunState.CANCELLED):
        return ExitCode.INTERRUPTED
    return ExitCode.OK if result.state is RunState.SUCCEEDED else ExitCode.TASKS_FAILED


def _summary(lab, run_id: int, state) -> str:  # type: ignore[no-untyped-def]
    """The line `run` ends with, read back like `status` reads it."""
    from labrun.app import open_reader
    from labrun.views.build import failed_views, run_view, unmade_names
    from labrun.views.text import summary_line

    reader, _ = open_reader(lab)
    try:
        with reader.snapshot() as snap:
            found = snap.run(run_id)
            assert found is not None
            return summary_line(
                run_view(snap, found), state, failed_views(snap, run_id, 3), unmade_names(snap, run_id)
            )
    finally:
        reader.close()  # before the runner's store: the last to close folds the -wal in


@app.command()
def check(
    job_file: Annotated[str, typer.Argument(help="The job file (TOML).")],
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> int:
    """Validate a job file and run its preflight checks; nothing runs. Example: labrun check job.toml"""
    import json

    from labrun.config.job import load_job
    from labrun.preflight import render_text, summary, to_json
    from labrun.preflight.from_job import preflight

    lab = _lab(config)
    job = load_job(job_file)
    report = preflight(job, lab)
    if as_json:
        print(json.dumps({"job": job.file, **to_json(report.results)}, indent=2))
    else:
        entries = len(job.all_tasks)
        print(f"✓ {job.file}: valid, {entries} task {'entry' if entries == 1 else 'entries'}")
        if report.results:
            print(render_text(report.results))
        print(summary(report.results))
    return ExitCode.OK if report.ok else ExitCode.PREFLIGHT


@app.command()
def cancel(run_ref: RunArg, config: ConfigOpt = None) -> int:
    """Cancel a run: its attempts are stopped and recorded cancelled. Example: labrun cancel last"""
    from labrun.app import find_run, open_store
    from labrun.cancel import cancel_run

    lab = _lab(config)
    store, paths = open_store(lab)
    print(cancel_run(store, paths, lab, find_run(store, run_ref)))
    return ExitCode.OK


@app.command()
def gc(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Remove finished runs that ended before this: 30d, 12h.")
    ] = "30d",
    config: ConfigOpt = None,
) -> int:
    """Remove old finished runs (rows and logs), never a running one, and containers no open
    attempt owns. Example: labrun gc --older-than 30d"""
    from labrun.app import open_store
    from labrun.errors import UsageError
    from labrun.gc import collect, sweep_leftovers
    from labrun.units import format_size, parse_duration

    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise UsageError(f"--older-than {older_than!r}: {exc}") from None
    lab = _lab(config)
    store, paths = open_store(lab)
    done = collect(store, paths, age, time.time())
    left = f", {done.cgroups} cgroup(s) that dead runners left" if done.cgroups else ""
    print(f"removed {done.runs} run(s), {format_size(done.bytes)} of logs{left}")
    removed, problems = sweep_leftovers(store, lab)
    for line in removed:
        print(f"removed {line}: its attempt is no longer open")
    for problem in problems:
        print(f"labrun: {problem}", file=sys.stderr)
    return ExitCode.OK


@app.command()
def init(
    command: Annotated[
        Optional[str],  # noqa: UP045
        typer.Argument(help='The command each task runs, e.g. "python3 train.py {item}".'),
    ] = None,
    items: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--items", help="A file with one item per line: one task each ({item})."),
    ] = None,
    memory: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--memory", help="Memory per attempt, e.g. 2GiB (default 1GiB)."),
    ] = None,
    runtime: Annotated[str, typer.Option("--runtime", help="process, cgroup or docker.")] = "process",
    image: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--image", help="The Docker image (with --runtime docker)."),
    ] = None,
    output: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--output", "-o", help="The file to write (default job.toml; labrun.toml with --lab)."),
    ] = None,
    lab: Annotated[
        bool, typer.Option("--lab", help="Write labrun.toml instead: probe this machine and the hosts given.")
    ] = False,
    ssh_config: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--ssh-config", help="With --lab: an ssh config file (-F) for the hosts."),
    ] = None,
    hosts: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Argument(help="With --lab: SSH destinations to probe, e.g. alice@gpu-box.", show_default=False),
    ] = None,
) -> int:
    """Write a commented job file (or with --lab, labrun.toml) to start from; never overwrites.
    Example: labrun init "python3 train.py {item}" --items grid.txt --memory 2GiB"""
    from labrun.errors import UsageError

    if lab:
        from labrun.init_lab import write_lab_file

        targets = ([command] if command else []) + list(hosts or [])
        config = os.path.abspath(ssh_config) if ssh_config else None
        print(write_lab_file(output or "labrun.toml", targets, config, _lab(None).state_dir))
        return ExitCode.OK
    if hosts:
        raise UsageError(f"unexpected arguments {' '.join(hosts)}: quote the command as one argument")
    from labrun.init_job import JobRequest, write_job_file

    request = JobRequest(command or "", output or "job.toml", items, memory, runtime, image)
    print(write_job_file(request))
    return ExitCode.OK


@app.command()
def schema(
    lab: Annotated[
        bool, typer.Option("--lab", help="The schema of labrun.toml (the lab and its nodes) instead.")
    ] = False,
) -> int:
    """Print the JSON Schema of job files (for editors). Example: labrun schema > labrun.schema.json"""
    import json

    if lab:
        from labrun.backends.registry import lab_schema

        print(json.dumps(lab_schema(), indent=2))
        return ExitCode.OK
    from labrun.config.jsonschema import json_schema

    print(json.dumps(json_schema(), indent=2))
    return ExitCode.OK


def main(argv: list[str] | None = None) -> None:
    """Entry point: never a traceback for user errors; exit codes as in the README."""
    try:
        code = app(args=argv, standalone_mode=False)
    except LabrunError as exc:
        print(f"labrun: {exc}" if "\n" not in str(exc) else f"labrun: errors:\n{exc}", file=sys.stderr)
        code = exc.exit_code
    except typer.Abort:
        code = ExitCode.INTERRUPTED
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.TyperException as exc:  # a usage error: bad option, missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print(f"labrun: {exc}", file=sys.stderr)
        code = ExitCode.CONFIG
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
    except BrokenPipeError:
        code = ExitCode.OK
    except Exception as exc:  # a bug: one line, and the way to get details
        if os.environ.get("LABRUN_DEBUG"):
            raise
        print(
            f"labrun: internal error (a bug in labrun): {type(exc).__name__}: {exc} "
            "(rerun with LABRUN_DEBUG=1 for the traceback, and report it with the command line)",
            file=sys.stderr,
        )
        code = ExitCode.INTERNAL
    sys.exit(code if isinstance(code, int) else 0)


from labrun import cli_views  # noqa: E402,F401 - registers the read-only commands on `app`
