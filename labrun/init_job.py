"""`labrun init COMMAND`: a commented job file that `labrun check` passes, to start from.

Values are written by tomli-w (quoting a command right is its job, not a format string's);
the comments around them say what each key does and what to try next. The file is parsed
back before it is written, so what `init` writes is a job labrun accepts.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from dataclasses import dataclass

import tomli_w

from labrun.config.job import parse_job
from labrun.config.schema import NAME_RE
from labrun.errors import ConfigError, UsageError
from labrun.units import parse_size

RUNTIMES = ("process", "cgroup", "docker")


@dataclass(frozen=True)
class JobRequest:
    command: str
    output: str = "job.toml"
    items_file: str | None = None
    memory: str | None = None
    runtime: str = "process"
    image: str | None = None
    name: str | None = None


def _value(key: str, value: object) -> str:
    """`key = value` as TOML, quoted and escaped by tomli-w."""
    return tomli_w.dumps({key: value}).strip()


def inline_list(key: str, values: list[str]) -> str:
    """`key = ["a", "b"]` on one line (tomli-w puts each element on its own)."""
    return f"{key} = [{', '.join(_value('x', v)[4:] for v in values)}]"


def safe_name(text: str, fallback: str) -> str:
    """A job or task name labrun accepts (letters, digits, '-', '_') made from `text`."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:40]
    return name if name and NAME_RE.match(name) else fallback


def task_name(command: str) -> str:
    """`python3 train.py {item}` → train: the script if there is one, else the program."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    script = next((w for w in words[1:] if re.search(r"\.\w+$", w) and "{" not in w), None)
    base = os.path.splitext(os.path.basename(script or (words[0] if words else "task")))[0]
    return safe_name(base, "task")


def read_items(path: str) -> list[str]:
    """One item per line of `path`; blank lines and lines starting with # left out."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
    except OSError as exc:
        raise UsageError(
            f"--items {path}: cannot read it ({exc.strerror}); give a file with one item per line"
        ) from None
    items = [line for line in lines if line and not line.startswith("#")]
    if not items:
        raise UsageError(f"--items {path}: no items in it (one per line; blank and # lines are skipped)")
    return items


def _check_request(req: JobRequest) -> None:
    if not req.command.strip():
        raise UsageError('give the command to run: labrun init "python3 train.py {item}" --items grid.txt')
    if req.runtime not in RUNTIMES:
        raise UsageError(f"--runtime {req.runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if req.runtime == "docker" and not req.image:
        raise UsageError("--runtime docker needs --image NAME:TAG (the image each attempt runs in)")
    if req.memory is not None:
        try:
            parse_size(req.memory)
        except ValueError as exc:
            raise UsageError(f"--memory {req.memory!r}: {exc}") from None
    if req.items_file is None and "{item}" in req.command:
        raise UsageError("the command uses {item}: give --items FILE with one item per line")
    if os.path.lexists(req.output):
        raise UsageError(
            f"{req.output} exists; labrun init never overwrites a file: "
            "write to another with -o NEW.toml, or move it away first"
        )


def job_name(req: JobRequest) -> str:
    """The file's name (jobs/sweep.toml → sweep); for the default job.toml, the task's."""
    stem = os.path.splitext(os.path.basename(req.output))[0]
    return req.name or (task_name(req.command) if stem == "job" else safe_name(stem, "job"))


def job_text(req: JobRequest, items: list[str] | None) -> str:
    job = job_name(req)
    program = _program(req.command)
    lines = [
        f"# A labrun job, written by `labrun init` on {time.strftime('%Y-%m-%d')}.",
        f"#   labrun check {shlex.quote(req.output)}  checks it and its preflight; nothing runs",
        f"#   labrun run {shlex.quote(req.output)}  runs it (--resume continues an interrupted run)",
        '# Every key and its default: README, "The job file"; for editors: `labrun schema`.',
        "",
        "[job]",
        _value("name", job) + "  # runs, locks and `labrun status last:NAME` go by this name",
        "# max_parallel = 4  # at most this many attempts at once (default: what the nodes fit)",
        "",
        "[defaults]",
        "retries = 3  # a failed attempt is tried again after a backoff; one killed for memory, with more",
        '# timeout = "2h"  # an attempt running longer is stopped and counts as failed',
        "",
        "[[tasks]]",
        _value("name", task_name(req.command)),
        _value("command", req.command) + "  # a string runs through /bin/sh; {item} is filled in, quoted",
    ]
    if items is not None:
        first = f"{task_name(req.command)}[0]"
        lines.append(f"# one task per line of {req.items_file}: `labrun status` names them {first}, ...")
        lines.append(_value("items", items))
    mem_note = (
        "what an attempt may use" if req.runtime != "process" else "reserved per attempt (not enforced)"
    )
    lines.append(_value("memory", req.memory or "1GiB") + f"  # {mem_note}")
    lines.append(_value("runtime", req.runtime) + "  # process, cgroup (limits enforced) or docker")
    if req.image:
        lines.append(_value("image", req.image))
    lines += [
        '# outputs = ["out/{item}.done"]  # must exist after exit 0, else the attempt is retried',
        "",
        "[preflight]  # checked by `labrun check`, and before every `labrun run`",
    ]
    if program:
        lines.append(inline_list("commands", [program]) + "  # must be on PATH")
    lines.append('# paths = ["data/"]  # must exist and be readable')
    return "\n".join(lines) + "\n"


def _program(command: str) -> str | None:
    """The program a command starts, when it is a plain name (not a shell construct)."""
    try:
        first = shlex.split(command)[0]
    except (ValueError, IndexError):
        return None
    return first if re.match(r"^[A-Za-z0-9_.+-]+$", first) and "=" not in first else None


def write_job_file(req: JobRequest) -> str:
    """Writes the job file; returns what to tell the user. UsageError if it cannot."""
    _check_request(req)
    items = read_items(req.items_file) if req.items_file is not None else None
    text = job_text(req, items)
    try:
        parse_job(text, os.path.abspath(req.output))
    except ConfigError as exc:  # e.g. an item list labrun refuses: say so, write nothing
        raise UsageError(f"the job would not be valid, nothing was written:\n{exc}") from None
    try:
        with open(req.output, "x", encoding="utf-8") as handle:  # "x": never overwrite, even racing
            handle.write(text)
    except FileExistsError:
        raise UsageError(f"{req.output} exists; labrun init never overwrites a file") from None
    except OSError as exc:
        raise UsageError(f"cannot write {req.output}: {exc.strerror}") from None
    fanned = f", {len(items)} items from {req.items_file}" if items is not None else ""
    return f"wrote {req.output}: job {job_name(req)}{fanned}; next: labrun check {shlex.quote(req.output)}"
