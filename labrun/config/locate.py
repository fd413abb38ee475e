"""Where each key of a TOML document is: path -> (line, column), both 1-based.

tomllib parses without positions, and a validation error without a line is half an
error. This scanner walks the (already known valid) text once and records the position
of every key, array-of-tables entry and array element. Paths use the same shape as the
parsed data: ("tasks", 2, "memory"), ("defaults", "env", "HOME").
"""

from __future__ import annotations

import re
from collections.abc import Iterator

Path = tuple[str | int, ...]
Positions = dict[Path, tuple[int, int]]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPE = re.compile(r"\\(.)")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.positions: Positions = {}
        self.aot_counts: dict[Path, int] = {}
        # line starts for converting offsets to (line, column)
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def where(self, offset: int) -> tuple[int, int]:
        lo, hi = 0, len(self.line_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.line_starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1, offset - self.line_starts[lo] + 1

    def record(self, path: Path, offset: int) -> None:
        self.positions.setdefault(path, self.where(offset))

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_space(self, newlines: bool) -> None:
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            elif ch in " \t\r" or (newlines and ch == "\n"):
                self.pos += 1
            else:
                return

    def key_part(self) -> str:
        ch = self.peek()
        if ch in "\"'":
            start = self.pos
            self.skip_string()
            raw = self.text[start + 1 : self.pos - 1]
            return _ESCAPE.sub(r"\1", raw) if ch == '"' else raw
        match = _BARE_KEY.match(self.text, self.pos)
        if not match:
            raise ValueError(f"unexpected {ch!r}")
        self.pos = match.end()
        return match.group(0)

    def dotted_key(self) -> list[str]:
        parts = [self.key_part()]
        while True:
            self.skip_space(newlines=False)
            if self.peek() != ".":
                return parts
            self.pos += 1
            self.skip_space(newlines=False)
            parts.append(self.key_part())

    def skip_string(self) -> None:
        quote = self.text[self.pos]
        triple = self.text.startswith(quote * 3, self.pos)
        delim = quote * 3 if triple else quote
        self.pos += len(delim)
        while self.pos < len(self.text):
            if quote == '"' and self.text[self.pos] == "\\":
                self.pos += 2
                continue
            if self.text.startswith(delim, self.pos):
                self.pos += len(delim)
                # a multi-line string may end with up to two extra quotes
                while triple and self.peek() == quote:
                    self.pos += 1
                return
            self.pos += 1

    def value(self, path: Path) -> None:
        ch = self.peek()
        if ch in "\"'":
            self.skip_string()
        elif ch == "[":
            self.array(path)
        elif ch == "{":
            self.inline_table(path)
        else:
            while self.pos < len(self.text) and self.text[self.pos] not in ",]}\n#":
                self.pos += 1

    def array(self, path: Path) -> None:
        self.pos += 1
        index = 0
        while True:
            self.skip_space(newlines=True)
            if self.peek() in ("]", ""):
                self.pos += 1
                return
            self.record((*path, index), self.pos)
            self.value((*path, index))
            index += 1
            self.skip_space(newlines=True)
            if self.peek() == ",":
                self.pos += 1

    def inline_table(self, path: Path) -> None:
        self.pos += 1
        while True:
            self.skip_space(newlines=True)
            if self.peek() in ("}", ""):
                self.pos += 1
                return
            self.keyval(path)
            self.skip_space(newlines=True)
            if self.peek() == ",":
                self.pos += 1

    def keyval(self, table: Path) -> None:
        start = self.pos
        parts = self.dotted_key()
        full = (*table, *parts)
        for i in range(1, len(parts) + 1):
            self.record((*table, *parts[:i]), start)
        self.skip_space(newlines=False)
        if self.peek() != "=":
            raise ValueError("expected '='")
        self.pos += 1
        self.skip_space(newlines=False)
        self.value(full)

    def header(self) -> Path:
        start = self.pos
        is_aot = self.text.startswith("[[", self.pos)
        self.pos += 2 if is_aot else 1
        self.skip_space(newlines=False)
        parts: list[str | int] = list(self.dotted_key())
        self.skip_space(newlines=False)
        self.pos += 2 if is_aot else 1
        path = self._resolve(parts)
        if is_aot:
            index = self.aot_counts.get(path, 0)
            self.aot_counts[path] = index + 1
            self.record(path, start)
            path = (*path, index)
        self.record(path, start)
        return path

    def _resolve(self, parts: list[str | int]) -> Path:
        """A header [tasks.env] inside [[tasks]] refers to the latest tasks entry."""
        resolved: list[str | int] = []
        for part in parts:
            resolved.append(part)
            count = self.aot_counts.get(tuple(resolved))
            if count and len(resolved) < len(parts):
                resolved.append(count - 1)
        return tuple(resolved)

    def document(self) -> Positions:
        table: Path = ()
        while True:
            self.skip_space(newlines=True)
            if self.pos >= len(self.text):
                return self.positions
            if self.peek() == "[":
                table = self.header()
            else:
                self.keyval(table)


def locate(text: str) -> Positions:
    """Positions of every key in `text`; best effort: a scanning error yields what was found."""
    scanner = _Scanner(text)
    try:
        return scanner.document()
    except (ValueError, IndexError):
        return scanner.positions


def nearest(positions: Positions, path: Path) -> tuple[int | None, int | None]:
    """The position of `path`, or of its closest ancestor that has one."""
    for end in range(len(path), 0, -1):
        found = positions.get(path[:end])
        if found:
            return found
    return None, None


NUL_BYTE = "holds a NUL byte (\\u0000), which no command, path, name or value can carry"


def nul_bytes(value: object, path: Path) -> Iterator[Path]:
    """Where a NUL byte sits in the parsed file: in a string, or in a table's key."""
    if isinstance(value, str):
        if "\0" in value:
            yield path
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from (path,) if "\0" in key else nul_bytes(inner, (*path, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from nul_bytes(inner, (*path, i))
