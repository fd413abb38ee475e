"""What every `labrun` command shares: the Typer app, the common options, the lab loader."""

from __future__ import annotations

import shutil
import sys
from typing import Annotated, Optional

import typer

from labrun.errors import ExitCode

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
TaskArg = Annotated[str, typer.Argument(help="A task: `0` or `setup` (task 0), `report`, `resize[3]`.")]
AttemptOpt = Annotated[
    Optional[int],  # noqa: UP045 - typer reads the annotation at run time on 3.10
    typer.Option("--attempt", "-a", help="Attempt number (default: the latest)."),
]


def _columns() -> int | None:
    """The terminal's width when printing to one; None when piped (nothing is cut)."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def _lab(config: str | None):  # type: ignore[no-untyped-def]
    from labrun.config.lab import load_lab

    return load_lab(config)
