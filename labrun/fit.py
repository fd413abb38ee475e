"""Text that fits: values shortened in the middle, table columns sized to the terminal.

Pure functions over strings; the terminal width is passed in by the caller."""

from __future__ import annotations

import json

ELLIPSIS = "…"


def shorten_middle(text: str, width: int) -> str:
    """`text` at most `width` characters, its middle replaced by `…` when it is longer.

    The middle goes because both ends carry meaning: a job's prefix and its item
    (`resize-images-for-training[12]`), a path's root and its file name."""
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    head = (width - 1 + 1) // 2
    tail = width - 1 - head
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`1 task`, `2 tasks`, `0 tasks`: a count with its noun agreeing."""
    return f"{count} {noun if count == 1 else (many or noun + 's')}"


def column_width(longest: int, header: str, rest: int, columns: int | None, maximum: int = 60) -> int:
    """The width of a table's name column: as wide as its longest value (and its header),
    at most `maximum`, and on a terminal `columns` wide no wider than what the `rest` of
    the line leaves (but never under 12: a name cut to nothing helps nobody)."""
    width = max(len(header), min(longest, maximum))
    if columns is not None:
        width = min(width, max(12, columns - rest))
    return width


def item_text(item: str | None, width: int = 40) -> str:
    """An item as a person reads it beside `train[2]`: a row of an items file as
    `lr=0.1 depth=3`, anything else as it is; shortened in the middle."""
    if not item:
        return ""
    if item.startswith("{"):
        try:
            row = json.loads(item)
        except ValueError:
            row = None
        if isinstance(row, dict):
            item = " ".join(f"{k}={v}" for k, v in row.items())
    return shorten_middle(" ".join(item.split()), width)


def task_with_item(name: str, item: str | None) -> str:
    """`train[2] (lr=0.1 depth=3)`: a task's name with its item, when the item says more
    than the index does (a range's item is its index)."""
    shown = item_text(item)
    index = name.rpartition("[")[2].rstrip("]")
    return f"{name} ({shown})" if shown and item != index else name
