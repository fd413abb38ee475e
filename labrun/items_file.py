"""`items = { file = "grid.csv" }`: one task per row of a CSV file, JSON Lines object, or line.

The format comes from the file's ending: `.csv` (comma) and `.tsv` (tab) have a header
row and give one task per data row; `.jsonl` / `.ndjson` give one task per JSON object;
anything else gives one task per non-empty line. A row's fields are `{item.COLUMN}` in
commands, `env` values and `outputs`, and the item itself (`{item}`, and what `status`
shows) is the row as compact JSON. The file is read when a run is created; its rows are
stored with the run, so a resume never reads it again.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass

from labrun.readfile import NotReadable, read_regular

MAX_BYTES = 256 * 1024 * 1024
FIELD_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")  # what `{item.NAME}` can name


class ItemsFileError(Exception):
    """The items file cannot give tasks; the message names the line and the fix."""


@dataclass(frozen=True)
class FileItem:
    value: str  # `{item}`: the line, or the row as compact JSON
    fields: dict[str, str] | None  # `{item.NAME}`; None for a plain line
    line: int  # where it came from, for messages


def kind_of(path: str) -> str:
    ending = os.path.splitext(path)[1].lower()
    if ending in (".csv", ".tsv"):
        return "csv"
    if ending in (".jsonl", ".ndjson"):
        return "jsonl"
    return "lines"


def read_items(path: str) -> list[FileItem]:
    try:
        raw = read_regular(path, MAX_BYTES)
    except NotReadable as exc:
        raise ItemsFileError(f"cannot read it: {exc}") from None
    if len(raw) > MAX_BYTES:
        raise ItemsFileError(f"it is larger than {MAX_BYTES // 1024**2} MiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ItemsFileError(f"line {line}: not UTF-8 text; save the file as UTF-8") from None
    if "\0" in text:
        raise ItemsFileError(f"line {text[: text.index(chr(0))].count(chr(10)) + 1}: a NUL byte")
    kind = kind_of(path)
    items = _csv(text, "\t" if path.lower().endswith(".tsv") else ",") if kind == "csv" else []
    if kind == "jsonl":
        items = _jsonl(text)
    if kind == "lines":
        items = [FileItem(s, None, n) for n, line in enumerate(text.splitlines(), 1) if (s := line.strip())]
    if not items:
        raise ItemsFileError("it holds no items, so the task would have nothing to run")
    return items


def _csv(text: str, delimiter: str) -> list[FileItem]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return []
        header = [h.strip() for h in header]
        for name in header:
            if not FIELD_NAME_RE.match(name):
                raise ItemsFileError(
                    f"line 1: column {name[:40]!r} is not a name {{item.NAME}} can use "
                    "(letters, digits, '_' and '-'); rename it in the header"
                )
        if len(set(header)) != len(header):
            raise ItemsFileError("line 1: two columns have the same name; rename one in the header")
        items = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if len(row) != len(header):
                raise ItemsFileError(
                    f"line {reader.line_num}: {len(row)} fields where the header has {len(header)}; "
                    "quote a value that holds the separator"
                )
            fields = dict(zip(header, (cell.strip() for cell in row), strict=True))
            items.append(FileItem(json.dumps(fields, separators=(",", ":")), fields, reader.line_num))
        return items
    except csv.Error as exc:
        raise ItemsFileError(f"line {reader.line_num}: {exc}") from None


def _jsonl(text: str) -> list[FileItem]:
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise ItemsFileError(f"line {number}: not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ItemsFileError(f"line {number}: expected a JSON object {{...}}, one per line")
        fields = {}
        for key, field in value.items():
            if not FIELD_NAME_RE.match(key):
                raise ItemsFileError(
                    f"line {number}: key {key[:40]!r} is not a name {{item.NAME}} can use "
                    "(letters, digits, '_' and '-')"
                )
            fields[key] = field if isinstance(field, str) else json.dumps(field)
        items.append(FileItem(json.dumps(value, separators=(",", ":")), fields, number))
    return items


def missing_fields(items: list[FileItem], used: set[str]) -> str | None:
    """A message for the first item that lacks a field `{item.NAME}` uses, or None."""
    for item in items:
        if item.fields is None:
            if used:
                return f"{{item.{sorted(used)[0]}}} is used but the file has plain lines, not columns"
            return None
        absent = sorted(used - item.fields.keys())
        if absent:
            known = ", ".join(item.fields) or "none"
            name = absent[0]
            return f"line {item.line} has no field {name!r} (its fields: {known}) for {{item.{name}}}"
    return None


def fields_of(value: str | None) -> dict[str, str]:
    """`{item.NAME}` values of a stored item (a row as compact JSON); empty for a plain item."""
    if not value or not value.startswith("{"):
        return {}
    try:
        row = json.loads(value)
    except ValueError:
        return {}
    if not isinstance(row, dict):
        return {}
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in row.items()}
