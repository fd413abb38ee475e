"""Sizes ("512MiB", "1.5G", 1024) and durations ("90s", "15m", "1h30m", 3.5) for humans."""

from __future__ import annotations

import math
import re

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

MAX_TEXT = 64  # longer strings are no size or duration: refuse before any regex scans them

SIZE_HELP = 'a size such as "512MiB", "2GiB", "1.5G" or a number of bytes'
DURATION_HELP = 'a duration such as "90s", "15m", "2h", "1h30m" or a number of seconds'


def parse_size(value: object) -> int:
    """Bytes from a size; raises ValueError with a message fit for the user."""
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_HELP}, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"expected {SIZE_HELP}, got {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected {SIZE_HELP}, got {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise ValueError(f"expected {SIZE_HELP}, got a string of {len(value)} characters")
    match = _SIZE_RE.match(value)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"expected {SIZE_HELP}, got {value!r}")
    return math.ceil(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_duration(value: object) -> float:
    """Seconds from a duration; raises ValueError with a message fit for the user."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HELP}, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"expected {DURATION_HELP}, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected {DURATION_HELP}, got {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise ValueError(f"expected {DURATION_HELP}, got a string of {len(value)} characters")
    text = value.strip().lower()
    try:
        return float(text) if text else _bad_duration(value)
    except ValueError:
        pass
    total, pos = 0.0, 0
    for part in _DURATION_PART.finditer(text):
        if text[pos : part.start()].strip():
            break
        total += float(part.group(1)) * _DURATION_UNITS[part.group(2)]
        pos = part.end()
    if pos == 0 or text[pos:].strip():
        _bad_duration(value)
    return total


def _bad_duration(value: str) -> float:
    raise ValueError(f"expected {DURATION_HELP}, got {value!r}")


def format_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor:
            return f"{n / factor:.1f}{unit}"
    return f"{n}B"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
