"""The `labrun` command: a thin layer over `labrun.app`. Every error exits with its code."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from typing import Annotated, Optional

import typer

from labrun.errors import ExitCode, LabrunError

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    no_args_is_help=True,
    help="labrun: run a TOML job of tasks on this machine, with retries, and say why anything failed.",
    epilog="Exit codes: 0 all tasks succeeded, 1 some tasks failed, 2 invalid configuration, usage "
    "or state directory, 3 preflight failed, 70 internal error (a bug), 75 another run of the job "
    "holds the lock, 130 interrupted (Ctrl-C, SIGTERM) or cancelled (`labrun cancel`).",
)


def _version(value: bool) -> None:
    if value:
        from labrun import __version__

        print(f"labrun {__version__} (Python {sys.version.split()[0]}, {sys.executable})")
        raise typer.Exit(ExitCode.OK)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print labrun's version and exit."),
    ] = False,
) -> None:
    """labrun: run a TOML job of tasks on this machine, with retries, and say why anything failed."""


ConfigOpt = Annotated[
    Optional[str],  # noqa: UP045 - typer reads the annotation at run time on 3.10
    typer.Option(
        "--config",
        help="labrun.toml to use (default: $LABRUN_CONFIG, ./labrun.toml, ~/.config/labrun/labrun.toml).",
    ),
]
RUN_HELP = "A run id, `last` (the latest run) or `last:JOB` (the latest run of job JOB)."
RunArg = Annotated[str, typer.Argument(help=RUN_HELP)]


def _columns() -> int | None:
    """The terminal's width when printing to one; None when piped (nothing is cut)."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def _lab(config: str | None):  # type: ignore[no-untyped-def]
    from labrun.config.lab import load_lab

    return load_lab(config)


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

    reader, _ = open_reader(_lab(config))
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
                for waiting, attempt, why in queued(_lab(config), snap, found.id, row):
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
    task: Annotated[str, typer.Argument(help="A task: `0` or `setup` (task 0), `report`, `resize[3]`.")],
    attempt: Annotated[
        Optional[int],  # noqa: UP045 - typer reads the annotation at run time on 3.10
        typer.Option("--attempt", "-a", help="Attempt number (default: the latest)."),
    ] = None,
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
    task: Annotated[str, typer.Argument(help="A task: `0` or `setup` (task 0), `report`, `resize[3]`.")],
    attempt: Annotated[
        Optional[int],  # noqa: UP045 - typer reads the annotation at run time on 3.10
        typer.Option("--attempt", "-a", help="Attempt number (default: the latest)."),
    ] = None,
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

    reader, paths = open_reader(_lab(config))
    with reader.snapshot() as snap:
        found = find_run(snap, run_ref)
        row = find_task(snap, found, task)
        view = task_view(snap, row)
        waits = queued(_lab(config), snap, found.id, row) if attempt is None else []
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
