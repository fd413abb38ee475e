"""labrun: a batch runner for a workstation or a small lab.

A job is one TOML file; one process with an embedded SQLite queue runs its tasks.
The command line (`labrun.cli`) is a thin layer over this package.
"""

__version__ = "0.1.0"
