"""Task specs → task instances of a run, and a task instance + attempt → a `Launch`.

Placeholders ({item}, {index}, {run}, {attempt}, {shared}, {task}) are filled here.
In a string command each value is shell-quoted where it stands (also inside "..." or
'...'), so an item `a; rm -rf ~` or `x"; rm -rf ~; "` stays one argument. A string
command with no shell syntax at all is split and exec'd directly:
the same meaning, one `/bin/sh` fewer per attempt.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping

from labrun.config.job import PLACEHOLDERS, JobSpec, TaskSpec
from labrun.config.locate import locate, nearest
from labrun.config.schema import FileItems, FromItems, RangeItems
from labrun.errors import ConfigError, Problem
from labrun.isolation import launch_options
from labrun.items_file import FileItem, ItemsFileError, fields_of, missing_fields, read_items
from labrun.model import Launch
from labrun.paths import StatePaths, where_it_is
from labrun.rows import RunRow, TaskRow
from labrun.secrets import secret_values, withheld
from labrun.states import TaskState
from labrun.store import NewTask

_PLACEHOLDER = re.compile(r"(?<![${])\{(item\.[A-Za-z0-9_-]+|" + "|".join(PLACEHOLDERS) + r")\}")
_ITEM_FIELD = re.compile(r"(?<![${])\{item\.([A-Za-z0-9_-]+)\}")
# Anything a shell would treat specially; without it, splitting with shlex is exact.
_SHELL_SYNTAX = re.compile(r"[|&;<>()$`\\*?\[\]#~=%!{}\n]")
# Words only a shell understands (`exit 3`, `cd dir`, `time x`) must still go through
# /bin/sh; `true`, `test` or `kill` are programs too, with the same meaning.
_SHELL_WORDS = frozenset(
    (  # noqa: SIM905 - a word list reads best as words
        "! . : [[ alias bg break case cd command continue do done elif else esac eval exec exit "
        "export fc fg for function getopts hash if jobs local read readonly return set shift "
        "source then time times trap type ulimit umask unalias unset until wait while"
    ).split()
)


def instances(job: JobSpec) -> Iterator[NewTask]:
    """(seq, name, spec, item, idx, state, memory) for every task of a new run, in order.

    Task 0 (setup) is seq 0. Tasks with anything upstream start `waiting`; a fan-out over
    task 0's manifest gets its rows only when task 0 succeeds (`fanout_rows`).
    """
    if job.setup is not None:
        yield (0, job.setup.name, job.setup.name, None, None, TaskState.READY, job.setup.memory)
    seq = 0
    for spec in job.tasks:
        state = TaskState.WAITING if job.setup is not None or spec.depends_on else TaskState.READY
        if isinstance(spec.items, FromItems):
            continue
        if spec.items is None:
            seq += 1
            yield (seq, spec.name, spec.name, None, None, state, spec.memory)
            continue
        values: Iterator[str]
        if isinstance(spec.items, RangeItems):
            values = map(str, range(spec.items.start, spec.items.stop, spec.items.step))
        elif isinstance(spec.items, FileItems):
            values = (item.value for item in file_items(job, spec))
        else:
            values = iter(spec.items)
        for index, item in enumerate(values):
            seq += 1
            name = f"{spec.name}[{index}]"
            yield (seq, name, spec.name, item, index, state, spec.memory)


def used_fields(spec: TaskSpec) -> set[str]:
    """The NAMEs of `{item.NAME}` in the task's command, env values and outputs."""
    texts = [spec.command] if isinstance(spec.command, str) else list(spec.command)
    texts += [*spec.env.values(), *spec.outputs]
    return {m.group(1) for text in texts for m in _ITEM_FIELD.finditer(text)}


def file_items(job: JobSpec, spec: TaskSpec) -> list[FileItem]:
    """The rows of a task's `items = { file = ... }`, checked against the fields it uses."""
    assert isinstance(spec.items, FileItems)
    path = os.path.join(job.workdir, spec.items.path)
    try:
        items = read_items(path)
        problem = missing_fields(items, used_fields(spec))
    except ItemsFileError as exc:
        problem = str(exc)
    if problem is not None:
        index = job.tasks.index(spec)
        line, column = nearest(locate(job.text), ("tasks", index, "items"))
        message = f"items file {path}: {problem}"
        raise ConfigError([Problem(job.file, line, column, f"tasks[{index}].items", message)])
    return items


def fanout_rows(spec: TaskSpec, lines: Iterable[str], after_seq: int) -> Iterator[NewTask]:
    """Rows of a fan-out over task 0's manifest: one per non-empty line, `waiting`."""
    index = 0
    for line in lines:
        item = line.strip()
        if item:
            name = f"{spec.name}[{index}]"
            yield (after_seq + index + 1, name, spec.name, item, index, TaskState.WAITING, spec.memory)
            index += 1


def placeholder_values(
    paths: StatePaths, run: RunRow, task: TaskRow, attempt: int, ran_in: str | None = None
) -> dict[str, str]:
    """The values of the placeholders for one attempt. `ran_in`: the workdir, for an attempt
    that already ran (adopted, or a fan-out's source): its `{attempt_dir}` is where it was."""
    attempt_dir = attempt_output_dir(paths.id, run.id, task.name, attempt)
    if ran_in is not None:
        # an attempt started by an older labrun: its directory had no state id in its path
        before = os.path.join("attempts", f"run-{run.id}", _part(task.name), str(attempt))
        attempt_dir = where_it_is(attempt_dir, before, base=ran_in)
    values = {
        "item": task.item if task.item is not None else "",
        "index": str(task.idx) if task.idx is not None else "",
        "run": str(run.id),
        "attempt": str(attempt),
        "shared": paths.shared_dir(run.id),
        "task": task.name,
        "attempt_dir": attempt_dir,  # absolute in launch_for
    }
    for name, value in fields_of(task.item).items():  # a row of an items file
        values[f"item.{name}"] = value
    return values


def attempt_output_dir(state: str, run_id: int, task: str, attempt: int) -> str:
    """`{attempt_dir}`: the attempt's own directory for outputs, relative to the workdir, so
    it names the same place on every node; made before the attempt starts, and kept. Under
    the state directory's id: two state directories using one workdir both have a run 1,
    and a state directory made again after one was deleted starts at run 1 again; neither
    may share an attempt's directory, nor find the outputs an older attempt left there."""
    return os.path.join("attempts", state, f"run-{run_id}", _part(task), str(attempt))


def _part(task: str) -> str:
    return task.replace("/", "_")


def _uses_attempt_dir(spec: TaskSpec) -> bool:
    texts = [spec.command] if isinstance(spec.command, str) else list(spec.command)
    return any("{attempt_dir}" in t for t in (*texts, *spec.env.values(), *spec.outputs))


def outputs_for(spec: TaskSpec, values: Mapping[str, str], workdir: str) -> tuple[str, ...]:
    """Declared outputs, placeholders filled, relative paths against the workdir."""
    return tuple(os.path.join(workdir, _fill(p, values, quote=False)) for p in spec.outputs)


def _exported(key: str) -> str:
    """LABRUN_ITEM, LABRUN_RUN, ...; a row's field `item.lr` is LABRUN_ITEM_LR."""
    return "LABRUN_" + key.upper().replace(".", "_").replace("-", "_")


def _fill(template: str, values: Mapping[str, str], quote: bool) -> str:
    if quote:
        return _fill_shell(template, values)

    def one(match: re.Match[str]) -> str:
        value = values.get(match.group(1))
        if value is None:  # a field this row lacks (checked when the run is made): left as written
            return match.group(0)
        return value

    return _PLACEHOLDER.sub(one, template)


def _fill_shell(command: str, values: Mapping[str, str]) -> str:
    """Fill a /bin/sh command line so that each value stays one literal word piece.

    A value is inserted outside of any quotes, as its own single-quoted piece: inside
    "..." the double quote is closed before it and reopened after it ("a "'v'" b"), inside
    '...' likewise. The shell joins the pieces into one word, and nothing in the value
    (`"`, `$(...)`, a backquote) is ever interpreted: `"{item}"` with an item
    `x"; rm -rf ~; "` is one argument, not a command."""
    out: list[str] = []
    quote = ""  # the quote we are inside: "", "'" or '"'
    i = 0
    while i < len(command):
        match = _PLACEHOLDER.match(command, i)
        if match is not None:
            value = values.get(match.group(1))
            # a field this row lacks (checked when the run is made): left as written
            out.append(match.group(0) if value is None else f"{quote}{shlex.quote(value)}{quote}")
            i = match.end()
            continue
        char = command[i]
        if char == "\\" and quote != "'" and i + 1 < len(command):
            out.append(command[i : i + 2])
            i += 2
            continue
        if char in "'\"" and quote in ("", char):
            quote = "" if quote == char else char
        out.append(char)
        i += 1
    return "".join(out)


def argv_for(command: str | tuple[str, ...], values: Mapping[str, str]) -> tuple[str, ...]:
    if isinstance(command, tuple):
        return tuple(_fill(part, values, quote=False) for part in command)
    bare = _PLACEHOLDER.sub("", command)
    if not _SHELL_SYNTAX.search(bare):
        try:
            words = shlex.split(command)
        except ValueError:
            words = []  # unbalanced quotes: let the shell report it
        if words and words[0] not in _SHELL_WORDS:
            return tuple(_fill(part, values, quote=False) for part in words)
    return ("/bin/sh", "-c", _fill(command, values, quote=True))


def launch_for(
    paths: StatePaths,
    run: RunRow,
    spec: TaskSpec,
    task: TaskRow,
    attempt: int,
    attempt_id: int,
    workdir: str,
    memory: int,
    secret_names: Iterable[str] = (),
    adopted: bool = False,
) -> Launch:
    """The attempt's launch; `secret_names`: every secret the job declares (`JobSpec.secret_names`);
    `adopted`: the attempt runs already (a resume adopts it), its directory is where it is."""
    values = placeholder_values(paths, run, task, attempt, workdir if adopted else None)
    values["attempt_dir"] = os.path.join(workdir, values["attempt_dir"])
    if _uses_attempt_dir(spec) and not adopted:
        with contextlib.suppress(OSError):  # else the command says it cannot write there
            os.makedirs(values["attempt_dir"], exist_ok=True)
    env = {name: _fill(value, values, quote=False) for name, value in spec.env.items()}
    env.update({_exported(key): value for key, value in values.items()})
    env.update(secret_values(spec))  # from labrun's environment; never stored
    log = paths.log if adopted else paths.attempt_log  # an adopted attempt's logs are where it began them
    return Launch(
        attempt_id=attempt_id,
        run_id=run.id,
        task_name=task.name,
        attempt=attempt,
        argv=argv_for(spec.command, values),
        env=env,
        workdir=workdir,
        stdout_path=log(run.id, task.name, attempt, "stdout"),
        stderr_path=log(run.id, task.name, attempt, "stderr"),
        cpus=spec.cpus,
        memory=memory,
        outputs=outputs_for(spec, values, workdir),
        options=launch_options(spec, values["shared"]),
        withheld=withheld(spec, secret_names),
        time_limit=spec.timeout + spec.grace if spec.timeout is not None else None,
    )
